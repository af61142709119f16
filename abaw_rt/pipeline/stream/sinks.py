"""Pipeline layer, live stage 6: sinks for final frames: NDJSON lines, the end-of-run record, latency figures.

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
from array import array

import numpy as np

from abaw_rt.model.config import HEAD_LABELS


def frame_object(e, emit_wall: float, latency_s: float) -> dict:
    """The NDJSON object of one ``Emitted`` frame."""
    row = e.row
    values: dict = {}
    probs: dict = {}
    for head, d in e.decisions.items():
        labels = HEAD_LABELS[head]
        if head == "va":
            values.update({labels[0]: round(float(d[0]), 6), labels[1]: round(float(d[1]), 6)})
        elif head == "expr":
            values["expr"] = labels[int(d)]
            probs["expr"] = {k: round(float(p), 6) for k, p in zip(labels, e.merged[head])}
        else:
            values["au"] = {k: int(x) for k, x in zip(labels, d)}
            probs["au"] = {k: round(float(p), 6) for k, p in zip(labels, e.merged[head])}
    return {
        "frame": row.index,
        "time": round(row.time, 6),
        "capture_time": round(row.wall, 6),
        "emit_time": round(emit_wall, 6),
        "latency_ms": round(latency_s * 1000.0, 3),
        "received": e.received,
        "face": bool(row.face),
        "shed": bool(row.shed),
        "session": int(getattr(row, "session", 0)),
        "values": values,
        "probabilities": probs,
    }


class NdjsonSink:
    """One line per frame on a text stream, flushed per line (programs read it as it comes)."""

    def __init__(self, stream):
        self.stream = stream

    def put(self, e, emit_wall: float, latency_s: float) -> None:
        self.stream.write(json.dumps(frame_object(e, emit_wall, latency_s), separators=(",", ":")) + "\n")
        self.stream.flush()


class RecordSink:
    """Keeps every final frame for the ``--out`` files at the end (memory grows with the run: only with --out)."""

    def __init__(self):
        self.times: list[float] = []
        self.faces: list[bool] = []
        self.merged: dict[str, list] = {}
        self.decisions: dict[str, list] = {}

    def put(self, e, emit_wall: float, latency_s: float) -> None:
        self.times.append(e.row.time)
        self.faces.append(bool(e.row.face))
        for h, v in e.merged.items():
            self.merged.setdefault(h, []).append(v)
            self.decisions.setdefault(h, []).append(e.decisions[h])

    def arrays(self):
        """(frame_times, face_found, merged, decisions) as ``VideoPrediction`` takes them."""
        merged = {h: np.asarray(v, np.float32) for h, v in self.merged.items()}
        decisions = {h: np.asarray(v) for h, v in self.decisions.items()}
        return np.asarray(self.times, np.float64), np.asarray(self.faces, bool), merged, decisions


class Latency:
    """Capture-to-emission latency per frame (float32 seconds: flat enough for hours)."""

    def __init__(self):
        self.values = array("f")

    def put(self, e, emit_wall: float, latency_s: float) -> None:
        self.values.append(latency_s)

    def summary(self) -> dict:
        if not self.values:
            return {"frames": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
        ms = np.asarray(self.values, np.float64) * 1000.0
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return {"frames": len(ms), "p50_ms": round(float(p50), 2), "p90_ms": round(float(p90), 2),
                "p99_ms": round(float(p99), 2), "max_ms": round(float(ms.max()), 2)}


def emit(sinks, emitted, received: int) -> None:
    """Hand final frames to every sink, stamping emission once per frame; ``received``: frames in so far."""
    for e in emitted:
        e.received = received
        now_mono, now_wall = time.monotonic(), time.time()
        for s in sinks:
            s.put(e, now_wall, now_mono - e.row.mono)
