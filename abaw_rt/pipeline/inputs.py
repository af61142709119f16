"""Pipeline layer: the command line's inputs, expanded into sources (video files and Aff-Wild2 image folders)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from abaw_rt.errors import AbawRtError
from abaw_rt.io import missing_reason
from abaw_rt.pipeline.faces import FaceChoice
from abaw_rt.pipeline.names import output_name

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
FRAME_IMAGE = re.compile(r"^(\d{5})\.(jpg|jpeg|png)$", re.IGNORECASE)  # Aff-Wild2 cropped_aligned: 00001.jpg
IMAGE_FOLDER_FPS = 30.0  # image folders carry no timestamps; frame times assume Aff-Wild2's usual 30 fps


@dataclass(frozen=True)
class Source:
    """One input: a video file, or an image folder of aligned face crops (00001.jpg, ...)."""

    path: Path
    kind: str  # "video" or "images"
    name: str  # output name

    @property
    def is_video(self) -> bool:
        return self.kind == "video"


def frame_images(folder: Path) -> dict[int, Path]:
    """{frame number: path} of the numbered frame images (00001.jpg, ...) directly in ``folder``."""
    found = {}
    for p in folder.iterdir():
        m = FRAME_IMAGE.match(p.name)
        if m and p.is_file():
            found[int(m.group(1))] = p
    return found


def collect_sources(paths: Sequence[Path], face: FaceChoice = FaceChoice.largest) -> list[Source]:
    """Expand the command line's inputs: video files, folders of videos, image folders, folders of image folders.

    Raises:
        AbawRtError: a path that does not exist, a folder with nothing to process, or two inputs with one name.
    """
    suffix = f"_{face.value}" if face in (FaceChoice.left, FaceChoice.right) else ""
    out: list[Source] = []
    for p in map(Path, paths):
        if not p.exists():
            raise AbawRtError(f"input '{p}': {missing_reason(p)}")
        if p.is_file():
            out.append(Source(p, "video", output_name(p.stem) + suffix))
            continue
        if frame_images(p):
            out.append(Source(p, "images", output_name(Path(os.path.abspath(p)).name) + suffix))
            continue
        entries = sorted(p.iterdir())
        videos = [e for e in entries if e.is_file() and e.suffix.lower() in VIDEO_SUFFIXES]
        folders = [e for e in entries if e.is_dir() and frame_images(e)]
        if not videos and not folders:
            raise AbawRtError(
                f"input folder '{p}': holds no videos ({', '.join(VIDEO_SUFFIXES[:4])}, ...) and no image folders "
                "of numbered frames (00001.jpg, ...)"
            )
        out += [Source(v, "video", output_name(v.stem) + suffix) for v in videos]
        out += [Source(f, "images", output_name(f.name) + suffix) for f in folders]
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AbawRtError(
            f"inputs: several inputs would write the same output name(s) {dupes}; pass them in separate runs"
        )
    if not out:
        raise AbawRtError("no input: give one or more videos or folders")
    return out
