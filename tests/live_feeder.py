"""Test helper: re-encode a video (and its audio) as MPEG-TS on stdout at real-time pace, like a live encoder.

    python tests/live_feeder.py VIDEO [--speed 1.0]

Writes ``frames N`` to stderr at the end (the frames sent).
"""

from __future__ import annotations

import sys
import time

import av


def feed(path: str, speed: float = 1.0) -> int:
    src = av.open(path)
    vin = src.streams.video[0]
    ain = src.streams.audio[0] if src.streams.audio else None
    out = av.open(sys.stdout.buffer, "w", format="mpegts")
    vout = out.add_stream("mpeg2video", rate=vin.average_rate or 25)
    vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
    vout.bit_rate = 4_000_000
    aout = out.add_stream("mp2", rate=ain.codec_context.sample_rate) if ain is not None else None
    start, sent = time.monotonic(), 0
    for packet in src.demux(*[s for s in (vin, ain) if s is not None]):
        for frame in packet.decode():
            if packet.stream is vin:
                due = start + float(frame.time) / speed
                while (delay := due - time.monotonic()) > 0:
                    time.sleep(delay)
                frame.pict_type = av.video.frame.PictureType.NONE
                for p in vout.encode(frame.reformat(format="yuv420p")):
                    out.mux(p)
                sent += 1
            else:
                frame.pts = None
                for p in aout.encode(frame):
                    out.mux(p)
        sys.stdout.buffer.flush()
    for s in (vout, aout):
        if s is not None:
            for p in s.encode(None):
                out.mux(p)
    out.close()
    sys.stdout.buffer.flush()
    return sent


if __name__ == "__main__":
    speed = float(sys.argv[sys.argv.index("--speed") + 1]) if "--speed" in sys.argv else 1.0
    n = feed(sys.argv[1], speed)
    print(f"frames {n}", file=sys.stderr)
