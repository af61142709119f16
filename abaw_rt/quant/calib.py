"""Quantisation layer: calibration and held-aside data for a graph, from a feature store or a .npy array.

Fusion graphs (made by ``abaw-rt export``) calibrate on **windows from a feature store** (what
``abaw-rt extract`` or ``abaw-rt make-synthetic`` writes): each video is cut with the training window code
(``abaw_rt.train.windows.training_windows``, the graph's own w and s), missing-face rows filled from the
nearest face as in training and inference, and each window is one batch of one segment at its own length
(no padding enters the activation ranges). Every ``hold_every``-th video (sorted by name, at least one) is
held aside: the search measures drift on it and never calibrates on it.

Any other graph (a feature extractor) calibrates on a ``.npy`` array whose first axis is samples and whose
other axes are the graph's only input's (e.g. (N, 3, 64, 64) preprocessed face crops); the last quarter of
the samples is held aside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import LENGTHS


@dataclass(frozen=True)
class CalibConfig:
    """How much data calibration and the drift measurement read."""

    max_calib: int = 64  # calibration batches at most (windows of a store, chunks of an array)
    max_held: int = 16  # held-aside batches at most (the search runs the graph on each of them per trial)
    hold_every: int = 4  # store: every n-th video is held aside
    chunk: int = 16  # array: samples per batch


@dataclass(frozen=True)
class CalibrationSet:
    """Feeds for calibration, feeds for measuring drift, and what they came from."""

    kind: str  # "fusion" (abaw-rt graph, windows from a store) or "extractor" (any graph, an array)
    calibration: tuple[dict[str, np.ndarray], ...]
    held_aside: tuple[dict[str, np.ndarray], ...]
    source: dict = field(default_factory=dict)  # path, videos, windows, frames: recorded in the report


def open_calibration(data: Path, graph: Path, cfg: CalibConfig = CalibConfig()) -> CalibrationSet:
    """Calibration data for ``graph``: a feature-store folder for abaw-rt fusion graphs, else a .npy file.

    Raises:
        AbawRtError: an empty store, missing extractors, feature widths other than the graph's, an array
            whose shape does not fit the graph's input, or data of the wrong kind for the graph.
    """
    from abaw_rt.graphs.metadata import PREFIX

    data = Path(data)
    props = _metadata(graph)
    if PREFIX + "header" in props:
        from abaw_rt.graphs.metadata import read_onnx_info

        if not data.is_dir():
            raise AbawRtError(f"--calib '{data}': a fusion graph calibrates on a feature-store folder (abaw-rt extract)")
        return store_calibration(data, read_onnx_info(graph).header, cfg)
    if data.suffix != ".npy" or not data.is_file():
        raise AbawRtError(f"--calib '{data}': graph '{graph}' is not an abaw-rt fusion graph, so give a .npy array of its input")
    return array_calibration(data, graph, cfg)


def _metadata(graph: Path) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(str(graph), load_external_data=False)
    except Exception as exc:
        raise AbawRtError(f"ONNX '{graph}': not a readable ONNX model ({exc})") from None
    return {p.key: p.value for p in model.metadata_props}


def store_calibration(root: Path, header, cfg: CalibConfig = CalibConfig()) -> CalibrationSet:
    """Windows of a feature store's videos, as the fusion graph's feeds (one window per batch)."""
    from abaw_rt.store import FeatureStore
    from abaw_rt.train.dataset import model_inputs

    store = FeatureStore(root)
    videos = store.videos()
    if not videos:
        raise AbawRtError(f"calibration store '{root}': no videos (fill it with 'abaw-rt extract' or 'abaw-rt make-synthetic')")
    have = store.extractors()
    model_cfg = header.config
    for f in model_cfg.features:
        got = have.get(f.name)
        if got is None:
            raise AbawRtError(f"calibration store '{root}': no extractor '{f.name}' (have {sorted(have)}); the graph needs {f.name}:{f.dim}")
        if int(got["dim"]) != f.dim:
            raise AbawRtError(f"calibration store '{root}': extractor '{f.name}' has dim {got['dim']}, the graph expects {f.dim}")
    held_videos = set(videos[:: max(cfg.hold_every, 1)]) if len(videos) > 1 else set()
    calib: list[dict] = []
    held: list[dict] = []
    names = [f.name for f in model_cfg.features]
    for video in videos:
        inputs = model_inputs(store.read(video, names).features, model_cfg)
        for k, feeds in enumerate(_window_feeds(inputs, header.window, header.stride)):
            to_held = video in held_videos if held_videos else k % max(cfg.hold_every, 1) == 0
            (held if to_held else calib).append(feeds)
    if not calib or not held:
        raise AbawRtError(f"calibration store '{root}': {len(videos)} video(s) give too few windows to calibrate and hold some aside")
    calib, held = _spread(calib, cfg.max_calib), _spread(held, cfg.max_held)
    source = {
        "path": str(root),
        "kind": "feature store",
        "videos": len(videos),
        "held_aside_videos": sorted(held_videos),
        "calibration_windows": len(calib),
        "held_aside_windows": len(held),
        "held_aside_frames": int(sum(int(f[LENGTHS].sum()) for f in held)),
    }
    return CalibrationSet("fusion", tuple(calib), tuple(held), source)


def _window_feeds(inputs: dict[str, np.ndarray], window: int, stride: int) -> Iterator[dict[str, np.ndarray]]:
    from abaw_rt.train.windows import training_windows

    frames = next(iter(inputs.values())).shape[0]
    for start, n in training_windows(frames, window, stride):
        feeds = {m: np.ascontiguousarray(x[None, start : start + n]) for m, x in inputs.items()}
        feeds[LENGTHS] = np.array([n], dtype=np.int64)
        yield feeds


def _spread(items: list, limit: int) -> list:
    """At most ``limit`` items, evenly spaced over the list (every video contributes, not just the first)."""
    if len(items) <= limit:
        return items
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in dict.fromkeys(idx.tolist())]


def array_calibration(path: Path, graph: Path, cfg: CalibConfig = CalibConfig()) -> CalibrationSet:
    """Chunks of a .npy array as feeds of the graph's only input; the last quarter is held aside."""
    from abaw_rt.runners.ort_runner import open_session

    session = open_session(Path(graph), "cpu", threads=1)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise AbawRtError(f"ONNX '{graph}': has inputs {[i.name for i in inputs]}; array calibration needs a graph with one input")
    node = inputs[0]
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise AbawRtError(f"--calib '{path}': unreadable .npy ({exc})") from None
    expected = list(node.shape)
    if arr.ndim != len(expected) or any(isinstance(d, int) and d > 0 and d != a for d, a in zip(expected[1:], arr.shape[1:])):
        raise AbawRtError(f"--calib '{path}': shape {tuple(arr.shape)}, graph input '{node.name}' expects {expected}")
    if arr.shape[0] < 2:
        raise AbawRtError(f"--calib '{path}': {arr.shape[0]} sample(s); need at least 2 (calibration and held aside)")
    arr = arr.astype(np.float32, copy=False)
    n_held = max(1, arr.shape[0] // 4)
    parts = _chunks(arr[: arr.shape[0] - n_held], cfg.chunk), _chunks(arr[arr.shape[0] - n_held :], cfg.chunk)
    calib, held = (_spread([{node.name: c} for c in p], lim) for p, lim in zip(parts, (cfg.max_calib, cfg.max_held)))
    source = {"path": str(path), "kind": "array", "shape": list(arr.shape), "held_aside_samples": n_held}
    return CalibrationSet("extractor", tuple(calib), tuple(held), source)


def _chunks(arr: np.ndarray, size: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(arr[i : i + size]) for i in range(0, arr.shape[0], max(size, 1))]


def data_reader(feeds: Sequence[dict[str, np.ndarray]]):
    """An onnxruntime ``CalibrationDataReader`` over the given feeds (what ``quantize_static`` reads)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _FeedsReader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

        def __len__(self):
            return len(feeds)

    return _FeedsReader()
