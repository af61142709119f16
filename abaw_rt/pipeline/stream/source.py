"""Pipeline layer, live stage 0: what ``abaw-rt live SOURCE`` names, opened as a PyAV container.

A camera device (``/dev/video0``: FFmpeg's v4l2 input; ``camera:NAME`` on any platform: v4l2, avfoundation or dshow
with that device, e.g. ``camera:0``; ``video=NAME``: dshow), a network
URL (rtsp, rtmp, udp, srt, http(s)), ``-`` for MPEG-TS or Matroska on stdin, or a media file (played at its
own pace with ``realtime``). Every failure to open is one ``AbawRtError`` naming the source.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from abaw_rt.errors import AbawRtError, require_module

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp", "http", "https")


@dataclass(frozen=True)
class LiveSource:
    """A parsed SOURCE argument."""

    text: str  # as given
    kind: str  # "camera", "url", "stdin" or "file"

    @property
    def name(self) -> str:
        """Output name for --out files."""
        if self.kind == "file":
            return Path(self.text).stem
        return {"stdin": "stdin", "camera": "camera"}.get(self.kind, "stream")


def parse_source(text: str) -> LiveSource:
    """Classify SOURCE; a file or camera that does not exist is refused here, before any model is loaded."""
    if text == "-":
        return LiveSource(text, "stdin")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in URL_SCHEMES:
        return LiveSource(text, "url")
    if scheme:
        raise AbawRtError(f"source '{text}': unknown scheme '{scheme}://' (expected one of {', '.join(URL_SCHEMES)})")
    if text.startswith(("/dev/video", "video=", "camera:")):
        device = camera_device(text)
        if not device.strip(":="):
            raise AbawRtError(f"source '{text}': no camera name (e.g. camera:0, /dev/video0)")
        if device.startswith("/dev/") and not Path(device).exists():
            raise AbawRtError(f"source '{text}': no such camera (no device file {device})")
        return LiveSource(text, "camera")
    p = Path(text)
    if not p.exists():
        raise AbawRtError(f"source '{text}': no such file, camera or URL")
    if p.is_dir():
        raise AbawRtError(f"source '{text}': is a folder, expected a media file, camera, URL or '-'")
    return LiveSource(text, "file")


def _camera_format() -> str:
    return {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}.get(sys.platform, "v4l2")


def camera_device(text: str) -> str:
    """What FFmpeg's camera input of this platform opens for SOURCE: ``camera:N`` is ``/dev/videoN`` (v4l2),
    ``N`` (avfoundation: video device N; ``N:M`` adds audio device M) or ``video=N`` (dshow); other forms as given."""
    if not text.startswith("camera:"):
        return text
    name = text[len("camera:"):]
    fmt = _camera_format()
    if fmt == "v4l2":
        return f"/dev/video{name}" if name.isdigit() else name
    return f"video={name}" if fmt == "dshow" and not name.startswith("video=") else name


def open_container(source: LiveSource, timeout: float):
    """The PyAV input container for ``source``; ``timeout`` seconds for opening and for each read.

    Raises:
        AbawRtError: unreachable URL, timeout, no such camera, not media (e.g. stdin that is not MPEG-TS/Matroska).
    """
    av = require_module("av", "video")
    what, fmt, options = source.text, None, {}
    if source.kind == "stdin":
        what = "pipe:0"
    elif source.kind == "camera":
        what, fmt = camera_device(source.text), _camera_format()
    elif source.kind == "url":
        us = str(int(timeout * 1_000_000))
        options = {"rw_timeout": us} if source.text.startswith(("http", "tcp")) else {"timeout": us}
        if source.text.startswith("rtsp"):
            options = {"timeout": us, "rtsp_transport": "tcp"}
    try:
        return av.open(what, format=fmt, options=options, timeout=(timeout, timeout), metadata_errors="replace")
    except av.error.ExitError:
        raise AbawRtError(f"source '{source.text}': no data within {timeout:g} s (--timeout)") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).split(":")[0]
        raise AbawRtError(f"source '{source.text}': cannot open ({reason})") from None
