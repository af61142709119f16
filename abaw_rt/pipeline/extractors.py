"""Pipeline layer, stage 3: feature extractors: batched ONNX graphs turning face crops or audio windows into vectors.

Each extractor runs through the Runner API: its ONNX graph on onnxruntime (``abaw_rt.artefacts.open_graph``), or
the TensorRT plan the spec's ``engine`` names (``open_runner`` on an extractor engine: needs a CUDA GPU). Visual extractors take crops
of their own input size; audio extractors take windows of the 16 kHz waveform laid on the video's timeline, and
their features are stretched to the frames by time (nearest as the authors did, or linear).
"""

from __future__ import annotations

import time as _time
from typing import Callable, Sequence

import numpy as np

from abaw_rt.artefacts import open_extractor_engine, open_graph
from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.decode import AUDIO_RATE, AudioTrack
from abaw_rt.pipeline.extractor_spec import ExtractorSpec, ImageInput, PipelineSpec, Stretch, check_extractor_engine


class FeatureExtractor:
    """One ONNX extractor: loads its graph, checks it against the spec, runs batches.

    Args:
        spec: what the graph is and how to feed it.
        provider, threads: passed to the graph's runner (``abaw_rt.artefacts.open_graph``); the spec's own
            ``provider``, when set, wins over ``provider`` (the pipeline's, from --device). With the spec's
            ``engine`` neither applies: the plan runs on TensorRT (``TrtRunner``), on CUDA device 0.
    """

    def __init__(self, spec: ExtractorSpec, provider: str = "cpu", threads: int | None = None):
        self.spec = spec
        what = f"extractor '{spec.name}'"
        if spec.engine is not None:
            hint = f"remove 'engine' from the spec to run '{spec.onnx}' on onnxruntime"
            self.runner = open_extractor_engine(spec.engine, spec.onnx, what, hint)
        else:
            self.runner = open_graph(spec.onnx, spec.provider or provider, threads, what=what)
        self.image: ImageInput | None = None
        self._input = self._output = None
        self.times: list[float] = []  # seconds per batch (the runner's own timing)

    @property
    def name(self) -> str:
        return self.spec.name

    def __enter__(self) -> "FeatureExtractor":
        self.runner.activate()
        try:
            self._prepare()
        except BaseException:
            self.runner.deactivate()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.runner.deactivate()

    def _prepare(self) -> None:
        s = self.spec
        inp = self.runner.spec(s.input, "input")
        out = self.runner.spec(s.output, "output")
        self._input, self._output = inp.name, out.name
        where = f"extractor '{s.name}' ('{s.onnx}')"
        last = out.shape[-1] if out.shape else None
        if isinstance(last, int) and last != s.dim:
            raise AbawRtError(f"{where}: output '{out.name}' has {last} features per item, the spec says dim {s.dim}")
        if s.modality == "visual":
            size = s.image.size
            if len(inp.shape) != 4:
                raise AbawRtError(f"{where}: input '{inp.name}' has shape {list(inp.shape)}, expected an image batch")
            hw = inp.shape[2:4] if s.image.layout.value == "nchw" else inp.shape[1:3]
            fixed = tuple(int(d) for d in hw) if all(isinstance(d, int) for d in hw) else None
            if size is None:
                if fixed is None:
                    raise AbawRtError(
                        f"{where}: input '{inp.name}' has no fixed height and width; give input_size = [height, width]"
                    )
                size = fixed
            elif fixed is not None and fixed != size:
                raise AbawRtError(f"{where}: input_size {list(size)} but the graph's input is {list(fixed)}")
            self.image = ImageInput(size, s.image.colour, s.image.layout, s.image.scale, s.image.mean, s.image.std)
        elif len(inp.shape) != 2:
            raise AbawRtError(f"{where}: input '{inp.name}' has shape {list(inp.shape)}, expected (batch, samples)")
        elif isinstance(inp.shape[1], int) and inp.shape[1] != s.window:
            raise AbawRtError(f"{where}: input takes {inp.shape[1]} samples, the spec says window {s.window}")

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.runner.infer({self._input: x})[self._output]
        self.times.append(self.runner.last_inference_time or 0.0)
        out = np.asarray(out, dtype=np.float32).reshape(len(x), -1)
        if out.shape[1] != self.spec.dim:
            raise AbawRtError(
                f"extractor '{self.spec.name}' ('{self.spec.onnx}'): output has {out.shape[1]} features per item, "
                f"the spec says dim {self.spec.dim}"
            )
        if not np.all(np.isfinite(out)):
            raise AbawRtError(f"extractor '{self.spec.name}' ('{self.spec.onnx}'): output holds NaN or inf")
        return out

    # -- visual --------------------------------------------------------------------------------------
    def run_crops(self, crops: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB crops of this extractor's input size -> (B, dim) float32."""
        return self._run(self.image.prepare(crops))

    # -- audio ---------------------------------------------------------------------------------------
    def run_windows(self, windows: np.ndarray) -> np.ndarray:
        """(B, window) float32 waveform windows at 16 kHz -> (B, dim) float32."""
        return self._run(windows)

    def audio_features(self, track: AudioTrack | None, frame_times: np.ndarray) -> np.ndarray:
        """One feature vector per frame from the audio around each frame's timestamp -> (n, dim).

        Windows of ``window`` samples every ``hop`` samples are laid on the video's clock, centred so
        that window 0 is centred on the first frame; where the track has no audio (late start, early
        end, no track) the waveform is silence. Features map to frames by time.
        """
        s = self.spec
        t0 = float(frame_times[0])
        origin = t0 - s.window / (2 * AUDIO_RATE)
        count = audio_window_count(t0, float(frame_times[-1]), s.hop)
        length = (count - 1) * s.hop + s.window
        wave = track.on_timeline(origin, length) if track is not None else np.zeros(length, np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(wave, s.window)[:: s.hop][:count]
        feats = np.concatenate(
            [self._run(np.ascontiguousarray(windows[i : i + s.batch])) for i in range(0, count, s.batch)]
        )
        pos = (np.asarray(frame_times, np.float64) - t0) * AUDIO_RATE / s.hop  # fractional window index per frame
        return stretch_to_frames(pos, feats.__getitem__, count - 1, s.stretch)


def audio_window_count(t0: float, last: float, hop: int) -> int:
    """Audio windows laid over frame times ``t0`` .. ``last``: one spare so every frame has a right neighbour."""
    return int(np.floor((last - t0) * AUDIO_RATE / hop)) + 2


def stretch_to_frames(pos: np.ndarray, take: Callable[[np.ndarray], np.ndarray], top: int,
                      stretch: "Stretch") -> np.ndarray:
    """Window features -> one row per frame: ``pos`` is each frame's fractional window index, ``take(idx)`` returns
    the windows' features at indices ``idx`` (clipped to ``[0, top]``); nearest window, or linear between the two."""
    if stretch is Stretch.nearest:
        return take(np.clip(np.floor(pos + 0.5).astype(np.int64), 0, top))
    lo = np.clip(np.floor(pos).astype(np.int64), 0, top)
    hi = np.clip(lo + 1, 0, top)
    w = (pos - lo).clip(0, 1)[:, None].astype(np.float32)
    return (1 - w) * take(lo) + w * take(hi)


def choose_backends(spec: PipelineSpec, choices: Sequence[str] = ()) -> PipelineSpec:
    """The spec with per-extractor backends from the CLI (``--extractor-backend NAME=BACKEND``), replacing the
    spec's ``provider`` / ``engine``: BACKEND is an onnxruntime provider (cpu, cuda, tensorrt) or a TensorRT plan
    (``.plan`` / ``.engine``) built from that extractor's graph, checked as the spec's ``engine`` is.

    Raises:
        AbawRtError: a malformed choice, an extractor the spec lacks, an unknown provider, a plan that is not
            this extractor's engine.
    """
    import dataclasses
    from pathlib import Path

    from abaw_rt.runners.ort_runner import PROVIDERS

    chosen = {e.name: e for e in spec.extractors}
    for choice in choices:
        name, sep, backend = choice.partition("=")
        where = f"--extractor-backend {choice}"
        if not sep or not name or not backend:
            raise AbawRtError(f"{where}: expected NAME=PROVIDER ({', '.join(sorted(PROVIDERS))}) or NAME=PLAN")
        if name not in chosen:
            raise AbawRtError(f"{where}: spec '{spec.source}' has no extractor '{name}' (it has {sorted(chosen)})")
        if Path(backend).suffix.lower() in (".plan", ".engine"):
            plan = Path(backend).expanduser().resolve()
            if not plan.is_file():
                raise AbawRtError(f"{where}: engine '{backend}': no such file")
            engine = check_extractor_engine(plan, chosen[name].onnx, chosen[name].batch, where)
            chosen[name] = dataclasses.replace(chosen[name], engine=engine, provider=None)
        elif backend in PROVIDERS:
            chosen[name] = dataclasses.replace(chosen[name], provider=backend, engine=None)
        else:
            raise AbawRtError(f"{where}: {backend!r} is neither a provider ({', '.join(sorted(PROVIDERS))}) nor a .plan")
    return dataclasses.replace(spec, extractors=tuple(chosen[e.name] for e in spec.extractors))


def audio_coverage(track: AudioTrack | None, frame_times: np.ndarray) -> float:
    """Fraction of frames whose timestamp falls inside the decoded audio."""
    if track is None or len(frame_times) == 0:
        return 0.0
    t = np.asarray(frame_times)
    return float(np.mean((t >= track.start - 1e-3) & (t <= track.end + 1e-3)))


class CropBatcher:
    """Collects crops per extractor and runs a batch whenever one is full; results land by frame index.

    Args:
        extractors: the visual extractors.
        store: callback(name, frame_indices, features) receiving every finished batch.
        timer: callback(name, seconds) for each batch's wall time.
    """

    def __init__(self, extractors: list[FeatureExtractor], store: Callable, timer: Callable | None = None):
        self.extractors = extractors
        self.store = store
        self.timer = timer
        self._crops: dict[str, list[np.ndarray]] = {e.name: [] for e in extractors}
        self._index: dict[str, list[int]] = {e.name: [] for e in extractors}

    def add(self, name: str, index: int, crop: np.ndarray) -> None:
        self._crops[name].append(crop)
        self._index[name].append(index)
        ext = next(e for e in self.extractors if e.name == name)
        if len(self._crops[name]) >= ext.spec.batch:
            self._flush(ext)

    def _flush(self, ext: FeatureExtractor) -> None:
        crops, idx = self._crops[ext.name], self._index[ext.name]
        if not crops:
            return
        start = _time.perf_counter()
        feats = ext.run_crops(np.stack(crops))
        if self.timer:
            self.timer(ext.name, _time.perf_counter() - start)
        self.store(ext.name, np.asarray(idx), feats)
        self._crops[ext.name], self._index[ext.name] = [], []

    def flush(self) -> None:
        for ext in self.extractors:
            self._flush(ext)
