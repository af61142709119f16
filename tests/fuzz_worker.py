"""Fuzz worker for tests/test_reliability_fuzz.py: runs `abaw-rt infer` on one file per request, in its own process.

The parent (``FuzzWorker``) sends one JSON request per line on stdin, ``{"video": ..., "out": ...}``, and reads
one JSON verdict per line on stdout. A case that hangs is killed from outside (the parent's per-file time
limit), and a crash of the decoder (a segfault in FFmpeg) kills only this process: both are verdicts too.

Verdicts:
    ok        exit 0 and complete outputs (predictions.csv with one row per frame, report.json)
    error     exit 2, one line on stderr starting with 'error:', no traceback, no file left in the output folder
    dirty     any other result: an unexpected exception, a traceback, several lines, files left behind
    hang      (parent) no verdict within the time limit
    died      (parent) the worker process ended without a verdict

Run by hand: ``python -m tests.fuzz_worker SPEC DETECTOR CHECKPOINT`` then type requests.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import traceback
from pathlib import Path


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def judge(res, out: Path, name: str) -> dict:
    """The verdict on one CliRunner result."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        tb = "".join(traceback.format_exception(res.exception))
        return {"status": "dirty", "why": f"unhandled {type(res.exception).__name__}", "detail": tb[-3000:]}
    if "Traceback" in res.output:
        return {"status": "dirty", "why": "traceback in the output", "detail": res.output[-3000:]}
    if res.exit_code == 0:
        folder = out / name
        csv, report = folder / "predictions.csv", folder / "report.json"
        if not csv.is_file() or not report.is_file():
            return {"status": "dirty", "why": "exit 0 without outputs", "detail": str(_files(out))}
        frames = json.loads(report.read_text())["frames"]
        rows = len(csv.read_text().splitlines()) - 1
        if rows != frames or frames < 1:
            return {"status": "dirty", "why": f"predictions.csv has {rows} rows for {frames} frames"}
        return {"status": "ok", "frames": frames}
    if res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        left = _files(out)
        if left:
            return {"status": "dirty", "why": "files left behind after an error", "detail": str(left)}
        return {"status": "error", "message": lines[0]}
    return {"status": "dirty", "why": f"exit {res.exit_code}", "detail": res.output[-3000:]}


def main(argv: list[str]) -> None:
    spec, detector, checkpoint = argv
    from typer.testing import CliRunner

    from abaw_rt.cli import app

    reply = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    cli = CliRunner()
    print(json.dumps({"status": "ready"}), file=reply)
    for line in sys.stdin:
        req = json.loads(line)
        video, out = Path(req["video"]), Path(req["out"])
        args = ["infer", str(video), "--out", str(out), "--checkpoint", checkpoint, "--backend", "torch",
                "--extractors", spec, "--detector", detector, "--no-plot"]
        try:
            verdict = judge(cli.invoke(app, args), out, req["name"])
        except BaseException as exc:  # the judge itself must never take the worker down
            verdict = {"status": "dirty", "why": f"worker: {exc!r}", "detail": traceback.format_exc()[-3000:]}
        print(json.dumps(verdict), file=reply)


class FuzzWorker:
    """The parent's handle on a worker process; restarts it after a hang or a crash."""

    def __init__(self, spec: Path, detector: Path, checkpoint: Path, log: Path):
        self.args = [sys.executable, "-m", "tests.fuzz_worker", str(spec), str(detector), str(checkpoint)]
        self.log = Path(log)
        self.proc = None
        self.restarts = 0

    def _start(self) -> None:
        root = Path(__file__).resolve().parents[1]
        self.proc = subprocess.Popen(self.args, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.log, "ab"), text=True, bufsize=1)
        first = self._read(120)
        if first is None or first.get("status") != "ready":
            raise RuntimeError(f"fuzz worker did not start: {first!r}; see {self.log}")

    def _read(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                line = self.proc.stdout.readline()
                return json.loads(line) if line else {"status": "died", "returncode": self.proc.wait()}

    def run(self, video: Path, out: Path, name: str, timeout: float) -> dict:
        """The verdict on one file, within ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps({"video": str(video), "out": str(out), "name": name}) + "\n")
        self.proc.stdin.flush()
        verdict = self._read(timeout)
        if verdict is None:
            self.close()
            self.restarts += 1
            return {"status": "hang", "why": f"no verdict within {timeout} s"}
        if verdict["status"] == "died":
            self.proc = None
            self.restarts += 1
        return verdict

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


if __name__ == "__main__":
    main(sys.argv[1:])
