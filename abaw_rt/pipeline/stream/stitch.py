"""Pipeline layer, stage 5: stitching window outputs into one row per frame, and the rule for when a frame is final.

Offline (``TailStitcher``): the stride plan's windows are summed as they run (``Merge``: centre-weighted by
default); a frame is final once every window of the plan that covers it has run.

Live (``LiveStitcher``): a frame is emitted once ``lookahead`` later frames have arrived and a window ending at
or after that newest frame has run (with ``hop`` 1, at once): later windows could change it, but live output is
never revised, so they are not waited for. Among the windows run by then, a frame takes the one that sees the
most frames after it, up to half a window: with ``lookahead`` < w / 2 the window ending ``lookahead`` frames
after it, the newest. Offline's centre-weighted average is not used here: the windows live has run all end
within ``lookahead`` frames of the frame, where the model has the least future context, and averaging in those
with even less made live both farther from offline and less accurate on the demo model's labelled validation
sequences at every lookahead (``benchmarks/bench_live_context.py``). Only frames not yet emitted are held
(``lookahead + hop`` of them).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from abaw_rt.pipeline.outputs import FinalRows
from abaw_rt.pipeline.stitch import accumulate, decide, merged_rows, window_weights
from abaw_rt.pipeline.stream.rows import Rows
from abaw_rt.vocab import Merge


class TailStitcher:
    """``stitch.Stitcher`` for a video of unknown length: sums only from ``base`` on; ``settle`` hands out the
    merged rows of frames no later window covers, and forgets them."""

    def __init__(self, widths: dict[str, int], merge: Merge):
        self.merge = Merge(merge)
        self.sums = {h: Rows(k, np.float64) for h, k in widths.items()}
        self.weight = Rows(1, np.float64)

    @property
    def base(self) -> int:
        """The first frame not yet settled."""
        return self.weight.base

    def add(self, start: int, outputs: dict[str, np.ndarray]) -> None:
        length = len(next(iter(outputs.values())))
        for r in (*self.sums.values(), self.weight):
            if r.end < start + length:
                r.put(np.arange(r.end, start + length), np.zeros((start + length - r.end, r.data.shape[1])))
        sl = slice(start - self.weight.base, start + length - self.weight.base)
        w = window_weights(length, self.merge)
        accumulate({h: r.data[sl] for h, r in self.sums.items()}, self.weight.data[sl, 0], w, outputs, self.merge)

    def settle(self, upto: int) -> dict[str, np.ndarray]:
        """{head: (upto - base, k) float32} merged rows of frames [base, upto), which every window they get has
        covered; their sums are dropped."""
        base = self.weight.base
        if upto <= base:
            return {}
        merged = merged_rows({h: r.data[: upto - base] for h, r in self.sums.items()},
                             self.weight.data[: upto - base, 0], self.merge, first=base)
        for s in self.sums.values():
            s.drop(upto)
        self.weight.drop(upto)
        return merged


@dataclass
class Pending:
    row: object  # FrameRow
    values: dict[str, np.ndarray] | None = None  # {head: (k,)} of the best window so far
    after: int = -1  # frames after this one in that window, capped at half a window (-1: no window yet)


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

    def ready(self, newest: int) -> FinalRows | None:
        """Frames final now that frame ``newest`` has arrived and its window has run."""
        out = []
        while self._pending and self._pending[0].row.index + self.lookahead <= newest and self._pending[0].after >= 0:
            out.append(self._pending.popleft())
        return self._final(out)

    def flush(self) -> FinalRows | None:
        """The stream ended (the last window has run): every frame still held."""
        out = [p for p in self._pending if p.after >= 0]
        self._pending.clear()
        return self._final(out)

    def _final(self, done: list[Pending]) -> FinalRows | None:
        if not done:
            return None
        merged = {h: np.stack([np.asarray(p.values[h], np.float32) for p in done]) for h in self.widths}
        rows = [p.row for p in done]
        return FinalRows(rows[0].index, np.array([r.time for r in rows], np.float64),
                         np.array([r.face for r in rows], bool), merged,
                         {h: decide(h, v) for h, v in merged.items()}, frames=rows)
