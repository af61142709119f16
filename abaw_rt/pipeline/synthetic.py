"""Pipeline layer, test media: generated videos with drawn faces and tiny ONNX detector/extractor graphs.

Used by the tests and ``benchmarks/bench_pipeline.py`` (nothing large is committed, nothing is
downloaded). The graphs are built with ``onnx.helper`` and follow the pipeline's contracts:

* ``blob_detector``: the bounding box of pixels brighter than a threshold (a drawn face on a dark
  background), with five landmarks placed by the ArcFace template; score 0 when nothing is bright.
* ``fixed_detector``: constant boxes and landmarks (several faces, for the face-choice tests).
* ``linear_extractor``: visual: mean colour of the crop times a fixed matrix; audio: mean, mean |x|
  and RMS of the window times a fixed matrix. Cheap and deterministic, and it reacts to its input.
"""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from abaw_rt.errors import require_module

Box = tuple[float, float, float, float]
OPSET = 17
_TEMPLATE_FRACTIONS = (
    np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]])
    / 112.0
)


# -- media ---------------------------------------------------------------------------------------------
def draw_face(img: np.ndarray, box: Box, tone: int = 225) -> None:
    """Draw a bright elliptical face with dark eyes and mouth into an (H, W, 3) uint8 image, in place."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = box
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, max((x2 - x1) / 2, 1), max((y2 - y1) / 2, 1)
    side = max(x2 - x1, y2 - y1)
    # work on the box's own pixels only (drawing over the whole frame is slow for long test videos)
    top, left = max(int(np.floor(cy - ry)), 0), max(int(np.floor(cx - rx)), 0)
    bottom, right = min(int(np.ceil(cy + ry)) + 1, h), min(int(np.ceil(cx + rx)) + 1, w)
    if bottom <= top or right <= left:
        return
    yy, xx = np.mgrid[top:bottom, left:right]
    sub = img[top:bottom, left:right]
    sub[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0] = (tone, int(tone * 0.8), int(tone * 0.65))
    for fx, fy in _TEMPLATE_FRACTIONS[[0, 1]]:
        px, py = cx + (fx - 0.5) * side, cy + (fy - 0.5) * side
        sub[(xx - px) ** 2 + (yy - py) ** 2 <= (side * 0.05) ** 2] = (40, 30, 30)
    (mx1, my), (mx2, _) = _TEMPLATE_FRACTIONS[3], _TEMPLATE_FRACTIONS[4]
    mask = (
        (np.abs(yy - (cy + (my - 0.5) * side)) <= side * 0.03)
        & (xx >= cx + (mx1 - 0.5) * side)
        & (xx <= cx + (mx2 - 0.5) * side)
    )
    sub[mask] = (120, 40, 40)


def moving_face(width: int, height: int, frames: int, size: float = 0.45) -> Callable[[int], list[Box]]:
    """A face of ``size`` x frame height drifting left to right and back."""
    side = size * height

    def boxes(i: int) -> list[Box]:
        phase = 0.5 - 0.5 * np.cos(2 * np.pi * i / max(frames, 2))
        x1 = 0.1 * width + phase * (0.8 * width - side)
        y1 = (height - side) / 2
        return [(x1, y1, x1 + side, y1 + side)]

    return boxes


def write_video(
    path: Path,
    frames: int = 40,
    fps: float = 25.0,
    size: tuple[int, int] = (160, 120),
    faces: Callable[[int], Sequence[Box]] | None = None,
    audio: bool = True,
    audio_rate: int = 44100,
    audio_start: float = 0.0,
    audio_seconds: float | None = None,
    vfr: bool = False,
    codec: str = "libx264",
    crf: int = 23,
    texture: bool = False,
    preset: str = "ultrafast",
) -> Path:
    """Write a test video with PyAV: drawn faces on a dark background, and a stereo tone whose loudness varies.

    Args:
        path: output file (.mp4, .mkv, ...).
        frames, fps, size: frame count, nominal rate and (width, height).
        faces: frame index -> boxes to draw, (x1, y1, x2, y2) or with a fifth value, the skin tone 0..255
            (default: one face moving across); return [] for no face.
        audio: add an AAC audio track.
        audio_rate: its sample rate (resampled to 16 kHz mono by the pipeline).
        audio_start, audio_seconds: where the audio starts on the video's clock, and how long it lasts
            (default: the video's length); a late or short track tests alignment by timestamps.
        vfr: variable frame rate: every other frame lasts two frame periods.
        preset: libx264 speed preset (ultrafast: quick to write; slower presets use CABAC, B-frames and
            deblocking, which cost the decoder what real footage costs).
        texture: a panning textured background with a little noise, so that the clip costs about what a
            real video costs to decode (a flat background decodes several times faster than real footage).
    """
    av = require_module("av", "video")
    width, height = size
    faces = faces or moving_face(width, height, frames)
    tb = fractions.Fraction(1, 90000)
    with av.open(str(path), "w") as c:
        v = c.add_stream(codec, rate=int(round(fps)))
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.time_base = tb
        if codec == "libx264":
            v.options = {"crf": str(crf), "preset": preset}
        a = c.add_stream("aac", rate=audio_rate, layout="stereo") if audio else None
        t = 0.0
        background = _Background(width, height, texture)
        for i in range(frames):
            img = background.frame(i)
            for box in faces(i):  # (x1, y1, x2, y2) or (x1, y1, x2, y2, tone)
                tone = box[4] if len(box) > 4 else int(200 + 50 * (0.5 + 0.5 * np.sin(i / 7.0)))
                draw_face(img, box[:4], tone=tone)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = int(round(t / tb))
            vf.time_base = tb
            for p in v.encode(vf):
                c.mux(p)
            t += (2.0 if vfr and i % 2 else 1.0) / fps
        for p in v.encode():
            c.mux(p)
        if a is not None:
            _write_tone(av, c, a, audio_rate, audio_start, t - audio_start if audio_seconds is None else audio_seconds)
    return Path(path)


class _Background:
    """The frames' backdrop: a dark vertical gradient, or a panning blotchy texture with a little noise per frame."""

    def __init__(self, width: int, height: int, texture: bool):
        self.width, self.height, self.texture = width, height, texture
        self.gradient = np.linspace(0, 1, height)[:, None, None]
        self.rng = np.random.default_rng(0)
        if texture:  # dark blotchy texture (below the blob detector's threshold), twice as wide to pan across
            coarse = self.rng.integers(0, 90, (height // 8 + 1, width // 4 + 1, 3), dtype=np.uint8)
            backdrop = np.repeat(np.repeat(coarse, 8, 0), 8, 1)[:height, : 2 * width]
            noise = self.rng.integers(0, 40, backdrop.shape)
            self.backdrop = ((backdrop.astype(np.uint16) + noise) // 1).clip(0, 120).astype(np.uint8)

    def frame(self, i: int) -> np.ndarray:
        img = np.empty((self.height, self.width, 3), dtype=np.uint8)
        if self.texture:
            x0 = int(i * 2) % self.width
            img[:] = self.backdrop[:, x0 : x0 + self.width]
            img += self.rng.integers(0, 24, img.shape, dtype=np.uint8)
        else:
            img[:] = (20 + 20 * self.gradient).astype(np.uint8)
        return img


def _write_tone(av, container, stream, rate: int, start_s: float, seconds: float) -> None:
    """A 440 Hz stereo tone whose loudness varies at 0.7 Hz, ``seconds`` long from ``start_s`` on the video's clock."""
    n = max(int(seconds * rate), 0)
    k = np.arange(n) / rate
    sig = (0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * k)) * np.sin(2 * np.pi * 440 * k)).astype(np.float32)
    start = int(round(start_s * rate))
    for s in range(0, n, 1024):
        chunk = sig[s : s + 1024]
        af = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
        af.sample_rate = rate
        af.pts = start + s
        af.time_base = fractions.Fraction(1, rate)
        for p in stream.encode(af):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)


# -- graphs --------------------------------------------------------------------------------------------
def _save(model, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def _model(nodes, inputs, outputs, initializers, name):
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="abaw-rt synthetic")


def blob_detector(path: Path, size: tuple[int, int] = (96, 128), threshold: float = 0.6) -> Path:
    """A detector graph that boxes the pixels brighter than ``threshold`` (0..1): image (1, 3, H, W) in 0..1."""
    require_module("onnx", "dev")
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    h, w = size
    c = lambda name, arr: numpy_helper.from_array(np.asarray(arr), name)  # noqa: E731
    inits = [
        c("thr", np.float32(threshold)),
        c("one_i", np.array([1], np.int64)),
        c("w_minus_1", np.array([w - 1], np.int64)),
        c("h_minus_1", np.array([h - 1], np.int64)),
        c("rev_start", np.array([-1], np.int64)),
        c("rev_end", np.array([-(2**62)], np.int64)),
        c("ax1", np.array([1], np.int64)),
        c("rev_step", np.array([-1], np.int64)),
        c("fx", _TEMPLATE_FRACTIONS[:, 0].astype(np.float32)),
        c("fy", _TEMPLATE_FRACTIONS[:, 1].astype(np.float32)),
        c("shape_b", np.array([1, 1, 5], np.int64)),
        c("shape_l", np.array([1, 1, 10], np.int64)),
        c("one_f", np.array([1.0], np.float32)),
    ]
    n = helper.make_node
    nodes = [
        n("ReduceMax", ["image"], ["chmax"], axes=[1], keepdims=0),  # (1, H, W)
        n("Greater", ["chmax", "thr"], ["maskb"]),
        n("Cast", ["maskb"], ["mask"], to=T.FLOAT),
        n("ReduceMax", ["mask"], ["col"], axes=[1], keepdims=0),  # (1, W)
        n("ReduceMax", ["mask"], ["row"], axes=[2], keepdims=0),  # (1, H)
        n("ReduceMax", ["col"], ["score"], axes=[1], keepdims=0),  # (1,)
    ]
    for axis, vec, last in (("x", "col", "w_minus_1"), ("y", "row", "h_minus_1")):
        nodes += [
            n("ArgMax", [vec], [f"{axis}1i"], axis=1, keepdims=0),
            n("Slice", [vec, "rev_start", "rev_end", "ax1", "rev_step"], [f"{vec}_rev"]),
            n("ArgMax", [f"{vec}_rev"], [f"{axis}2r"], axis=1, keepdims=0),
            n("Sub", [last, f"{axis}2r"], [f"{axis}2i"]),
            n("Cast", [f"{axis}1i"], [f"{axis}1"], to=T.FLOAT),
            n("Cast", [f"{axis}2i"], [f"{axis}2m"], to=T.FLOAT),
            n("Add", [f"{axis}2m", "one_f"], [f"{axis}2"]),  # exclusive right/bottom edge
            n("Sub", [f"{axis}2", f"{axis}1"], [f"{axis}span"]),
            n("Mul", [f"f{axis}", f"{axis}span"], [f"{axis}off"]),
            n("Add", [f"{axis}off", f"{axis}1"], [f"l{axis}"]),  # (5,)
            n("Unsqueeze", [f"l{axis}", "one_i"], [f"l{axis}c"]),  # (5, 1)
        ]
    nodes += [
        n("Concat", ["x1", "y1", "x2", "y2", "score"], ["box5"], axis=0),
        n("Reshape", ["box5", "shape_b"], ["boxes"]),
        n("Concat", ["lxc", "lyc"], ["lm52"], axis=1),
        n("Reshape", ["lm52", "shape_l"], ["landmarks"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("image", T.FLOAT, [1, 3, h, w])],
        [
            helper.make_tensor_value_info("boxes", T.FLOAT, [1, 1, 5]),
            helper.make_tensor_value_info("landmarks", T.FLOAT, [1, 1, 10]),
        ],
        inits,
        "blob_detector",
    )
    return _save(model, path)


def fixed_detector(
    path: Path, boxes: Sequence[tuple[float, float, float, float, float]], size: tuple[int, int] = (96, 128)
) -> Path:
    """A detector graph that always returns ``boxes`` (x1, y1, x2, y2, score in input pixels), template landmarks."""
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    h, w = size
    b = np.asarray(boxes, np.float32).reshape(1, -1, 5)
    lms = []
    for x1, y1, x2, y2, _ in b[0]:
        lms.append(
            np.stack([x1 + _TEMPLATE_FRACTIONS[:, 0] * (x2 - x1), y1 + _TEMPLATE_FRACTIONS[:, 1] * (y2 - y1)], 1)
        )
    lm = np.asarray(lms, np.float32).reshape(1, -1, 10)
    k = b.shape[1]
    n = helper.make_node
    nodes = [  # touch the input so the graph has a data dependency on it: gate = mean(image) * 0 + 1
        n("ReduceMean", ["image"], ["m"], keepdims=0),
        n("Mul", ["m", "zero"], ["m0"]),
        n("Add", ["m0", "one"], ["gate"]),
        n("Mul", ["b", "gate"], ["boxes"]),
        n("Mul", ["l", "gate"], ["landmarks"]),
    ]
    inits = [
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(lm, "l"),
        numpy_helper.from_array(np.float32(0), "zero"),
        numpy_helper.from_array(np.float32(1), "one"),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("image", T.FLOAT, [1, 3, h, w])],
        [
            helper.make_tensor_value_info("boxes", T.FLOAT, [1, k, 5]),
            helper.make_tensor_value_info("landmarks", T.FLOAT, [1, k, 10]),
        ],
        inits,
        "fixed_detector",
    )
    return _save(model, path)


def linear_extractor(
    path: Path, modality: str, dim: int, size: tuple[int, int] = (48, 48), window: int = 1600, seed: int = 0
) -> Path:
    """A tiny extractor graph with a dynamic batch axis: visual 'image' (B, 3, H, W), audio 'audio' (B, window)."""
    from onnx import TensorProto as T
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    n = helper.make_node
    if modality == "visual":
        h, w = size
        inp = helper.make_tensor_value_info("image", T.FLOAT, ["batch", 3, h, w])
        nodes = [n("ReduceMean", ["image"], ["stats"], axes=[2, 3], keepdims=0)]  # (B, 3)
    else:
        inp = helper.make_tensor_value_info("audio", T.FLOAT, ["batch", window])
        nodes = [
            n("ReduceMean", ["audio"], ["mean"], axes=[1], keepdims=1),
            n("Abs", ["audio"], ["absx"]),
            n("ReduceMean", ["absx"], ["mabs"], axes=[1], keepdims=1),
            n("Mul", ["audio", "audio"], ["sq"]),
            n("ReduceMean", ["sq"], ["msq"], axes=[1], keepdims=1),
            n("Sqrt", ["msq"], ["rms"]),
            n("Concat", ["mean", "mabs", "rms"], ["stats"], axis=1),  # (B, 3)
        ]
    weight = rng.standard_normal((3, dim)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(dim)).astype(np.float32)
    nodes += [n("MatMul", ["stats", "w"], ["xw"]), n("Add", ["xw", "b"], ["features"])]
    model = _model(
        nodes,
        [inp],
        [helper.make_tensor_value_info("features", T.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
        f"linear_{modality}",
    )
    return _save(model, path)


# -- spec and model --------------------------------------------------------------------------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_spec(path: Path, extractors: Sequence[dict], detector: dict | None = None) -> Path:
    """Write an extractor spec file (TOML) from plain dicts."""
    lines = []
    if detector is not None:
        lines.append("[detector]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in detector.items()]
        lines.append("")
    for e in extractors:
        lines.append("[[extractor]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in e.items()]
        lines.append("")
    Path(path).write_text("\n".join(lines))
    return Path(path)


def tiny_kit(
    folder: Path,
    visual_dims: Sequence[int] = (8,),
    audio_dim: int | None = 4,
    crop: int = 48,
    detector_size: tuple[int, int] = (96, 128),
    window: int = 1600,
    hop: int = 640,
) -> dict:
    """A detector, linear extractors and their spec in ``folder``; returns paths and the FeatureGroups they make."""
    from abaw_rt.model.config import FeatureGroup

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    det = blob_detector(folder / "detector.onnx", size=detector_size)
    specs, groups = [], []
    for i, dim in enumerate(visual_dims):
        name = f"vis{i}"
        linear_extractor(folder / f"{name}.onnx", "visual", dim, size=(crop, crop), seed=i)
        specs.append({"name": name, "modality": "visual", "onnx": f"{name}.onnx", "dim": dim, "batch": 16})
        groups.append(FeatureGroup(name, dim, "visual"))
    if audio_dim:
        linear_extractor(folder / "aud.onnx", "audio", audio_dim, window=window, seed=99)
        specs.append(
            {
                "name": "aud",
                "modality": "audio",
                "onnx": "aud.onnx",
                "dim": audio_dim,
                "window": window,
                "hop": hop,
                "batch": 64,
            }
        )
        groups.append(FeatureGroup("aud", audio_dim, "audio"))
    spec = write_spec(folder / "extractors.toml", specs)
    return {"detector": det, "spec": spec, "features": tuple(groups)}
