"""Pipeline layer, live stage 5: each frame's values from the windows already run, and the rule for when it is final.

A frame is emitted once ``lookahead`` later frames have arrived and a window ending at or after that newest
frame has run (with ``hop`` 1, at once): later windows could change it, but live output is never revised,
so they are not waited for. Among the windows run by then, a frame takes the one that sees the most frames
after it, up to half a window: with ``lookahead`` < w / 2 the window ending ``lookahead`` frames after it, the
newest. Offline's centre-weighted average (``Merge``) is not used here: the windows live has run all end
within ``lookahead`` frames of the frame, where the model has the least future context, and averaging in
those with even less made live both farther from offline and less accurate on the demo model's labelled
validation sequences at every lookahead (``benchmarks/bench_live_context.py``). Only frames not yet emitted
are held (``lookahead + hop`` of them).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from abaw_rt.pipeline.stitch import decide


@dataclass
class Pending:
    row: object  # FrameRow
    values: dict[str, np.ndarray] | None = None  # {head: (k,)} of the best window so far
    after: int = -1  # frames after this one in that window, capped at half a window (-1: no window yet)


@dataclass
class Emitted:
    """One final frame: its row, merged values ({head: (k,)}) and decisions."""

    row: object
    merged: dict[str, np.ndarray]
    decisions: dict[str, np.ndarray]
    received: int = 0  # frames received when it was emitted (set by ``sinks.emit``)


class LiveStitcher:
    """Frames in, windows' outputs in, final frames out in order.

    Args:
        widths: {head: outputs per frame}.
        lookahead: later frames that must arrive before a frame is final.
        window: the model's window w (frames); a frame prefers windows with more frames after it, up to w // 2.
    """

    def __init__(self, widths: dict[str, int], lookahead: int, window: int):
        self.widths = widths
        self.lookahead = lookahead
        self.half = max(window // 2, 1)
        self._pending: collections.deque[Pending] = collections.deque()

    def add_frame(self, row) -> None:
        self._pending.append(Pending(row))

    def add_window(self, start: int, outputs: dict[str, np.ndarray]) -> None:
        """A window's outputs ({head: (length, k)} probabilities) covering frames [start, start + length)."""
        end = start + len(next(iter(outputs.values())))
        for p in self._pending:
            if start <= p.row.index < end:
                after = min(end - 1 - p.row.index, self.half)
                if after > p.after:  # ties keep the earlier window (past half a window, the better placed)
                    p.values = {h: v[p.row.index - start] for h, v in outputs.items()}
                    p.after = after

    def ready(self, newest: int) -> list[Emitted]:
        """Frames final now that frame ``newest`` has arrived and its window has run."""
        out = []
        while self._pending and self._pending[0].row.index + self.lookahead <= newest and self._pending[0].after >= 0:
            out.append(self._final(self._pending.popleft()))
        return out

    def flush(self) -> list[Emitted]:
        """The stream ended (the last window has run): every frame still held."""
        out = [self._final(p) for p in self._pending if p.after >= 0]
        self._pending.clear()
        return out

    def _final(self, p: Pending) -> Emitted:
        merged = {h: np.asarray(v, np.float32) for h, v in p.values.items()}
        return Emitted(p.row, merged, {h: decide(h, v[None])[0] for h, v in merged.items()})
