"""Pipeline layer, stage 6 (sinks): per-video output files: ABAW-format predictions, predictions.csv, report.json, plot.png.

All of one video's files are written into a hidden staging folder beside the final one, rows appended as
frames become final (``OutputFolder.put``: memory stays flat however long the video), then ``close`` adds
report.json and plot.png and renames the folder into place: a failed or interrupted run leaves no partial
output, and a re-run replaces the previous folder as a whole.
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
from typing import Iterable, Iterator, Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.io import atomic_write_bytes
from abaw_rt.model.config import HEAD_LABELS

ABAW_TASK = {"va": "VA", "expr": "EXPR", "au": "AU"}  # file suffix per head: <video>.VA.txt


@dataclass
class FinalRows:
    """Frames ``[start, start + n)`` once final: what every sink (files, NDJSON, latency) takes."""

    start: int  # index of the first frame (0-based)
    times: np.ndarray  # (n,) seconds
    faces: np.ndarray  # (n,) bool: False where features came from another frame with a face
    merged: dict[str, np.ndarray]  # {head: (n, k)}: VA values, EXPR/AU probabilities
    decisions: dict[str, np.ndarray]  # {head: VA (n, 2) clipped, EXPR (n,) class, AU (n, 12) 0/1}
    frames: list | None = None  # live: each frame's ``FrameRow`` (capture clocks, shed, session)
    received: int = 0  # live: frames received when these were emitted

    def __len__(self) -> int:
        return len(self.times)


@dataclass
class VideoPrediction:
    """One video's stitched predictions and what the run learnt about it (every frame at once)."""

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

    def rows(self) -> FinalRows:
        return FinalRows(0, self.frame_times, self.face_found, self.merged, self.decisions)


def abaw_header(head: str) -> str:
    """ABAW annotation format's header line (Zhou et al. 2023, the ABAW5 task definitions)."""
    return ",".join(HEAD_LABELS[head])


def abaw_lines(head: str, decisions: np.ndarray) -> Iterator[str]:
    """ABAW annotation format: one line per frame, after ``abaw_header``."""
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


def csv_header(heads: Sequence[str]) -> str:
    """predictions.csv's header: frame (1-based), time, face_found, then per head: values / class and
    probabilities / 0-1 and probabilities."""
    cols = ["frame", "time", "face_found"]
    for head in heads:
        labels = HEAD_LABELS[head]
        if head == "va":
            cols += list(labels)
        elif head == "expr":
            cols += ["expr"] + [f"p_{x}" for x in labels]
        else:
            cols += list(labels) + [f"p_{x}" for x in labels]
    return ",".join(cols)


def _csv_formats(heads: Sequence[str]) -> list[str]:
    fmt = ["{}", "{:.6f}", "{}"]
    for head in heads:
        k = len(HEAD_LABELS[head])
        fmt += ["{:.6f}"] * k if head == "va" else ["{}"] + ["{:.6f}"] * k if head == "expr" else ["{}"] * k + ["{:.6f}"] * k
    return fmt


def csv_lines(rows: FinalRows, heads: Sequence[str]) -> Iterator[str]:
    """predictions.csv's lines for ``rows`` (after ``csv_header``)."""
    fmt = _csv_formats(heads)
    for i in range(len(rows)):
        vals = [rows.start + i + 1, float(rows.times[i]), int(rows.faces[i])]
        for head in heads:
            m, d = rows.merged[head], rows.decisions[head]
            if head == "va":
                vals += [float(x) for x in d[i]]
            elif head == "expr":
                vals += [HEAD_LABELS["expr"][int(d[i])]] + [float(x) for x in m[i]]
            else:
                vals += [int(x) for x in d[i]] + [float(x) for x in m[i]]
        yield ",".join(f.format(v) for f, v in zip(fmt, vals))


def predictions_csv(pred: VideoPrediction) -> Iterator[str]:
    """Lines of predictions.csv for a whole prediction."""
    yield csv_header(list(pred.merged))
    yield from csv_lines(pred.rows(), list(pred.merged))


from abaw_rt.pipeline.plot import PLOT_BINS, PlotRecord, _envelope, plot_png  # noqa: E402,F401 (plot.png; re-exported)


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


class OutputFolder:
    """One video's output folder, written as its frames become final (a sink: ``put``, then ``close``).

    Files: ``<name>.VA.txt`` / ``.EXPR.txt`` / ``.AU.txt`` (``heads``), ``predictions.csv``, ``report.json`` and
    ``plot.png``. Rows are appended to files in a hidden staging folder beside ``<out_dir>/<name>``;
    ``close`` writes the report and the plot and renames the folder into place. Predictions that are not
    finite (NaN, inf: broken weights) are refused, and nothing is left. Several processes may write the same
    output at once: each result lands whole (the last one stays), and staging folders of killed runs go.

    Args:
        out_dir: the folder of per-video folders (``check_out_dir`` has proven it writable).
        name: the video's output name.
        source: the video (for messages).
        heads: the heads to write (others in the rows are ignored).
        plot: also draw plot.png (from a compact per-frame record).
    """

    def __init__(self, out_dir: Path, name: str, source: Path, heads: Sequence[str], plot: bool = True):
        self.out_dir, self.name, self.source = Path(out_dir), name, Path(source)
        self.final = self.out_dir / name
        if name in ("", ".", "..") or any(c in name for c in "/\\\0") or self.final.parent != self.out_dir:
            raise AbawRtError(f"output name {name!r}: not a plain name inside the output folder '{self.out_dir}'")
        self.heads = list(heads)
        self.plot = PlotRecord(self.heads) if plot else None
        self.frames = 0
        self.staging: Path | None = None
        self._files: dict[str, object] = {}

    def _open(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)  # live --out: made when the first frame is final
            clean_stale(self.out_dir, self.name)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.name}.partial-{_owner()}-", dir=self.out_dir))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.staging, 0o777 & ~umask)  # mkdtemp makes 0700; give the folder the user's usual mode
            for head in self.heads:
                self._start(f"{self.name}.{ABAW_TASK[head]}.txt", abaw_header(head))
            self._start("predictions.csv", csv_header(self.heads))
        except OSError as exc:
            self.abort()
            raise AbawRtError(f"output folder '{self.final}': cannot write ({exc.strerror or exc})") from None

    def _start(self, file: str, header: str) -> None:
        f = self._files[file] = open(self.staging / file, "w", encoding="utf-8", newline="\n")
        f.write(header + "\n")

    def put(self, rows: FinalRows, *_) -> None:
        """Append final rows (frames must come in order, each once)."""
        if rows.start != self.frames:
            raise AbawRtError(f"output '{self.final}': rows from frame {rows.start + 1}, expected {self.frames + 1} "
                              "(pipeline bug)")
        check_finite(self.source, rows, self.heads)
        if self.staging is None:
            self._open()
        try:
            for head in self.heads:
                self._write(f"{self.name}.{ABAW_TASK[head]}.txt", abaw_lines(head, rows.decisions[head]))
            self._write("predictions.csv", csv_lines(rows, self.heads))
        except OSError as exc:
            self.abort()
            raise AbawRtError(f"output folder '{self.final}': cannot write ({exc.strerror or exc})") from None
        if self.plot is not None:
            self.plot.put(rows)
        self.frames += len(rows)

    def _write(self, file: str, lines: Iterable[str]) -> None:
        f = self._files[file]
        for line in lines:
            f.write(line)
            f.write("\n")

    def close(self, report: dict) -> Path:
        """Write report.json (and plot.png), and move the folder into place; returns it."""
        if self.staging is None:
            self._open()
        try:
            for f in self._files.values():
                f.flush()
                os.fsync(f.fileno())
                f.close()
            files = list(self._files)
            self._files = {}
            if self.plot is not None and self.frames:
                atomic_write_bytes(self.staging / "plot.png", self.plot.png(self.name))
                files.append("plot.png")
            files.append("report.json")
            report["outputs"] = {"folder": str(self.final), "files": files}
            atomic_write_bytes(self.staging / "report.json", (json.dumps(report, indent=1) + "\n").encode())
            _swap_into_place(self.staging, self.final)
        except OSError as exc:
            raise AbawRtError(f"output folder '{self.final}': cannot write ({exc.strerror or exc})") from None
        finally:
            self.abort()
        return self.final

    def reset(self) -> None:
        """Start again from frame 0 (the run is being redone): what was written so far is dropped."""
        self.abort()
        self.frames = 0
        self.plot = PlotRecord(self.heads) if self.plot is not None else None

    def abort(self) -> None:
        """Remove the staging folder (an interrupted or failed run leaves nothing)."""
        for f in self._files.values():
            with contextlib.suppress(OSError):
                f.close()
        self._files = {}
        if self.staging is not None and self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None


def write_outputs(out_dir: Path, pred: VideoPrediction, plot: bool = True) -> Path:
    """Write one whole video's files into ``<out_dir>/<name>/`` (``OutputFolder`` with one put); returns that folder."""
    folder = OutputFolder(out_dir, pred.name, pred.source, list(pred.merged), plot)
    try:
        folder.put(pred.rows())
        return folder.close(pred.report)
    finally:
        folder.abort()


def check_finite(source: Path, rows: FinalRows, heads: Sequence[str]) -> None:
    """Refuse NaN / inf predictions (a model with broken weights, or one that overflows in fp16)."""
    for head in heads:
        bad = ~np.isfinite(np.asarray(rows.merged[head], dtype=np.float64))
        if bad.any():
            frame = rows.start + int(np.argwhere(bad)[0][0]) + 1
            raise AbawRtError(
                f"video '{source}': the model's {head} outputs are not finite (NaN or inf) on "
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
