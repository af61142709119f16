"""Pipeline layer, stage 6 (live): sinks for final frames: NDJSON lines and latency figures (the files of
``--out`` are ``outputs.OutputFolder``, the sink offline ``infer`` writes to; every sink takes ``FinalRows``).

NDJSON, one object per frame, in frame order, written and flushed as each frame becomes final:
``frame`` (0-based index), ``time`` (presentation time, s), ``capture_time`` / ``emit_time`` (Unix time, s),
``latency_ms`` (capture to emission), ``received`` (frames received when it was emitted: at least
``frame + 1 + lookahead`` except for the frames flushed when the stream ended or broke), ``face`` (a face was found; false also for frames filled from the last
face), ``shed`` (features repeated from the previous frame under load), ``session`` (reconnects of the source
before this frame: 0 without ``--reconnect``), ``values`` (valence, arousal clipped
to [-1, 1]; ``expr``: the class name; ``au``: 0/1 per AU) and ``probabilities`` (expr: per class; au: per AU).
"""

from __future__ import annotations

import json
import time

from abaw_rt.model.config import HEAD_LABELS


def frame_object(rows, i: int, emit_wall: float, latency_s: float) -> dict:
    """The NDJSON object of frame ``i`` of a ``FinalRows`` (live: its ``frames`` carry the capture clocks)."""
    row = rows.frames[i]
    values: dict = {}
    probs: dict = {}
    for head, d in rows.decisions.items():
        labels, d, m = HEAD_LABELS[head], d[i], rows.merged[head][i]
        if head == "va":
            values.update({labels[0]: round(float(d[0]), 6), labels[1]: round(float(d[1]), 6)})
        elif head == "expr":
            values["expr"] = labels[int(d)]
            probs["expr"] = {k: round(float(p), 6) for k, p in zip(labels, m)}
        else:
            values["au"] = {k: int(x) for k, x in zip(labels, d)}
            probs["au"] = {k: round(float(p), 6) for k, p in zip(labels, m)}
    return {
        "frame": row.index,
        "time": round(row.time, 6),
        "capture_time": round(row.wall, 6),
        "emit_time": round(emit_wall, 6),
        "latency_ms": round(latency_s * 1000.0, 3),
        "received": rows.received,
        "face": bool(row.face),
        "shed": bool(row.shed),
        "session": int(getattr(row, "session", 0)),
        "values": values,
        "probabilities": probs,
    }


class NdjsonSink:
    """One line per frame on a text stream, flushed after each emission (programs read it as it comes)."""

    def __init__(self, stream):
        self.stream = stream

    def put(self, rows, emit_wall: float, emit_mono: float) -> None:
        for i, row in enumerate(rows.frames):
            obj = frame_object(rows, i, emit_wall, emit_mono - row.mono)
            self.stream.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.stream.flush()


class Latency:
    """Capture-to-emission latency per frame, in constant memory however long the stream (``report.CallTimes``:
    exact count and max, percentiles within 1.1 %)."""

    def __init__(self):
        from abaw_rt.pipeline.report import CallTimes

        self.calls = CallTimes()

    def put(self, rows, emit_wall: float, emit_mono: float) -> None:
        for row in rows.frames:
            self.calls.add(max(emit_mono - row.mono, 0.0))

    def summary(self) -> dict:
        c = self.calls
        if not c.count:
            return {"frames": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
        p50, p90, p99 = (round(1000.0 * x, 2) for x in c.percentiles((50, 90, 99)))
        return {"frames": c.count, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": round(1000.0 * c.high, 2)}


def emit(sinks, rows, received: int) -> None:
    """Hand final frames (a ``FinalRows``, or None) to every sink, stamped with one emission time;
    ``received``: frames in so far."""
    if rows is None or not len(rows):
        return
    rows.received = received
    now_mono, now_wall = time.monotonic(), time.time()
    for s in sinks:
        s.put(rows, now_wall, now_mono)
