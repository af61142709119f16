"""Pipeline layer, stages 2-3 configuration: the TOML spec that describes user-supplied ONNX extractors and detector.

One file holds any number of ``[[extractor]]`` tables and at most one ``[detector]`` table; ONNX and engine
paths are relative to the spec file. Each extractor runs its ``onnx`` graph on onnxruntime (``provider``: cpu,
cuda or tensorrt; default from --device), or, with ``engine``, a TensorRT plan built from that graph
(``abaw-rt build GRAPH --batch MIN:OPT:MAX``): the sidecar must record the graph's sha256, and the two keys
are exclusive. Unknown keys are refused (a typo must not silently fall back to a
default). The README shows a complete example for the paper's extractors.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tomllib

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import MODALITIES, ModelConfig
from abaw_rt.runners.ort_runner import PROVIDERS


class ColourOrder(str, Enum):
    rgb = "rgb"
    bgr = "bgr"


class Layout(str, Enum):
    nchw = "nchw"
    nhwc = "nhwc"


class CropMode(str, Enum):
    aligned = "aligned"  # 5-point similarity alignment to the ArcFace template (Aff-Wild2's cropped_aligned)
    box = "box"  # square crop around the detected box, plus a margin


class DetectorDecoder(str, Enum):
    none = "none"  # the graph outputs decoded boxes and landmarks itself (the contract below)
    retinaface = "retinaface"  # raw RetinaFace heads loc/conf/landmarks, decoded in numpy (abaw_rt.pipeline.retinaface)


class Canvas(str, Enum):
    fixed = "fixed"  # every frame letterboxed into the whole input_size (graphs with a fixed input shape)
    fit = "fit"  # the smallest canvas of the frame's aspect inside input_size, sides rounded up to 32: less padding


class Stretch(str, Enum):
    nearest = "nearest"  # the authors' choice: each frame takes the audio feature nearest in time
    linear = "linear"  # linear interpolation between the two nearest audio features


@dataclass(frozen=True)
class ImageInput:
    """How an image graph wants its pixels: value = (pixel * scale - mean) / std, per channel."""

    size: tuple[int, int] | None  # (height, width); None: read from the graph's fixed input shape
    colour: ColourOrder = ColourOrder.rgb  # channel order the graph expects
    layout: Layout = Layout.nchw  # tensor layout the graph expects
    scale: float = 1.0 / 255.0  # applied to 0..255 pixels first
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # subtracted after scaling, per channel (in `colour` order)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # divided after subtracting, per channel

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB -> the graph's float32 input."""
        x = images[..., ::-1] if self.colour is ColourOrder.bgr else images
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        gain, offset = np.float32(self.scale) / std, -mean / std  # (pixel * scale - mean) / std in one pass
        if self.layout is Layout.nchw:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32)  # transpose the bytes, not floats
            gain, offset = gain[:, None, None], offset[:, None, None]
        else:
            x = x.astype(np.float32)
        x *= gain
        x += offset
        return x


@dataclass(frozen=True)
class ExtractorSpec:
    """One feature extractor: an ONNX graph turning a face crop (visual) or an audio window into one vector."""

    name: str  # matches a feature name of the checkpoint's config (e.g. "eff")
    modality: str  # "visual" or "audio"
    onnx: Path  # the graph (absolute, resolved against the spec file's folder)
    dim: int  # length of the output vector
    input: str | None = None  # graph input name; None: the graph's only input
    output: str | None = None  # graph output name; None: the graph's only output
    batch: int = 32  # crops or audio windows per call
    image: ImageInput | None = None  # visual: pixel preparation and input size
    crop: CropMode = CropMode.aligned  # visual: how the face is cut out
    margin: float = 0.0  # visual, crop = "box": extra side length around the box, as a fraction
    window: int = 16000  # audio: samples per window at 16 kHz
    hop: int = 640  # audio: samples between windows (640 = 40 ms = 25 features/s)
    stretch: Stretch = Stretch.nearest  # audio: how window features map onto video frames (by time)
    provider: str | None = None  # onnxruntime provider for this graph (cpu, cuda, tensorrt); None: --device's
    engine: Path | None = None  # a TensorRT plan built from ``onnx``, run instead of onnxruntime (needs a GPU)


@dataclass(frozen=True)
class DetectorSpec:
    """A face detector graph: image in, decoded boxes and five landmarks out (README, "Face detector")."""

    onnx: Path  # the graph
    image: ImageInput = ImageInput(size=None, scale=1.0 / 255.0)  # frames are letterboxed to image.size
    input: str | None = None  # graph input name; None: the graph's only input
    boxes_output: str = "boxes"  # (1, K, 5): x1, y1, x2, y2, score in input pixels
    landmarks_output: str | None = "landmarks"  # (1, K, 10): eyes, nose, mouth corners (x, y); None: box only
    score_threshold: float = 0.5  # detections below are dropped
    nms_iou: float = 0.4  # overlapping detections above this IoU are merged (keeps the best)
    decoder: DetectorDecoder = DetectorDecoder.none  # who turns the graph's outputs into boxes
    canvas: Canvas = Canvas.fixed  # "fit": the letterbox canvas shrinks to the frame's aspect (graphs of any H, W)


@dataclass(frozen=True)
class PipelineSpec:
    """A parsed spec file: the extractors by name and, optionally, the detector."""

    source: Path
    extractors: tuple[ExtractorSpec, ...]
    detector: DetectorSpec | None = None

    def get(self, name: str) -> ExtractorSpec | None:
        return next((e for e in self.extractors if e.name == name), None)

    def for_model(self, cfg: ModelConfig) -> tuple[ExtractorSpec, ...]:
        """The extractors a model needs, in its feature order; AbawRtError on a missing one or a mismatch."""
        check_model_features(cfg, self)
        return tuple(self.get(f.name) for f in cfg.features)


# -- parsing ------------------------------------------------------------------------------------------
_IMAGE_KEYS = {"input_size", "colour", "layout", "scale", "mean", "std"}
_COMMON = {"name", "modality", "onnx", "dim", "input", "output", "batch", "provider", "engine"}
_VISUAL = _COMMON | _IMAGE_KEYS | {"crop", "margin"}
_AUDIO = _COMMON | {"window", "hop", "stretch"}
_DETECTOR = _IMAGE_KEYS | {
    "onnx", "input", "boxes_output", "landmarks_output", "score_threshold", "nms_iou", "decoder", "canvas"
}


def load_spec(path: Path) -> PipelineSpec:
    """Read and check a spec file.

    Raises:
        AbawRtError: unreadable TOML, unknown or ill-typed keys, duplicate names, missing ONNX files.
    """
    path = Path(path)
    if not path.is_file():
        raise AbawRtError(f"extractor spec '{path}': no such file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AbawRtError(f"extractor spec '{path}': not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"extractor", "detector"})
    if unknown:
        raise AbawRtError(f"extractor spec '{path}': unknown table(s) {unknown}; expected [[extractor]] and [detector]")
    tables = data.get("extractor", [])
    if not isinstance(tables, list):
        raise AbawRtError(f"extractor spec '{path}': 'extractor' must be an array of tables ([[extractor]])")
    extractors = tuple(_extractor(t, path, i) for i, t in enumerate(tables))
    names = [e.name for e in extractors]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AbawRtError(f"extractor spec '{path}': duplicate extractor name(s) {dupes}")
    det = data.get("detector")
    if det is not None and not isinstance(det, dict):
        raise AbawRtError(f"extractor spec '{path}': 'detector' must be a table ([detector])")
    detector = _detector(det, path) if det is not None else None
    if not extractors and detector is None:
        raise AbawRtError(f"extractor spec '{path}': no [[extractor]] and no [detector] table")
    return PipelineSpec(source=path, extractors=extractors, detector=detector)


def default_detector_spec() -> DetectorSpec:
    """The built-in detector (RetinaFace, decoded in numpy): the [detector] table of the default spec."""
    from abaw_rt import defaults

    return load_spec(defaults.spec_path()).detector


def load_detector(path: Path) -> DetectorSpec:
    """A detector from ``--detector``: an ``.onnx`` file (default contract) or a spec file with a [detector] table."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise AbawRtError(f"detector '{path}': no such file")
        return DetectorSpec(onnx=path.resolve())
    spec = load_spec(path)
    if spec.detector is None:
        raise AbawRtError(f"detector spec '{path}': has no [detector] table")
    return spec.detector


def check_model_features(cfg: ModelConfig, spec: PipelineSpec, model_name: str = "the model") -> None:
    """Every feature the model needs has an extractor of the same modality and dimension."""
    for f in cfg.features:
        e = spec.get(f.name)
        if e is None:
            raise AbawRtError(
                f"{model_name} needs feature '{f.name}' ({f.modality}, dim {f.dim}) but extractor spec "
                f"'{spec.source}' has no extractor of that name (it has {[x.name for x in spec.extractors]})"
            )
        if e.modality != f.modality or e.dim != f.dim:
            raise AbawRtError(
                f"extractor '{f.name}' in '{spec.source}': {e.modality}, dim {e.dim}; "
                f"{model_name} needs {f.modality}, dim {f.dim}"
            )


def _where(path: Path, i: int | None) -> str:
    return f"extractor spec '{path}'" + (f", extractor #{i + 1}" if i is not None else ", [detector]")


def _get(t: Mapping[str, Any], key: str, kind, where: str, default=None, required: bool = False):
    if key not in t:
        if required:
            raise AbawRtError(f"{where}: missing '{key}'")
        return default
    v = t[key]
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v, ok = float(v), True
    if not ok:
        raise AbawRtError(f"{where}: '{key}' = {v!r}, expected {getattr(kind, '__name__', kind)}")
    return v


def _enum(t, key, enum, where, default):
    v = t.get(key, default.value)
    try:
        return enum(v)
    except ValueError:
        raise AbawRtError(f"{where}: '{key}' = {v!r}, expected one of {[e.value for e in enum]}") from None


def _onnx_path(t, spec_path: Path, where: str) -> Path:
    rel = _get(t, "onnx", str, where, required=True)
    p = Path(rel).expanduser()
    p = p if p.is_absolute() else (spec_path.parent / p)
    if not p.is_file():
        raise AbawRtError(f"{where}: onnx '{rel}' not found (looked at '{p}')")
    return p.resolve()


def _engine_path(t, spec_path: Path, where: str, onnx: Path, provider: str | None) -> Path | None:
    """The extractor's engine plan: beside the spec, an extractor engine, built from ``onnx`` (sha256 in its sidecar).
    Read without a GPU (the sidecar only); whether one exists is checked when the extractor is opened."""
    rel = _get(t, "engine", str, where)
    if not rel:
        return None
    if provider is not None:
        raise AbawRtError(
            f"{where}: 'engine' = {rel!r} and 'provider' = {provider!r} conflict: an engine plan runs on TensorRT "
            "itself and 'provider' picks onnxruntime's; keep one"
        )
    p = Path(rel).expanduser()
    p = (p if p.is_absolute() else spec_path.parent / p).resolve()
    if not p.is_file():
        raise AbawRtError(f"{where}: engine '{rel}' not found (looked at '{p}')")
    return check_extractor_engine(p, onnx, _get(t, "batch", int, where, 32), where)


def check_extractor_engine(plan: Path, onnx: Path, batch: int, where: str) -> Path:
    """``plan`` is an extractor engine built from ``onnx`` whose profile takes ``batch``; read without a GPU."""
    from abaw_rt.artefacts import Kind, check_engine_graph, open_artefact

    try:
        engine = open_artefact(plan, Kind.extractor_engine)  # no sidecar, or a fusion model's engine: refused
    except AbawRtError as exc:
        raise AbawRtError(f"{where}: {exc}") from None
    check_engine_graph(engine, onnx, where)
    if batch_max(engine) < batch:
        raise AbawRtError(
            f"{where}: batch {batch} is above engine '{plan.name}''s largest batch {batch_max(engine)}; "
            "lower 'batch' or rebuild it with --batch MIN:OPT:MAX covering it"
        )
    return plan


def batch_max(engine) -> int:
    """The largest batch an extractor engine's profiles accept."""
    return max(p.batch.max for p in engine.detail.profiles)


def _image(t, where: str, default_scale: float) -> ImageInput:
    size = t.get("input_size")
    if size is not None:
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 8 for s in size)
        ):
            raise AbawRtError(f"{where}: 'input_size' = {size!r}, expected [height, width] integers >= 8")
        size = (size[0], size[1])
    return ImageInput(
        size=size,
        colour=_enum(t, "colour", ColourOrder, where, ColourOrder.rgb),
        layout=_enum(t, "layout", Layout, where, Layout.nchw),
        scale=_get(t, "scale", float, where, default_scale),
        mean=_triple(t, "mean", where, 0.0),
        std=_triple(t, "std", where, 1.0, positive=True),
    )


def _triple(t, key, where, default: float, positive: bool = False) -> tuple[float, float, float]:
    v = t.get(key, [default] * 3)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v] * 3
    if (
        not isinstance(v, list)
        or len(v) != 3
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    ):
        raise AbawRtError(f"{where}: '{key}' = {v!r}, expected a number or a list of 3 numbers")
    if positive and any(x <= 0 for x in v):
        raise AbawRtError(f"{where}: '{key}' = {v!r}, every value must be > 0")
    return tuple(float(x) for x in v)


def _extractor(t, spec_path: Path, i: int) -> ExtractorSpec:
    where = _where(spec_path, i)
    if not isinstance(t, dict):
        raise AbawRtError(f"{where}: expected a table")
    name = _get(t, "name", str, where, required=True)
    where = f"extractor spec '{spec_path}', extractor '{name}'"
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise AbawRtError(f"{where}: name must be a plain word (it names feature files)")
    modality = _get(t, "modality", str, where, required=True)
    if modality not in MODALITIES:
        raise AbawRtError(f"{where}: modality {modality!r}, expected one of {list(MODALITIES)}")
    allowed = _VISUAL if modality == "visual" else _AUDIO
    unknown = sorted(set(t) - allowed)
    if unknown:
        raise AbawRtError(f"{where}: unknown key(s) {unknown} for a {modality} extractor (allowed: {sorted(allowed)})")
    dim = _get(t, "dim", int, where, required=True)
    batch = _get(t, "batch", int, where, 32)
    if dim < 1 or batch < 1:
        raise AbawRtError(f"{where}: 'dim' and 'batch' must be >= 1 (got {dim}, {batch})")
    provider = _get(t, "provider", str, where) or None
    if provider is not None and provider not in PROVIDERS:
        raise AbawRtError(f"{where}: provider {provider!r}, expected one of {sorted(PROVIDERS)}")
    onnx = _onnx_path(t, spec_path, where)
    common = dict(
        name=name,
        modality=modality,
        onnx=onnx,
        dim=dim,
        input=_get(t, "input", str, where) or None,
        output=_get(t, "output", str, where) or None,
        batch=batch,
        provider=provider,
        engine=_engine_path(t, spec_path, where, onnx, provider),
    )
    if modality == "visual":
        image = _image(t, where, 1.0 / 255.0)
        margin = _get(t, "margin", float, where, 0.0)
        if not 0.0 <= margin <= 2.0:
            raise AbawRtError(f"{where}: 'margin' = {margin}, expected 0..2")
        return ExtractorSpec(
            **common, image=image, crop=_enum(t, "crop", CropMode, where, CropMode.aligned), margin=margin
        )
    window = _get(t, "window", int, where, 16000)
    hop = _get(t, "hop", int, where, 640)
    if window < 1 or hop < 1:
        raise AbawRtError(f"{where}: 'window' and 'hop' must be >= 1 sample (got {window}, {hop})")
    return ExtractorSpec(**common, window=window, hop=hop, stretch=_enum(t, "stretch", Stretch, where, Stretch.nearest))


def _detector(t, spec_path: Path) -> DetectorSpec:
    where = _where(spec_path, None)
    unknown = sorted(set(t) - _DETECTOR)
    if unknown:
        raise AbawRtError(f"{where}: unknown key(s) {unknown} (allowed: {sorted(_DETECTOR)})")
    thr = _get(t, "score_threshold", float, where, 0.5)
    iou = _get(t, "nms_iou", float, where, 0.4)
    if not (0.0 <= thr <= 1.0 and 0.0 < iou <= 1.0):
        raise AbawRtError(f"{where}: score_threshold must lie in 0..1 and nms_iou in (0, 1] (got {thr}, {iou})")
    lm = _get(t, "landmarks_output", str, where, "landmarks")
    return DetectorSpec(
        onnx=_onnx_path(t, spec_path, where),
        image=_image(t, where, 1.0 / 255.0),
        input=_get(t, "input", str, where) or None,
        boxes_output=_get(t, "boxes_output", str, where, "boxes"),
        landmarks_output=lm or None,
        score_threshold=thr,
        nms_iou=iou,
        decoder=_enum(t, "decoder", DetectorDecoder, where, DetectorDecoder.none),
        canvas=_enum(t, "canvas", Canvas, where, Canvas.fixed),
    )
