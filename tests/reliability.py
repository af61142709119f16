"""Helpers of the reliability suite (tests/test_reliability_*.py): the clean-failure contract and test media.

The contract every verb keeps on bad input: exit code 2, exactly one line on stderr that starts with
``error:`` and names the thing, no traceback, and no output file left behind.
"""

from __future__ import annotations

import fractions
import struct
from pathlib import Path

import numpy as np


def assert_clean_failure(res, *needles: str, code: int = 2) -> str:
    """A CliRunner result that failed the way users are promised; returns the one stderr line."""
    assert res.exit_code == code, f"exit {res.exit_code}, expected {code}:\n{res.output}\n{res.exception!r}"
    assert "Traceback" not in res.output, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{res.stderr}"
    line = lines[0]
    assert line.startswith("error: "), line
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


def files_under(folder: Path) -> list[str]:
    """Every file (hidden ones too) below ``folder``, relative; [] when the folder does not exist."""
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def snapshot(folder: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file below ``folder`` (to prove that a failed run changed nothing)."""
    return {name: (Path(folder) / name).read_bytes() for name in files_under(folder)}


def top_level_atoms(path: Path) -> dict[str, int]:
    """Offsets of an MP4's top-level boxes ('ftyp', 'moov', 'mdat', ...), first occurrence each."""
    data = Path(path).read_bytes()
    atoms, pos = {}, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        atoms.setdefault(kind.decode("latin-1"), pos)
        if size < 8:
            break
        pos += size
    return atoms


def remux_faststart(src: Path, dst: Path) -> Path:
    """The same streams with the MP4 index ('moov') moved to the front, as web-ready files have it."""
    return remux(src, dst, options={"movflags": "faststart"})


def remux(src: Path, dst: Path, options: dict | None = None, rotation: tuple[int, bool] | None = None) -> Path:
    """The same packets in a new file (muxer ``options``; ``rotation``: (degrees, hflip) as a display matrix
    on the video stream, as a phone writes it, without re-encoding)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", options=options or {}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for s in i.streams.video if rotation is not None else ():
            streams[s.index].set_display_rotation(rotation[0], hflip=rotation[1])
        for packet in i.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            o.mux(packet)
    return Path(dst)


def audio_only(path: Path) -> Path:
    """An MP4 holding only an AAC track."""
    import av

    with av.open(str(path), "w", format="mp4") as c:
        a = c.add_stream("aac", rate=16000, layout="mono")
        for k in range(8):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = 16000, k * 1024, fractions.Fraction(1, 16000)
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    return Path(path)


def zero_frame_video(path: Path) -> Path:
    """A Matroska file whose video stream holds no frame (and a short audio track)."""
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height = 64, 48
        a = c.add_stream("aac", rate=44100, layout="stereo")
        for k in range(5):
            f = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
            f.sample_rate, f.pts, f.time_base = 44100, k * 1024, fractions.Fraction(1, 44100)
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    return Path(path)


def truncated_faststart(path: Path, tmp: Path) -> Path:
    """An MP4 with its index up front (faststart) cut in half: opens fine, most frames are gone."""
    import av

    full = tmp / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height = 160, 120
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 4, np.uint8), format="rgb24")
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def infer_kit(folder: Path, window: int, stride: int) -> dict:
    """A generated detector and extractors (``syn.tiny_kit``) plus two checkpoints that match them:
    ``av`` (visual + audio, all heads) and ``vis`` (visual only, EXPR), with the given segment window/stride."""
    from abaw_rt.checkpoint import init_checkpoint
    from abaw_rt.model.config import TINY, FeatureGroup, ModelConfig
    from abaw_rt.pipeline import synthetic as syn

    k = syn.tiny_kit(folder / "kit")
    k["dir"] = folder
    av_cfg = ModelConfig(features=k["features"], heads=("va", "expr", "au"), **TINY)
    k["av"] = init_checkpoint(folder / "av.safetensors", av_cfg, seed=1, window=window, stride=stride)
    vis_cfg = ModelConfig(features=(FeatureGroup("vis0", 8, "visual"),), heads=("expr",), **TINY)
    k["vis"] = init_checkpoint(folder / "vis.safetensors", vis_cfg, seed=2, window=window, stride=stride)
    return k


def rgb_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as stored (RGB, no display matrix applied)."""
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def write_frames(path: Path, frames: list[np.ndarray], fps: int = 25, rotation: int | None = None,
                 hflip: bool = False, gop: int | None = None, crf: int = 12) -> Path:
    """Encode RGB frames with libx264 (yuv420p), optionally with a display matrix (``rotation`` degrees
    counter-clockwise, PyAV's sign, then ``hflip``) as phones write it, and a keyframe every ``gop`` frames."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"crf": str(crf), "preset": "ultrafast"}
        if gop:
            v.codec_context.gop_size = gop
        if rotation is not None:
            v.set_display_rotation(rotation, hflip=hflip)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, fps)
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    return Path(path)


def rotated_copy(src: Path, dst: Path, rotation: int) -> Path:
    """``src`` stored as a phone stores portrait video: the pixels turned clockwise by ``rotation`` degrees and
    a display matrix that turns them back (upright again for any player that honours it)."""
    return write_frames(dst, [np.rot90(f, k=-(rotation // 90)) for f in rgb_frames(src)], rotation=rotation)


def damaged_copy(src: Path, dst: Path, at: float = 0.5, size: int = 2000, seed: int = 0) -> Path:
    """``src`` (an MP4 with its index at the end) with ``size`` random bytes written over its frame data at
    ``at`` (0..1 of the 'mdat' box): the index is intact, some frames in the middle cannot be decoded."""
    data = bytearray(Path(src).read_bytes())
    atoms = top_level_atoms(src)
    lo, hi = atoms["mdat"] + 16, atoms.get("moov", len(data))
    if hi < lo:  # index up front: the frame data runs to the end of the file
        hi = len(data)
    pos = int(lo + (hi - lo) * at)
    data[pos : pos + size] = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


def multi_audio_video(path: Path, frames: int = 25, default: int = 1) -> Path:
    """A Matroska file with a video track and three audio tracks: track 0 silent, 1 a loud tone, 2 a quiet
    tone; ``default`` carries the 'default' disposition (the track players and FFmpeg pick)."""
    import av

    tones = {0: 0.0, 1: 0.5, 2: 0.05}
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        tracks = [c.add_stream("aac", rate=16000, layout="mono") for _ in tones]
        for k, a in enumerate(tracks):
            a.disposition = av.stream.Disposition.default if k == default else av.stream.Disposition(0)
        t = np.arange(1024) / 16000
        chunk = 0
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, 25)
            for p in v.encode(frame):
                c.mux(p)
            while chunk * 1024 / 16000 < (i + 1) / 25:  # audio interleaved with the video, track by track
                for k, a in enumerate(tracks):
                    wave = (tones[k] * np.sin(2 * np.pi * 440 * (t + chunk * 1024 / 16000))).astype(np.float32)
                    f = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
                    f.sample_rate, f.pts, f.time_base = 16000, chunk * 1024, fractions.Fraction(1, 16000)
                    for p in a.encode(f):
                        c.mux(p)
                chunk += 1
        for s in (v, *tracks):
            for p in s.encode():
                c.mux(p)
    return Path(path)


def with_rotation(src: Path, dst: Path, rotation: int, hflip: bool = False) -> Path:
    """The same packets (audio too) remuxed with a display matrix on the video stream: what a phone writes,
    without re-encoding (the stored pixels are those of ``src``)."""
    return remux(src, dst, rotation=(rotation, hflip))


def set_mp4_matrix(data: bytes, matrix) -> bytes:
    """An MP4 whose first track header ('tkhd', the video track here) carries ``matrix`` (9 int32) as its
    display matrix; other containers come back unchanged."""
    import struct

    pos = data.find(b"tkhd")
    if pos < 4:
        return data
    start = pos - 4 + (60 if data[pos + 4] == 1 else 48)  # box start + header and the version 1 / 0 fields
    if start + 36 > len(data):
        return data
    return data[:start] + struct.pack(">9i", *matrix) + data[start + 36 :]
