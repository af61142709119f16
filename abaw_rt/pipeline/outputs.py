"""Pipeline layer, stage 5: per-video output files: ABAW-format predictions, predictions.csv, report.json, plot.png.

All of one video's files are written (each atomically) into a hidden staging folder beside the final
one, which is then renamed into place: a failed or interrupted run leaves no partial output, and a
re-run replaces the previous folder as a whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.io import atomic_write_bytes
from abaw_rt.model.config import HEAD_LABELS

ABAW_TASK = {"va": "VA", "expr": "EXPR", "au": "AU"}  # file suffix per head: <video>.VA.txt


@dataclass
class VideoPrediction:
    """One video's stitched predictions and what the run learnt about it."""

    name: str  # output name (file stem, plus _left/_right with --face left/right)
    source: Path  # the video file or image folder
    frame_times: np.ndarray  # (n,) seconds
    face_found: np.ndarray  # (n,) bool: False where features came from the nearest frame with a face
    merged: dict[str, np.ndarray]  # {head: (n, k)}: VA values, EXPR/AU probabilities
    decisions: dict[str, np.ndarray]  # {head: VA (n, 2) clipped, EXPR (n,) class, AU (n, 12) 0/1}
    report: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return len(self.frame_times)


def abaw_lines(head: str, decisions: np.ndarray) -> Iterator[str]:
    """ABAW annotation format: a header line, then one line per frame (Zhou et al. 2023, the ABAW5 task definitions)."""
    yield ",".join(HEAD_LABELS[head])
    if head == "va":
        yield from (f"{v:.6f},{a:.6f}" for v, a in decisions)
    elif head == "expr":
        yield from (str(int(c)) for c in decisions)
    else:
        yield from (",".join(str(int(x)) for x in row) for row in decisions)


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write lines as they come (memory stays flat for long videos); the caller's staging folder makes it atomic."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line)
            f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def predictions_csv(pred: VideoPrediction) -> Iterator[str]:
    """Lines of predictions.csv: frame (1-based), time, face_found, then per head: values / class and
    probabilities / 0-1 and probabilities."""
    cols = ["frame", "time", "face_found"]
    fmt = ["{}", "{:.6f}", "{}"]
    for head in pred.merged:
        labels = HEAD_LABELS[head]
        if head == "va":
            cols += list(labels)
            fmt += ["{:.6f}"] * len(labels)
        elif head == "expr":
            cols += ["expr"] + [f"p_{x}" for x in labels]
            fmt += ["{}"] + ["{:.6f}"] * len(labels)
        else:
            cols += list(labels) + [f"p_{x}" for x in labels]
            fmt += ["{}"] * len(labels) + ["{:.6f}"] * len(labels)
    yield ",".join(cols)
    for i in range(pred.frames):
        vals = [i + 1, float(pred.frame_times[i]), int(pred.face_found[i])]
        for head, m in pred.merged.items():
            d = pred.decisions[head]
            if head == "va":
                vals += [float(x) for x in d[i]]
            elif head == "expr":
                vals += [HEAD_LABELS["expr"][int(d[i])]] + [float(x) for x in m[i]]
            else:
                vals += [int(x) for x in d[i]] + [float(x) for x in m[i]]
        yield ",".join(f.format(v) for f, v in zip(fmt, vals))


from abaw_rt.pipeline.plot import PLOT_BINS, _envelope, plot_png  # noqa: E402,F401 (plot.png; re-exported)


def check_out_dir(out_dir: Path) -> Path:
    """Create the output folder if needed and prove it is writable, before any video is decoded."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".abaw-rt-write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise AbawRtError(f"output folder '{out_dir}': not writable ({exc.strerror or exc})") from None
    return out_dir


def write_outputs(out_dir: Path, pred: VideoPrediction, plot: bool = True) -> Path:
    """Write one video's files into ``<out_dir>/<name>/`` as a whole; returns that folder.

    Files: ``<name>.VA.txt`` / ``.EXPR.txt`` / ``.AU.txt`` (heads present), ``predictions.csv``,
    ``report.json`` and ``plot.png``.
    """
    out_dir = Path(out_dir)
    final = out_dir / pred.name
    if pred.name in ("", ".", "..") or any(c in pred.name for c in "/\\\0") or final.parent != out_dir:
        raise AbawRtError(f"output name {pred.name!r}: not a plain name inside the output folder '{out_dir}'")
    staging = Path(tempfile.mkdtemp(prefix=f".{pred.name}.partial-", dir=out_dir))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; give the folder the user's usual mode
        files = []
        for head in pred.decisions:
            f = staging / f"{pred.name}.{ABAW_TASK[head]}.txt"
            write_lines(f, abaw_lines(head, pred.decisions[head]))
            files.append(f.name)
        write_lines(staging / "predictions.csv", predictions_csv(pred))
        files.append("predictions.csv")
        if plot:
            atomic_write_bytes(staging / "plot.png", plot_png(pred))
            files.append("plot.png")
        files.append("report.json")
        pred.report["outputs"] = {"folder": str(final), "files": files}
        atomic_write_bytes(staging / "report.json", (json.dumps(pred.report, indent=1) + "\n").encode())
        _swap_into_place(staging, final)
    except OSError as exc:
        raise AbawRtError(f"output folder '{final}': cannot write ({exc.strerror or exc})") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _swap_into_place(staging: Path, final: Path) -> None:
    """Rename the staged folder to its final name, replacing an earlier run's folder only once the new one is whole."""
    old = None
    if final.exists() or final.is_symlink():
        if not final.is_dir() or final.is_symlink():
            raise AbawRtError(f"output '{final}': exists and is not a folder")
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    with _signals_deferred():  # Ctrl-C / SIGTERM between the two renames would leave neither folder visible
        if old is not None:
            os.replace(final, old / final.name)
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT and SIGTERM for the duration (main thread only); deliver them when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)
