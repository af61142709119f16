"""Pipeline layer, stage 5: per-video output files: ABAW-format predictions, predictions.csv, report.json, plot.png.

All of one video's files are written (each atomically) into a hidden staging folder beside the final
one, which is then renamed into place: a failed or interrupted run leaves no partial output, and a
re-run replaces the previous folder as a whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
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


STALE_AFTER_S = 3600.0  # a staging folder of another host, or of an older abaw-rt (no owner in its name)
REUSED_PID_AFTER_S = 6 * 3600.0  # a live owner pid this old is another process that got the same pid
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]*)-)?[a-z0-9_]+$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32]


def _owner() -> str:
    """Who stages a folder, in its name: ``<pid>@<host>``."""
    return f"{os.getpid()}@{_host()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_stale(out_dir: Path, name: str | None = None) -> list[Path]:
    """Remove the hidden ``.NAME.partial-*`` / ``.NAME.old-*`` folders that killed runs left in ``out_dir``
    (all names, or only ``name``); returns those removed.

    A folder is stale when its owner (pid and host in its name) is gone; when the owner is another host,
    or an older abaw-rt that did not name it, once it is an hour old. A live writer's folder is kept.
    """
    removed = []
    now, host = time.time(), _host()
    for entry in os.scandir(out_dir):
        m = _LEFTOVER.match(entry.name)
        if not m or (name is not None and m["name"] != name) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:  # another run removed it meanwhile
            continue
        if m["pid"] is not None and m["host"] == host:
            stale = not _alive(int(m["pid"])) or age > REUSED_PID_AFTER_S
        else:
            stale = age > STALE_AFTER_S
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def check_out_dir(out_dir: Path) -> Path:
    """Create the output folder if needed and prove it is writable, before any video is decoded."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".abaw-rt-write-test.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
        clean_stale(out_dir)  # what killed runs left behind
    except OSError as exc:
        raise AbawRtError(f"output folder '{out_dir}': not writable ({exc.strerror or exc})") from None
    return out_dir


def write_outputs(out_dir: Path, pred: VideoPrediction, plot: bool = True) -> Path:
    """Write one video's files into ``<out_dir>/<name>/`` as a whole; returns that folder.

    Files: ``<name>.VA.txt`` / ``.EXPR.txt`` / ``.AU.txt`` (heads present), ``predictions.csv``,
    ``report.json`` and ``plot.png``. Predictions that are not finite (NaN, inf: broken weights) are
    refused before anything is written. Several processes may write the same output at once: each
    result lands whole (the last one stays), and staging folders left by killed runs are removed.
    """
    out_dir = Path(out_dir)
    final = out_dir / pred.name
    if pred.name in ("", ".", "..") or any(c in pred.name for c in "/\\\0") or final.parent != out_dir:
        raise AbawRtError(f"output name {pred.name!r}: not a plain name inside the output folder '{out_dir}'")
    check_finite(pred)
    staging = None
    try:
        clean_stale(out_dir, pred.name)
        staging = Path(tempfile.mkdtemp(prefix=f".{pred.name}.partial-{_owner()}-", dir=out_dir))
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
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final


def check_finite(pred: VideoPrediction) -> None:
    """Refuse NaN / inf predictions (a model with broken weights, or one that overflows in fp16)."""
    for head, values in pred.merged.items():
        bad = ~np.isfinite(np.asarray(values, dtype=np.float64))
        if bad.any():
            frame = int(np.argwhere(bad)[0][0]) + 1
            raise AbawRtError(
                f"video '{pred.source}': the model's {head} outputs are not finite (NaN or inf) on "
                f"{int(bad.any(axis=-1).sum()) if bad.ndim > 1 else int(bad.sum())} frame(s), first frame {frame}; "
                "the model's weights are broken (or overflow at this precision)"
            )


def _swap_into_place(staging: Path, final: Path) -> None:
    """Rename the staged folder to its final name, replacing an earlier run's folder only once the new one is whole.

    Held under an exclusive lock on the output folder (``flock``: released by the kernel even after a
    SIGKILL), so that concurrent writers of one output never race between the two renames.
    """
    with _out_dir_lock(final.parent), _signals_deferred():  # Ctrl-C between the renames would hide both
        old = None
        if final.exists() or final.is_symlink():
            if not final.is_dir() or final.is_symlink():
                raise AbawRtError(f"output '{final}': exists and is not a folder")
            old = final.parent / f".{final.name}.old-{_owner()}-{secrets.token_hex(4)}"
            os.rename(final, old)  # nothing is created before this succeeds: a failure leaves nothing behind
        try:
            os.replace(staging, final)
        except OSError:
            if old is not None:
                os.rename(old, final)  # put the previous result back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _out_dir_lock(folder: Path):
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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
