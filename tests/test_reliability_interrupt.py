"""Reliability under interruption and full disks: SIGINT / SIGTERM mid-video, a writer that runs out of space.

An interrupted `abaw-rt infer` leaves every video either with its complete previous outputs or with none
(never a half-written folder), exits 130 (SIGINT) or 143 (SIGTERM) with one line on stderr, and a re-run
overwrites cleanly. A full disk is one clear error and leaves no file behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

pytest.importorskip("av", reason="the video pipeline needs PyAV: pip install 'abaw-rt[video]'")
pytest.importorskip("torch")

import abaw_rt.io as io_module  # noqa: E402
from abaw_rt.cli import app  # noqa: E402
from abaw_rt.model.config import TINY, ModelConfig  # noqa: E402
from abaw_rt.pipeline import synthetic as syn  # noqa: E402
from tests.reliability import assert_clean_failure, files_under, snapshot  # noqa: E402

cli = CliRunner()
LONG = 2500  # frames of the video that gets interrupted (several seconds of work on 2 cores)


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> dict:
    from abaw_rt.checkpoint import init_checkpoint

    d = tmp_path_factory.mktemp("rel_interrupt")
    k = syn.tiny_kit(d / "kit")
    k["dir"] = d
    cfg = ModelConfig(features=k["features"], heads=("va", "expr", "au"), **TINY)
    k["ckpt"] = init_checkpoint(d / "av.safetensors", cfg, seed=1, window=16, stride=10)
    k["short"] = syn.write_video(d / "short.mp4", frames=40)
    k["other"] = syn.write_video(d / "other.mp4", frames=30, vfr=True)
    k["long"] = syn.write_video(d / "long.mp4", frames=LONG)
    return k


def _args(kit, videos, out, *extra) -> list[str]:
    return ["infer", *map(str, videos), "--out", str(out), "--checkpoint", str(kit["ckpt"]), "--backend", "torch",
            "--extractors", str(kit["spec"]), "--detector", str(kit["detector"]), *extra]


def _has_open(pid: int, path: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watches /proc for the open video")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_video_keeps_complete_outputs_or_none(kit, tmp_path, signum):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    clip, first = inputs / "clip.mp4", inputs / "first.mp4"
    shutil.copy(kit["short"], clip)
    res = cli.invoke(app, _args(kit, [clip], out))  # an earlier run's complete outputs for 'clip'
    assert res.exit_code == 0, res.output
    previous = snapshot(out / "clip")
    shutil.copy(kit["long"], clip)  # the next run meets a long 'clip', after a short 'first'
    shutil.copy(kit["short"], first)
    log_out, log_err = open(tmp_path / "stdout", "w"), open(tmp_path / "stderr", "w")
    cmd = [sys.executable, "-c", "from abaw_rt.cli import run; run()", *_args(kit, [first, clip], out, "--no-plot")]
    proc = subprocess.Popen(cmd, stdout=log_out, stderr=log_err, cwd=Path(__file__).parents[1])  # this checkout
    try:
        deadline = time.monotonic() + 120
        while not ((out / "first").is_dir() and _has_open(proc.pid, clip.resolve())):
            assert proc.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "never got to decoding the long video"
            time.sleep(0.02)
        time.sleep(0.3)  # well inside the long video
        assert proc.poll() is None, "finished before the signal: make the long video longer"
        proc.send_signal(signum)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log_out.close()
        log_err.close()
    stderr = (tmp_path / "stderr").read_text()
    assert code == 128 + signum, stderr
    assert "Traceback" not in stderr
    said = "interrupted" if signum == signal.SIGINT else "terminated"
    assert [ln for ln in stderr.splitlines() if ln.strip()] == [said]
    assert snapshot(out / "clip") == previous  # the earlier complete outputs, untouched
    report = json.loads((out / "first" / "report.json").read_text())
    assert report["frames"] == 40  # the video finished before the signal is complete
    assert sorted(p.name for p in out.iterdir()) == ["clip", "first"]  # no staging folder left
    # a re-run overwrites cleanly
    shutil.copy(kit["other"], clip)
    res = cli.invoke(app, _args(kit, [clip], out, "--json"))
    assert res.exit_code == 0, res.output
    assert json.loads((out / "clip" / "report.json").read_text())["frames"] == 30
    assert len((out / "clip" / "predictions.csv").read_text().splitlines()) == 31
    assert sorted(p.name for p in out.iterdir()) == ["clip", "first"]


def test_signal_between_the_two_renames_is_held_until_both_are_done(tmp_path, monkeypatch):
    """The one moment an interrupt could leave no visible folder (old moved away, new not yet in place)."""
    import abaw_rt.pipeline.outputs as outputs

    final, staging = tmp_path / "clip", tmp_path / ".clip.partial-x"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    real_replace = os.replace
    calls = []

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C right after the old folder was moved away

    monkeypatch.setattr(outputs.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        outputs._swap_into_place(staging, final)
    assert len(calls) == 2 and (final / "new.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]  # the old copy is gone, nothing hidden left
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- full disk ------------------------------------------------------------------------------------------------
class _FullDisk:
    """Stands in for the ``os`` module inside abaw_rt.io (every atomic write): files opened for writing take ``room`` bytes
    in all, then raise ENOSPC, as a full disk does (partially written files stay until someone removes them)."""

    def __init__(self, room: int):
        self.room = room
        self.__dict__.update({k: getattr(os, k) for k in ("umask", "chmod", "fsync", "replace", "close")})

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, mode="r", *args, **kwargs):
        f = os.fdopen(fd, mode, *args, **kwargs)
        disk = self

        class Writer(SimpleNamespace):
            def write(self, data):
                n = min(len(data), disk.room)
                f.write(data[:n])
                disk.room -= n
                if n < len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return n

            def __getattr__(self, name):
                return getattr(f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

        return Writer()


def test_full_disk_while_writing_outputs(kit, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert cli.invoke(app, _args(kit, [kit["other"]], out)).exit_code == 0
    before = snapshot(out)
    monkeypatch.setattr(io_module, "os", _FullDisk(room=6000))  # the CSV does not fit
    res = cli.invoke(app, _args(kit, [kit["short"]], out))
    assert_clean_failure(res, str(out / "short"), "No space left on device")
    assert snapshot(out) == before  # the other video's outputs intact; nothing of 'short', no staging files


def test_full_disk_while_writing_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(io_module, "os", _FullDisk(room=1000))
    res = cli.invoke(app, ["init-checkpoint", str(tmp_path / "new.safetensors")])
    assert_clean_failure(res, "No space left on device", "[ENOSPC]")
    assert files_under(tmp_path) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 96 KiB tmpfs (needs root and a working 'mount'; skipped elsewhere)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_full_disk_infer_and_export(kit, tiny_tmpfs, tmp_path):
    medium = syn.write_video(tmp_path / "medium.mp4", frames=300)  # its predictions.csv alone is ~130 KB
    res = cli.invoke(app, _args(kit, [medium], tiny_tmpfs / "out"))
    assert_clean_failure(res, "medium", "No space left on device")
    assert files_under(tiny_tmpfs) == []
    ckpt = tmp_path / "ck.safetensors"
    shutil.copy(kit["ckpt"], ckpt)
    res = cli.invoke(app, ["export", str(ckpt), "-p", "fp32", "--out-dir", str(tiny_tmpfs)])
    assert_clean_failure(res, "ck.fp32.onnx")
    assert files_under(tiny_tmpfs) == []
    res = cli.invoke(app, ["init-checkpoint", str(tiny_tmpfs / "big.safetensors"), "--size", "tiny"])
    assert_clean_failure(res, "No space left on device")
    assert files_under(tiny_tmpfs) == []
