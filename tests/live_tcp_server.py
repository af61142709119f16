"""Test helper: a tcp:// server sending MPEG-TS sessions of a video at real-time pace, one per connection.

    python tests/live_tcp_server.py VIDEO [--sessions 2] [--speed 1.0] [--hold 0]

Prints ``port P`` on stdout once listening; accepts a connection, relays ``live_feeder.py``'s MPEG-TS into it,
closes it (the stream "breaks"; with ``--hold S`` it first stays open S seconds
without sending: a stalled stream), then accepts the next. Closes the listening socket after the last session
(so a later connect is refused), and writes ``frames N1 N2 ...`` (frames sent per session) to stderr.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

FEEDER = Path(__file__).with_name("live_feeder.py")


def serve(video: str, sessions: int, speed: float, hold: float = 0.0) -> list[int]:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(60)
    print(f"port {server.getsockname()[1]}", flush=True)
    sent = []
    for _ in range(sessions):
        try:
            conn, _addr = server.accept()
        except socket.timeout:
            break
        feeder = subprocess.Popen([sys.executable, str(FEEDER), video, "--speed", str(speed)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            while chunk := feeder.stdout.read(4096):
                conn.sendall(chunk)
        except OSError:  # the client went away: the feeder would block on a full pipe
            feeder.kill()
        time.sleep(hold)
        conn.close()
        sent.append(int(feeder.stderr.read().decode().split()[-1]))
        feeder.wait()
    server.close()
    return sent


if __name__ == "__main__":
    args = sys.argv[1:]
    opt = lambda name, default: type(default)(args[args.index(name) + 1]) if name in args else default  # noqa: E731
    counts = serve(args[0], opt("--sessions", 2), opt("--speed", 1.0), opt("--hold", 0.0))
    print("frames " + " ".join(map(str, counts)), file=sys.stderr, flush=True)
