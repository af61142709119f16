"""Defaults layer (tests and build scripts): real face images from scikit-image, with hand-made annotations.

Nothing is downloaded: ``skimage.data.astronaut()`` (NASA portrait of Eileen Collins, public domain) and
``skimage.data.lfw_subset()`` (25 x 25 grayscale crops from Labeled Faces in the Wild; the first 100 are
faces) ship inside the scikit-image wheel (``pip install 'abaw-rt[samples]'``, also in ``[dev]``). The annotations below were made
by looking at the images: the astronaut's face box and eye centres, and which LFW faces clearly smile and
which clearly do not (open smiles with teeth vs neutral, serious or frowning faces; unclear ones left out).
"""

from __future__ import annotations

import numpy as np

from abaw_rt.errors import require_module

# Hand-annotated on the 512 x 512 astronaut image (x1, y1, x2, y2), eyebrows-to-chin, ear-to-ear skin.
ASTRONAUT_FACE_BOX = (180.0, 62.0, 272.0, 178.0)
ASTRONAUT_EYES = ((205.0, 101.0), (247.0, 103.0))  # image-left eye, image-right eye (pupil centres)

# Indices into skimage.data.lfw_subset() (faces are 0..99), labelled by eye.
LFW_SMILING = (1, 18, 19, 37, 52, 53, 61, 74, 81, 85, 91, 93, 94)
LFW_NOT_SMILING = (3, 5, 7, 14, 40, 42, 55, 58, 62, 65, 87, 97)

FER_SIZE = 64


def astronaut() -> np.ndarray:
    """(512, 512, 3) uint8 RGB."""
    data = require_module("skimage.data", "samples")
    return np.ascontiguousarray(data.astronaut())


def lfw_faces(indices) -> np.ndarray:
    """(N, 25, 25) uint8 gray faces from scikit-image's LFW subset."""
    data = require_module("skimage.data", "samples")
    faces = data.lfw_subset()[list(indices)]
    return np.clip(np.round(faces * 255.0), 0, 255).astype(np.uint8)


def square_crop(rgb: np.ndarray, box, margin: float, size: int) -> np.ndarray:
    """A square crop of side max(w, h) * (1 + margin) around a box, resized to size x size (black outside)."""
    cv2 = require_module("cv2", "video")
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1.0 + margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    s = size / side
    m = np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def fer_reference_inputs() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Faces at the FER network's input size: names, (N, 64, 64, 3) uint8 RGB and the same as (N, 64, 64) gray.

    The astronaut face (annotated box, 20 % margin) and the labelled LFW faces (gray, upscaled bicubically).
    Gray is OpenCV's BGR2GRAY of the RGB crop, as the ``fer`` package makes it.
    """
    cv2 = require_module("cv2", "video")
    names = ["astronaut"]
    rgb = [square_crop(astronaut(), ASTRONAUT_FACE_BOX, 0.2, FER_SIZE)]
    idx = LFW_SMILING + LFW_NOT_SMILING
    for i, face in zip(idx, lfw_faces(idx)):
        g = cv2.resize(face, (FER_SIZE, FER_SIZE), interpolation=cv2.INTER_CUBIC)
        rgb.append(np.repeat(g[:, :, None], 3, axis=2))
        names.append(f"lfw{i:02d}")
    rgb_arr = np.stack(rgb)
    gray = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in rgb_arr])
    return names, rgb_arr, gray
