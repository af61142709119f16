"""Pipeline layer, stages 4-5 for a whole source: windows through the fusion runner, stitching, decisions."""

from __future__ import annotations

import numpy as np

from abaw_rt.pipeline.features import VideoFeatures


def model_inputs(model_cfg, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{modality: (n, D)} the fusion model's inputs: its features of that modality side by side, in its order."""
    return {
        m: np.concatenate([features[f.name] for f in model_cfg.features if f.modality == m], axis=1)
        for m in model_cfg.modalities
    }


def predict_windows(fusion, model_cfg, vf: VideoFeatures, window: int, stride: int, config):
    """Windows of the source through ``fusion``, merged per frame; returns (merged, decisions, windows run).

    ``vf.features`` is emptied once copied into the model's inputs (hundreds of MB for a long video).
    """
    from abaw_rt.pipeline.segments import plan_segments, run_segments
    from abaw_rt.pipeline.stitch import Stitcher, decide, to_probabilities

    times = vf.times
    inputs = model_inputs(model_cfg, vf.features)
    vf.features.clear()
    plan = plan_segments(vf.frames, window, stride)
    widths = {s.name: s.shape[-1] for s in fusion.output_specs}
    stitcher = Stitcher(vf.frames, widths, config.merge)
    for seg, out in run_segments(
        fusion, inputs, plan, config.segment_batch, on_batch=lambda s, k: times.add("fusion", s, k)
    ):
        with times.time("stitch"):
            stitcher.add(seg.start, {h: to_probabilities(h, v) for h, v in out.items()})
    with times.time("stitch"):
        merged = stitcher.result()
        decisions = {h: decide(h, v) for h, v in merged.items()}
    return merged, decisions, len(plan)
