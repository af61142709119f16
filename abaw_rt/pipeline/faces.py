"""Pipeline layer, stage 2: face detection every N frames, tracking and interpolation between, crop and alignment.

The detector is an ONNX graph behind the Runner API (``OnnxModelRunner``) with a small contract
(README, "Face detector"): one image in, decoded boxes with scores and five landmarks out. Frames are
letterboxed into the detector's input size (top-left anchored), so coordinates map back with one scale; with
``canvas = "fit"`` the canvas itself shrinks to the frame's aspect (sides rounded up to 32), so a graph of any
height and width spends no work on padding it does not need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.vocab import FaceChoice
from abaw_rt.pipeline.decode import DecodedFrame
from abaw_rt.pipeline.extractor_spec import Canvas, CropMode, DetectorSpec, ImageInput

# ArcFace's five-point template for a 112 x 112 crop (insightface): eyes, nose tip, mouth corners,
# in image-left to image-right order. Aff-Wild2's cropped_aligned faces follow the same convention.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
TRACK_IOU = 0.3  # a detection continues the track when it overlaps the last tracked face this much
FIT_MULTIPLE = 32  # canvas = "fit" rounds each side up to this: RetinaFace's coarsest stride (most detectors' too)


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) x1, y1, x2, y2 in full-frame pixels
    landmarks: np.ndarray  # (5, 2) in full-frame pixels
    score: float

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    @property
    def centre_x(self) -> float:
        return float(self.box[0] + self.box[2]) / 2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression, vectorised per kept box; indices kept, best first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = np.asarray(boxes, dtype=np.float64).T[:4]
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        union = area[i] + area[rest] - inter
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def box_landmarks(box: np.ndarray) -> np.ndarray:
    """Five points placed by the ArcFace template inside a box (for detectors without landmarks)."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return (ARCFACE_TEMPLATE / 112.0 - 0.5) * side + np.array([cx, cy])


class FaceDetector:
    """Runs a detector graph on one frame and returns its faces in full-frame pixels.

    Args:
        spec: the detector's contract (input size, pixel preparation, output names, thresholds).
        runner: an ``OnnxModelRunner`` for ``spec.onnx`` (activated by the caller).
    """

    def __init__(self, spec: DetectorSpec, runner):
        self.spec = spec
        self.runner = runner
        self.image: ImageInput | None = None
        self._input = None

    def prepare(self) -> None:
        """After the runner is active: resolve the input name and size, check the outputs exist."""
        inp = self.runner.spec(self.spec.input, "input")
        self._input = inp.name
        size = self.spec.image.size
        hw = inp.shape[2:4] if self.spec.image.layout.value == "nchw" else inp.shape[1:3]
        if size is None:
            if len(inp.shape) != 4 or not all(isinstance(d, int) for d in hw):
                raise AbawRtError(
                    f"detector '{self.spec.onnx}': input '{inp.name}' has shape {list(inp.shape)} without a fixed "
                    "height and width; give input_size = [height, width] in a [detector] spec"
                )
            size = (int(hw[0]), int(hw[1]))
        if self.spec.canvas is Canvas.fit and any(isinstance(d, int) for d in hw):
            raise AbawRtError(
                f"detector '{self.spec.onnx}': canvas = \"fit\" needs an input of any height and width, but input "
                f"'{inp.name}' has shape {list(inp.shape)}; use canvas = \"fixed\" for this graph"
            )
        self.image = ImageInput(
            size, *(getattr(self.spec.image, k) for k in ("colour", "layout", "scale", "mean", "std"))
        )
        self.runner.spec(self.spec.boxes_output, "output")
        if self.spec.landmarks_output:
            self.runner.spec(self.spec.landmarks_output, "output")

    def letterbox_size(self, frame_size: tuple[int, int]) -> tuple[int, int, float]:
        """(width, height, scale) of the frame scaled to fit the input, aspect kept."""
        fw, fh = frame_size
        h, w = self.image.size
        scale = min(w / fw, h / fh)
        return max(1, round(fw * scale)), max(1, round(fh * scale)), scale

    def canvas_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) of the input that a frame letterboxed to ``width`` x ``height`` is placed in."""
        h, w = self.image.size
        if self.spec.canvas is Canvas.fixed:
            return h, w
        return min(h, -(-height // FIT_MULTIPLE) * FIT_MULTIPLE), min(w, -(-width // FIT_MULTIPLE) * FIT_MULTIPLE)

    def detect(self, frame: DecodedFrame) -> list[Face]:
        """Faces above the score threshold after NMS, best first."""
        sw, sh, scale = self.letterbox_size(frame.size)
        h, w = self.canvas_size(sw, sh)
        canvas = np.zeros((1, h, w, 3), dtype=np.uint8)
        canvas[0, :sh, :sw] = frame.rgb_at(sw, sh)
        out = self.runner.infer({self._input: self.image.prepare(canvas)})
        boxes = np.asarray(out[self.spec.boxes_output], dtype=np.float64)
        if boxes.ndim == 3:
            boxes = boxes[0]
        if boxes.ndim != 2 or boxes.shape[-1] != 5:
            raise AbawRtError(
                f"detector '{self.spec.onnx}': output '{self.spec.boxes_output}' has shape "
                f"{out[self.spec.boxes_output].shape}, expected (1, K, 5) boxes x1, y1, x2, y2, score"
            )
        lms = None
        if self.spec.landmarks_output:
            lms = np.asarray(out[self.spec.landmarks_output], dtype=np.float64).reshape(-1, 10)
            if len(lms) != len(boxes):
                raise AbawRtError(f"detector '{self.spec.onnx}': {len(boxes)} boxes but {len(lms)} landmark sets")
        keep = np.flatnonzero(boxes[:, 4] >= self.spec.score_threshold)
        if len(keep) == 0:
            return []
        order = [int(keep[i]) for i in nms(boxes[keep, :4], boxes[keep, 4], self.spec.nms_iou)]
        faces = []
        for i in order:
            box = boxes[i, :4] / scale
            lm = lms[i].reshape(5, 2) / scale if lms is not None else box_landmarks(box)
            faces.append(Face(box=box, landmarks=lm, score=float(boxes[i, 4])))
        return faces


def choose(faces: list[Face], choice: FaceChoice, previous: Face | None) -> Face | None:
    """The face to follow: the one continuing the previous track if any, else by the choice policy."""
    if not faces:
        return None
    if previous is not None:
        overlaps = [iou(f.box, previous.box) for f in faces]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= TRACK_IOU:
            return faces[best]
    if choice is FaceChoice.left:
        return min(faces, key=lambda f: f.centre_x)
    if choice is FaceChoice.right:
        return max(faces, key=lambda f: f.centre_x)
    return max(faces, key=lambda f: f.area)


def interpolate(a: Face | None, b: Face | None, alpha: float) -> Face | None:
    """The face between two detections at fraction ``alpha`` (0: at ``a``, 1: at ``b``).

    Linear when both exist and overlap (the same person moving); otherwise the nearer detection,
    which may be "no face".
    """
    if a is not None and b is not None and iou(a.box, b.box) > 0.0:
        return Face(
            box=(1 - alpha) * a.box + alpha * b.box,
            landmarks=(1 - alpha) * a.landmarks + alpha * b.landmarks,
            score=min(a.score, b.score),
        )
    return a if alpha <= 0.5 else b


class FaceTracker:
    """Detection every ``every`` frames (and on the last), interpolation in between, one face per frame.

    Frames are pushed in order; each push returns the frames whose face is settled, which happens when
    the next detection frame arrives, so at most ``every`` frames are held.
    """

    def __init__(self, detect, every: int, choice: FaceChoice = FaceChoice.largest, on_detect=None):
        if every < 1:
            raise AbawRtError(f"--detect-every {every}: expected >= 1")
        self._detect = detect  # frame -> list[Face]
        self.every = every
        self.choice = choice
        self.on_detect = on_detect  # optional callback(seconds) for timing
        self.detections = 0
        self._pending: list[DecodedFrame] = []
        self._anchor: tuple[int, Face | None] | None = None  # last detection frame and its face
        self._track: Face | None = None

    def _run_detect(self, frame: DecodedFrame) -> Face | None:
        import time

        start = time.perf_counter()
        faces = self._detect(frame)
        if self.on_detect:
            self.on_detect(time.perf_counter() - start)
        self.detections += 1
        face = choose(faces, self.choice, self._track)
        if face is not None:
            self._track = face
        return face

    def _settle(self, frame: DecodedFrame) -> Iterator[tuple[DecodedFrame, Face | None]]:
        face = self._run_detect(frame)
        if self._anchor is not None:
            i0, f0 = self._anchor
            span = frame.index - i0
            for p in self._pending:
                yield p, interpolate(f0, face, (p.index - i0) / span)
        else:  # frames before the first detection (none when detection starts at frame 0)
            for p in self._pending:
                yield p, face
        self._pending = []
        self._anchor = (frame.index, face)
        yield frame, face

    def push(self, frame: DecodedFrame) -> list[tuple[DecodedFrame, Face | None]]:
        if frame.index % self.every == 0:
            return list(self._settle(frame))
        self._pending.append(frame)
        return []

    def finish(self) -> list[tuple[DecodedFrame, Face | None]]:
        """Settle the frames after the last detection frame (the last frame is detected too)."""
        if not self._pending:
            return []
        last = self._pending.pop()
        return list(self._settle(last))


# -- crop and alignment --------------------------------------------------------------------------------
def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity transform (rotation, uniform scale, shift) best mapping src to dst (Umeyama)."""
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / n
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    var = (s**2).sum() / n
    scale = (sig * np.diag(e)).sum() / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * r
    m[:, 2] = mu_d - scale * r @ mu_s
    return m


def crop_transform(face: Face, mode: CropMode, size: tuple[int, int], margin: float = 0.0) -> np.ndarray:
    """The 2 x 3 transform from frame pixels to a (height, width) crop."""
    h, w = size
    if mode is CropMode.aligned:
        dst = ARCFACE_TEMPLATE * np.array([w / 112.0, h / 112.0])
        return similarity(face.landmarks, dst)
    x1, y1, x2, y2 = face.box
    side = max(x2 - x1, y2 - y1) * (1.0 + margin)
    side = max(side, 1.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    sx, sy = w / side, h / side
    return np.array([[sx, 0.0, w / 2 - sx * cx], [0.0, sy, h / 2 - sy * cy]])


def warp(rgb: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Cut a (height, width) crop out of an (H, W, 3) uint8 frame with the frame->crop transform ``m``.

    Bilinear, black outside the frame. OpenCV's warpAffine: about 10x faster than Pillow's affine
    transform, which matters with several extractors of 224-260 pixels per frame.
    """
    cv2 = require_module("cv2", "video")
    h, w = size
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
