"""Pipeline layer, live stage 5: stitching over the windows already run, and the rule for when a frame is final.

A frame is emitted once ``lookahead`` later frames have arrived and a window ending at or after that newest
frame has run (with ``hop`` 1, at once): later windows could change it, but live output is never revised,
so they are not waited for. Windows combine as offline (``Merge``: centre-weighted, uniform, or the best-placed
one). Only frames not yet emitted are held (``lookahead + hop`` of them).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from abaw_rt.pipeline.stitch import accumulate, decide, merged_rows, window_weights
from abaw_rt.vocab import Merge


@dataclass
class Pending:
    row: object  # FrameRow
    sums: dict[str, np.ndarray]  # {head: (1, k)} float64
    weight: np.ndarray = field(default_factory=lambda: np.zeros(1))  # (1,) float64


@dataclass
class Emitted:
    """One final frame: its row, merged values ({head: (k,)}) and decisions."""

    row: object
    merged: dict[str, np.ndarray]
    decisions: dict[str, np.ndarray]
    received: int = 0  # frames received when it was emitted (set by ``sinks.emit``)


class LiveStitcher:
    def __init__(self, widths: dict[str, int], merge: Merge, lookahead: int):
        self.widths = widths
        self.merge = Merge(merge)
        self.lookahead = lookahead
        self._pending: collections.deque[Pending] = collections.deque()

    def add_frame(self, row) -> None:
        self._pending.append(Pending(row, {h: np.zeros((1, k)) for h, k in self.widths.items()}))

    def add_window(self, start: int, outputs: dict[str, np.ndarray]) -> None:
        """A window's outputs ({head: (length, k)} probabilities) covering frames [start, start + length)."""
        length = len(next(iter(outputs.values())))
        w = window_weights(length, self.merge)
        for p in self._pending:
            i = p.row.index - start
            if 0 <= i < length:
                accumulate(p.sums, p.weight, w[i : i + 1], {h: v[i : i + 1] for h, v in outputs.items()}, self.merge)

    def ready(self, newest: int) -> list[Emitted]:
        """Frames final now that frame ``newest`` has arrived and its window has run."""
        out = []
        while self._pending and self._pending[0].row.index + self.lookahead <= newest and self._pending[0].weight[0] > 0:
            out.append(self._final(self._pending.popleft()))
        return out

    def flush(self) -> list[Emitted]:
        """The stream ended (the last window has run): every frame still held."""
        out = [self._final(p) for p in self._pending if p.weight[0] > 0]
        self._pending.clear()
        return out

    def _final(self, p: Pending) -> Emitted:
        merged = {h: v[0] for h, v in merged_rows(p.sums, p.weight, self.merge).items()}
        return Emitted(p.row, merged, {h: decide(h, v[None])[0] for h, v in merged.items()})
