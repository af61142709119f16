"""Zoo layer: the fusion model's deployment path for an extractor graph: fp16 copy and verify (graphs and engines).

``to_fp16`` converts any float32 extractor graph (the zoo's or a user's) with the normalisations and
softmax kept FP32 (``abaw_rt.graphs.precision``). ``verify_extractor`` runs a reference graph and candidate
graphs on the same inputs: per output max/mean/p99 absolute error, error relative to the output's range, and
per-item cosine similarity of the features. (Bench: ``abaw_rt.bench.extractor_bench``.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.io import atomic_write_bytes
from abaw_rt.artefacts import open_extractor_engine, open_graph
from abaw_rt.feeds import extractor_feeds
from abaw_rt.graphs.precision import graph_compute_precision


@dataclass(frozen=True)
class FeatureTolerances:
    max_rel: float  # worst |candidate - reference| / max |reference| of that output
    min_cosine: float  # worst per-item cosine similarity of candidate and reference vectors


FEATURE_TOLERANCES = {
    "fp32": FeatureTolerances(max_rel=1e-4, min_cosine=0.99999),
    "fp16": FeatureTolerances(max_rel=2e-2, min_cosine=0.999),
    # int8 (QDQ graphs, their engines): judged by the features' direction, as abaw-rt quantize's search is.
    "int8": FeatureTolerances(max_rel=0.25, min_cosine=0.98),
}


def to_fp16(src: Path, dst: Path) -> Path:
    """Write an FP16 copy of extractor graph ``src`` at ``dst`` (float32 I/O, fragile ops FP32); checked."""
    import warnings

    import onnx

    from abaw_rt.graphs.precision import convert_graph_fp16, precision_placement

    try:
        model = onnx.load(str(src))
    except Exception as exc:
        raise AbawRtError(f"ONNX '{src}': not a readable ONNX model ({exc})") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_graph_fp16(model)
    placement = precision_placement(half)
    if placement.fragile_low or not placement.fp16_math:
        raise AbawRtError(f"fp16 copy of '{src}': {placement.fragile_low[:2] or 'no fp16 math'}")
    entry = half.metadata_props.add()
    entry.key, entry.value = "abaw_rt_extractor_precision", "fp16"
    return atomic_write_bytes(Path(dst), half.SerializeToString())


def _stats(ref: np.ndarray, cand: np.ndarray, tol: FeatureTolerances) -> dict:
    ref, cand = ref.reshape(len(ref), -1).astype(np.float64), cand.reshape(len(cand), -1).astype(np.float64)
    err = np.abs(cand - ref)
    rng = max(float(np.abs(ref).max()), 1e-12)
    cos = (ref * cand).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-30)
    s = {"items": len(ref), "max_abs": float(err.max()), "mean_abs": float(err.mean()),
         "p99_abs": float(np.percentile(err, 99)), "max_rel": float(err.max() / rng),
         "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()), "failures": []}  # fmt: skip
    if not np.all(np.isfinite(cand)):
        s["failures"].append("non-finite values")
    if s["max_rel"] > tol.max_rel:
        s["failures"].append(f"max error {s['max_rel']:.3g} of the output's range > {tol.max_rel:.3g}")
    if s["cosine_min"] < tol.min_cosine:
        s["failures"].append(f"cosine similarity {s['cosine_min']:.6f} < {tol.min_cosine}")
    s["passed"] = not s["failures"]
    return s


def verify_extractor(reference: Path, candidates: Sequence[Path], batches: Sequence[int] = (1, 4, 16),
                     seed: int = 0, provider: str = "cpu", tolerances: dict | None = None,
                     engines: Sequence[Path] = ()) -> dict:  # fmt: skip
    """Compare each candidate graph (onnxruntime, ``provider``) and engine plan (TensorRT) with the reference graph
    on the same random inputs; a JSON-able report. Engines are opened first: without a CUDA GPU, AbawRtError."""
    tolerances = {**FEATURE_TOLERANCES, **(tolerances or {})}
    engine_runners = [open_extractor_engine(p, what="candidate", hint="verify its graph with --onnx") for p in engines]
    report = {"reference": str(reference), "batches": list(batches), "candidates": []}
    with open_graph(reference, provider=provider, what="reference") as ref:
        feeds = [extractor_feeds(ref.input_specs, b, seed + i) for i, b in enumerate(batches)]
        ref_out = [ref.infer(f) for f in feeds]
        runs = [(p, graph_compute_precision(p), lambda p=p: open_graph(p, provider=provider, what="candidate"))
                for p in candidates]  # fmt: skip
        runs += [(r.plan, r.precision, lambda r=r: r) for r in engine_runners]
        for path, prec, opener in runs:
            report["candidates"].append(_candidate(path, prec, opener, feeds, ref_out, tolerances[prec]))
    report["passed"] = all(c["passed"] for c in report["candidates"])
    return report


def _candidate(path: Path, prec: str, opener, feeds: list, ref_out: list, tol: FeatureTolerances) -> dict:
    """One candidate's report: its outputs on ``feeds`` against the reference's, or the error that stopped it."""
    cand = {"graph": str(path), "precision": prec, "tolerances": asdict(tol), "outputs": {}, "error": None}
    try:
        with opener() as run:
            got = [run.infer(f) for f in feeds]
    except AbawRtError as exc:
        cand["error"] = str(exc)
        got = []
    for name in ref_out[0] if got else ():
        if name not in got[0]:
            cand["outputs"][name] = {"passed": False, "failures": ["missing from the candidate"]}
            continue
        r = np.concatenate([o[name] for o in ref_out])
        c = np.concatenate([o[name] for o in got])
        cand["outputs"][name] = _stats(r, c, tol)
    cand["passed"] = cand["error"] is None and all(o["passed"] for o in cand["outputs"].values())
    return cand


def print_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def is_extractor_graph(path: Path) -> bool:
    """An ONNX file that is not an exported fusion model (no abaw-rt checkpoint header): an extractor graph."""
    from abaw_rt.artefacts import Kind, open_artefact

    return open_artefact(path).kind is Kind.onnx


def downstream_drift(reference: Path, candidate: Path, checkpoint: Path, feature: str, frames: int = 96,
                     output: str | None = None, seed: int = 0) -> dict:  # fmt: skip
    """The fusion model's drift when extractor ``feature`` runs as ``candidate`` instead of ``reference``.

    One segment of ``frames`` random inputs goes through both extractor graphs; their features fill that
    feature's columns of the fusion input (the other features: random, the same for both), and the fusion
    model (torch, the checkpoint) runs on each. Reports 1 - CCC per VA channel, EXPR argmax agreement and
    AU decision flips of the candidate's track against the reference's.
    """
    from abaw_rt.artefacts import open_artefact, open_runner
    from abaw_rt.feeds import example_feeds
    from abaw_rt.verify import ccc

    ckpt = open_artefact(checkpoint)
    cfg = ckpt.header.config
    group = next((f for f in cfg.features if f.name == feature), None)
    if group is None:
        raise AbawRtError(f"checkpoint '{checkpoint}' has no feature '{feature}' (it has {[f.name for f in cfg.features]})")
    offset = sum(f.dim for f in cfg.features[: cfg.features.index(group)] if f.modality == group.modality)
    tracks = []
    for graph in (reference, candidate):
        with open_graph(graph, what=f"extractor '{feature}'") as run:
            x = extractor_feeds(run.input_specs, frames, seed)
            name = output or run.output_specs[0].name
            feats = np.concatenate([run.infer({k: v[i : i + 16] for k, v in x.items()})[name]
                                    for i in range(0, frames, 16)])  # fmt: skip
        if feats.shape[-1] != group.dim:
            raise AbawRtError(f"'{graph}' output '{name}' has {feats.shape[-1]} features; '{feature}' is {group.dim}-d")
        feeds = example_feeds(ckpt.header, batch=1, time=frames, rng=np.random.default_rng(seed))
        feeds[group.modality][0, :, offset : offset + group.dim] = feats
        with open_runner(ckpt, "torch") as fusion:
            tracks.append(fusion.infer(feeds))
    ref, cand = tracks
    drift = {}
    for head in ref:
        r, c = ref[head][0].astype(np.float64), cand[head][0].astype(np.float64)
        if head == "va":
            drift.update({f"ccc_drift_{lab}": 1.0 - ccc(c[:, i], r[:, i]) for i, lab in enumerate(("valence", "arousal"))})
        elif head == "expr":
            drift["expr_agreement"] = float(np.mean(c.argmax(1) == r.argmax(1)))
        else:
            drift["au_flip_rate"] = float(np.mean((c >= 0) != (r >= 0)))
    return {"feature": feature, "frames": frames, "checkpoint": str(checkpoint), **drift}
