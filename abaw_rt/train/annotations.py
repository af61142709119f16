"""Training layer: read and write ABAW (Aff-Wild2) per-video annotation files. Torch-free.

One ``.txt`` file per video (or per person: ``<video>_left.txt`` / ``<video>_right.txt`` share one video),
a header line, then one line per frame: line i after the header is frame i (1-based, the crop
``<video>/0000i.jpg``). Zhou et al. 2023, the ABAW5 task definitions:

- VA: ``valence,arousal`` floats in [-1, 1]; -5 marks an invalid frame (either value -5 invalidates it).
- EXPR: one integer 0..7 (Neutral, Anger, Disgust, Fear, Happiness, Sadness, Surprise, Other); -1 invalid.
- AU: 12 comma-separated 0/1 (AU1, AU2, AU4, AU6, AU7, AU10, AU12, AU15, AU23, AU24, AU25, AU26); -1 invalid.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.io import atomic_write_bytes
from abaw_rt.model.config import HEAD_LABELS

# The ABAW5 annotation folder of each task ("6th ABAW Annotations/<folder>/{Train_Set,Validation_Set}").
TASK_FOLDERS = {
    "va": "VA_Estimation_Challenge",
    "expr": "EXPR_Classification_Challenge",
    "au": "AU_Detection_Challenge",
}
HEADERS = {"va": "valence,arousal", "expr": ",".join(HEAD_LABELS["expr"]), "au": ",".join(HEAD_LABELS["au"])}
INVALID = {"va": -5.0, "expr": -1, "au": -1.0}  # the marker of an invalid frame in files and in target arrays
PERSON_SUFFIXES = ("_left", "_right")  # two-person videos: one label file per person, one video and audio track


def base_video(name: str) -> str:
    """The video a label file belongs to: ``video10_left`` -> ``video10``; other names unchanged."""
    for suffix in PERSON_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _norm_header(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def read_annotation(path: Path, task: str) -> np.ndarray:
    """Read one annotation file.

    Returns:
        va: (N, 2) float32 with -5 where invalid; expr: (N,) int64 with -1; au: (N, 12) float32 with -1.
        Row i is frame i + 1 (line i + 2 of the file).

    Raises:
        AbawRtError: naming the file and line: wrong header, wrong column count, unparsable or
        non-finite value, value out of range, no frames.
    """
    path = Path(path)
    if task not in HEADERS:
        raise AbawRtError(f"task {task!r}: expected one of {sorted(HEADERS)}")
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise AbawRtError(f"annotation '{path}': no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AbawRtError(f"annotation '{path}': unreadable ({exc})") from None
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines are harmless
    if not lines:
        raise AbawRtError(
            f"annotation '{path}': empty file, expected the header '{HEADERS[task]}' and one line per frame"
        )
    header = _norm_header(lines[0])
    if header != _norm_header(HEADERS[task]):
        other = [t for t, h in HEADERS.items() if _norm_header(h) == header]
        hint = f" (that is the {other[0].upper()} header)" if other else ""
        raise AbawRtError(
            f"annotation '{path}' line 1: header {lines[0].strip()[:80]!r}, "
            f"expected '{HEADERS[task]}' for {task.upper()}{hint}"
        )
    body = lines[1:]
    if not body:
        raise AbawRtError(f"annotation '{path}': header only, no frames")
    ncol = len(HEAD_LABELS[task]) if task != "expr" else 1
    rows = []
    for i, line in enumerate(body):
        parts = line.split(",")
        if len(parts) != ncol:
            raise AbawRtError(
                f"annotation '{path}' line {i + 2}: {len(parts)} column(s) {line.strip()[:60]!r}, expected {ncol}"
            )
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            bad = next(p for p in parts if not _is_number(p))
            raise AbawRtError(f"annotation '{path}' line {i + 2}: value {bad.strip()!r} is not a number") from None
    out = np.asarray(rows, dtype=np.float64).reshape(len(body), ncol)
    if task == "va":
        ok = np.all((out == INVALID["va"]) | ((out >= -1.0) & (out <= 1.0)), axis=1)
        want = "values in [-1, 1], or -5 for invalid"
    elif task == "expr":
        ok = (out[:, 0] == np.round(out[:, 0])) & (out[:, 0] >= -1) & (out[:, 0] <= 7)
        want = "an integer 0..7, or -1 for invalid"
    else:
        ok = np.all(np.isin(out, (0.0, 1.0, -1.0)), axis=1)
        want = "0 or 1 per AU, or -1 for invalid"
    finite = np.all(np.isfinite(out), axis=1)
    if not np.all(ok & finite):
        i = int(np.flatnonzero(~(ok & finite))[0])
        what = "a value that is not finite" if not finite[i] else f"expected {want}"
        raise AbawRtError(f"annotation '{path}' line {i + 2}: {body[i].strip()[:60]!r}, {what}")
    if task == "expr":
        return out[:, 0].astype(np.int64)
    if task == "va":
        out[np.any(out == INVALID["va"], axis=1)] = INVALID["va"]  # either -5 invalidates the frame
    return out.astype(np.float32)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def valid_frames(task: str, target: np.ndarray) -> np.ndarray:
    """Per-element validity: va (N,) frames; expr (N,); au (N, 12) elements."""
    if task == "va":
        return np.all(target != INVALID["va"], axis=-1)
    return target != INVALID[task]


def write_annotation(path: Path, task: str, target: np.ndarray) -> Path:
    """Write an annotation file in the ABAW format (atomically). Inverse of ``read_annotation``."""
    target = np.asarray(target)
    lines = [HEADERS[task]]
    if task == "va":
        lines += [",".join("-5" if v == INVALID["va"] else f"{v:.6f}" for v in row) for row in target.reshape(-1, 2)]
    elif task == "expr":
        lines += [str(int(v)) for v in target.reshape(-1)]
    else:
        lines += [",".join(str(int(v)) for v in row) for row in target.reshape(-1, len(HEAD_LABELS["au"]))]
    return atomic_write_bytes(Path(path), ("\n".join(lines) + "\n").encode())


def list_annotations(folder: Path) -> list[Path]:
    """The ``.txt`` files of one split folder, sorted by name.

    Raises:
        AbawRtError: the folder is missing or holds no ``.txt`` file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AbawRtError(f"annotation folder '{folder}': no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix == ".txt" and p.is_file())
    if not files:
        raise AbawRtError(f"annotation folder '{folder}': no .txt annotation files")
    return files


def group_by_video(names: Sequence[str]) -> dict[str, list[str]]:
    """Label-file stems grouped by their video (``_left`` and ``_right`` together), sorted."""
    groups: dict[str, list[str]] = {}
    for n in sorted(names):
        groups.setdefault(base_video(n), []).append(n)
    return groups
