"""Output folders under stress: staging folders left by killed runs, two processes writing one output at once,
a previous result that cannot be moved aside, and non-finite predictions."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from abaw_rt.errors import AbawRtError
from abaw_rt.pipeline import outputs
from abaw_rt.pipeline.outputs import VideoPrediction, check_out_dir, write_outputs

ROOT = Path(__file__).resolve().parents[1]


def prediction(name: str = "clip", n: int = 6, marker: object = 0, value: float = 0.25) -> VideoPrediction:
    va = np.full((n, 2), value, np.float32)
    return VideoPrediction(name=name, source=Path(f"{name}.mp4"), frame_times=np.arange(n) / 25.0,
                           face_found=np.ones(n, bool), merged={"va": va}, decisions={"va": va},
                           report={"marker": marker})


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leftover(folder: Path, age_s: float = 0.0) -> Path:
    folder.mkdir()
    (folder / "predictions.csv").write_text("frame\n1\n")
    if age_s:
        t = time.time() - age_s
        os.utime(folder, (t, t))
    return folder


def test_staging_folders_of_killed_runs_are_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    host, dead = outputs._host(), dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = [
            leftover(out / f".clip.partial-{dead}@{host}-abcd1234"),  # SIGKILLed writer
            leftover(out / f".clip.old-{dead}@{host}-0a1b2c3d"),  # killed between the two renames
            leftover(out / ".clip.partial-zz12ab34", age_s=2 * 3600),  # an older abaw-rt's, 2 h old
            leftover(out / ".clip.partial-1@elsewhere-qq11ww22", age_s=2 * 3600),  # another host's
        ]
        kept = [
            leftover(out / f".clip.partial-{sleeper.pid}@{host}-live1234"),  # a writer still running
            leftover(out / ".clip.partial-yy12ab34"),  # unknown owner, recent: maybe still writing
        ]
        other = leftover(out / f".other.partial-{dead}@{host}-abcd5678")
        write_outputs(out, prediction(), plot=False)
        assert all(not p.exists() for p in gone) and all(p.exists() for p in kept)
        assert other.exists()  # writing 'clip' touches only clip's leftovers...
        check_out_dir(out)
        assert not other.exists()  # ...and every run's start cleans them all
        assert sorted(p.name for p in kept) == hidden(out)
    finally:
        sleeper.kill()
        sleeper.wait()


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from tests.test_reliability_outputs import prediction
    from abaw_rt.pipeline.outputs import write_outputs
    out, me = Path(sys.argv[1]), int(sys.argv[2])
    while not (out / "go").exists():
        time.sleep(0.001)
    for i in range(40):
        write_outputs(out, prediction(marker=[me, i], value=me / 10), plot=False)
    print("done")
    """
)


def test_two_processes_writing_one_output_at_once(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(k), str(ROOT)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    time.sleep(0.5)  # both started (a head start changes nothing: each waits for 'go')
    (out / "go").touch()
    results = [p.communicate(timeout=120) for p in procs]
    for p, (so, se) in zip(procs, results):
        assert p.returncode == 0 and so.strip() == "done", se[-2000:]
    assert hidden(out) == []  # no .clip.partial-* / .clip.old-* left behind
    folder = out / "clip"
    assert sorted(os.listdir(folder)) == ["clip.VA.txt", "predictions.csv", "report.json"]
    marker = json.loads((folder / "report.json").read_text())["marker"]
    assert marker[1] == 39  # the last write of one of them, whole: its VA file is that writer's too
    assert (folder / "clip.VA.txt").read_text().splitlines()[1] == f"{marker[0] / 10:.6f},{marker[0] / 10:.6f}"


def test_a_previous_result_that_cannot_be_moved_aside_leaves_nothing_behind(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    write_outputs(out, prediction(marker="first"), plot=False)
    final = out / "clip"
    real = {"rename": os.rename, "replace": os.replace}
    refused = {
        "the previous result cannot be moved aside": lambda src, dst: Path(src) == final,
        "the new result cannot be moved into place": lambda src, dst: Path(dst) == final and ".partial-" in str(src),
    }
    for case, refuses in refused.items():
        def fake(kind):
            def move(src, dst, *a, **k):
                if refuses(src, dst):
                    raise OSError(errno.EBUSY, "Device or resource busy", str(src))
                return real[kind](src, dst, *a, **k)
            return move

        for kind in real:
            monkeypatch.setattr(outputs.os, kind, fake(kind))
        with pytest.raises(AbawRtError, match="cannot write"):
            write_outputs(out, prediction(marker="second"), plot=False)
        monkeypatch.undo()
        assert hidden(out) == [], case
        assert json.loads((final / "report.json").read_text())["marker"] == "first", case


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_predictions_are_refused_and_nothing_is_written(tmp_path, bad):
    out = tmp_path / "out"
    out.mkdir()
    pred = prediction()
    pred.merged["va"][3, 1] = bad
    with pytest.raises(AbawRtError, match=r"va outputs are not finite .* 1 frame\(s\), first frame 4"):
        write_outputs(out, pred, plot=False)
    assert list(out.iterdir()) == []
