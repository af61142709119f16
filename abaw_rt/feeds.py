"""Tensor layer: example feeds for a model's interface (verify, export checks, benchmarks, tests)."""

from __future__ import annotations

import numpy as np

from abaw_rt.checkpoint import CheckpointHeader
from abaw_rt.model.config import LENGTHS


def padded_lengths(batch: int, time: int) -> np.ndarray:
    """Segment lengths for a padded batch: the first full, the rest shorter (down to 1)."""
    pattern = [time, max(1, time // 2), 1, max(1, time - 1), max(1, (2 * time) // 3)]
    return np.array([pattern[i % len(pattern)] for i in range(batch)], dtype=np.int64)


def example_feeds(
    header: CheckpointHeader,
    batch: int,
    time: int,
    rng: np.random.Generator | None = None,
    padded: bool = False,
) -> dict[str, np.ndarray]:
    """Random raw features drawn around the checkpoint's normalisation statistics, plus ``lengths``.

    Where the statistics are in-graph (an ONNX header), features are standard normal.
    ``padded`` gives segments of different lengths in one batch; padding frames hold random values,
    which must not change any real frame's output.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    cfg = header.config
    stats = header.normalization_arrays() if header.normalization is not None else {}
    feeds = {}
    for m in cfg.modalities:
        x = rng.standard_normal((batch, time, cfg.modality_dim(m))).astype(np.float32)
        if m in stats:
            mean, std = stats[m]
            x = x * std + mean
        feeds[m] = x.astype(np.float32)
    feeds[LENGTHS] = padded_lengths(batch, time) if padded else np.full((batch,), time, dtype=np.int64)
    return feeds


def extractor_feeds(input_specs, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for a one-input extractor graph: normalised-looking pixels (B, 3, H, W), or 16 kHz
    waveform windows (B, samples) with std 0.1. Every axis but the batch must be fixed."""
    from abaw_rt.errors import AbawRtError

    if len(input_specs) != 1:
        raise AbawRtError(f"extractor graph: has inputs {[s.name for s in input_specs]}, expected one")
    (spec,) = input_specs
    if any(not isinstance(d, int) for d in spec.shape[1:]):
        raise AbawRtError(f"extractor input '{spec.name}' has symbolic axes {list(spec.shape)}; need fixed sizes")
    shape = [batch, *spec.shape[1:]]
    scale = 0.1 if len(shape) == 2 else 1.0
    return {spec.name: (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)}
