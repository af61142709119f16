"""Pipeline layer, stage 1 (display orientation): the display matrix a video carries, applied to its frames.

Phones store portrait video as landscape pixels plus a display matrix (rotation, sometimes a mirror)
that players apply. FFmpeg's command line applies it by default ("autorotate"); this module makes the
same choice from the same matrix, as a numpy operation on the decoded RGB frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Orientation:
    """How to turn stored pixels into displayed ones.

    ``rotation``: degrees clockwise the stored picture is turned for display (0, 90, 180, 270; FFmpeg's
    sign); ``op``: the pixel operation, as FFmpeg's autorotate names it.
    """

    rotation: int = 0
    op: str = "none"  # none, clock, cclock, clock_flip, cclock_flip, hflip, vflip, hvflip

    @property
    def swaps(self) -> bool:
        """Width and height trade places."""
        return self.op in ("clock", "cclock", "clock_flip", "cclock_flip")

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """The displayed picture of a stored (H, W, 3) frame, C-contiguous."""
        if self.op == "none":
            return rgb
        turned = {
            "clock": lambda a: np.rot90(a, k=-1),
            "cclock": lambda a: np.rot90(a, k=1),
            "cclock_flip": lambda a: a.transpose(1, 0, 2),  # rotate 90 counter-clockwise, then flip vertically
            "clock_flip": lambda a: np.rot90(a, k=-1)[::-1],  # rotate 90 clockwise, then flip vertically
            "hflip": lambda a: a[:, ::-1],
            "vflip": lambda a: a[::-1],
            "hvflip": lambda a: a[::-1, ::-1],
        }[self.op](rgb)
        return np.ascontiguousarray(turned)

    def stored_size(self, width: int, height: int) -> tuple[int, int]:
        """The stored (width, height) that displays as (width, height)."""
        return (height, width) if self.swaps else (width, height)

    def to_dict(self) -> dict:
        return {"rotation": self.rotation, "op": self.op}


UPRIGHT = Orientation()


def orientation_of(frame) -> Orientation:
    """The orientation a decoded ``av.VideoFrame``'s display matrix asks for (FFmpeg's autorotate rules);
    upright when it has none. Angles that are not a multiple of 90 degrees are left as stored (rotation
    reported, op none)."""
    matrix = None
    for sd in frame.side_data:
        if getattr(sd.type, "name", str(sd.type)).upper().endswith("DISPLAYMATRIX"):
            raw = bytes(sd)
            if len(raw) >= 36:
                matrix = np.frombuffer(raw[:36], dtype=np.int32)
    if matrix is None or not matrix[[0, 1, 3, 4]].any():  # none, or degenerate (all zero: a damaged file)
        return UPRIGHT
    angle = float(frame.rotation)
    if not math.isfinite(angle):  # a degenerate matrix (all zero, hostile file): shown as stored
        return UPRIGHT
    theta = -round(angle)  # FFmpeg's get_rotation(): clockwise degrees
    theta -= 360 * int(np.floor(theta / 360 + 0.9 / 360))
    if abs(theta - 90) < 1:
        return Orientation(90, "cclock_flip" if matrix[3] > 0 else "clock")
    if abs(theta - 180) < 1:
        h, v = matrix[0] < 0, matrix[4] < 0
        return Orientation(180, "hvflip" if h and v else "hflip" if h else "vflip" if v else "none")
    if abs(theta - 270) < 1:
        return Orientation(270, "clock_flip" if matrix[3] < 0 else "cclock")
    if abs(theta) > 1:
        return Orientation(int(theta), "none")
    return Orientation(0, "vflip" if matrix[4] < 0 else "none")
