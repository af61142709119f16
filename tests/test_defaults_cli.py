"""`abaw-rt infer VIDEO` with nothing else: the built-in defaults end to end, on the generated sample video."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from abaw_rt.cli import app

pytest.importorskip("av")
pytest.importorskip("cv2")
cli = CliRunner()
SECONDS, FPS = 10.0, 25


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "sample.mp4"
    res = cli.invoke(app, ["make-sample-video", str(path), "--seconds", str(SECONDS), "--fps", str(FPS)])
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture(scope="module")
def inferred(sample, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("out")
    res = cli.invoke(app, ["infer", str(sample), "--out", str(out), "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    folder = out / "sample"
    with open(folder / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"report": json.loads(res.stdout)["videos"][0], "folder": folder, "rows": rows}


def test_sample_video_has_a_face_and_a_voice(sample):
    from abaw_rt.pipeline.decode import probe

    info = probe(sample)
    assert info.has_audio
    assert info.duration == pytest.approx(SECONDS, abs=0.2)
    assert sample.stat().st_size < 1_000_000


def test_infer_with_defaults_writes_every_output(inferred):
    folder, report = inferred["folder"], inferred["report"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["plot.png", "predictions.csv", "report.json", "sample.EXPR.txt", "sample.VA.txt"]  # no AU
    frames = int(SECONDS * FPS)
    assert report["frames"] == frames
    assert len((folder / "sample.VA.txt").read_text().splitlines()) == frames + 1
    assert report["model"]["heads"] == ["va", "expr"]
    assert report["model"]["features"] == ["fer:visual:7", "logmel:audio:65"]
    assert Path(report["model"]["artefact"]).name == "demo.fp32.onnx"
    assert report["detector"].endswith("retinaface_mnet025.onnx")


def test_face_leaving_the_frame_is_flagged(inferred):
    from abaw_rt.defaults.sample import face_track

    found = np.array([r["face_found"] == "1" for r in inferred["rows"]])
    truth = np.array([face_track(i, len(found), 640, 360) is not None for i in range(len(found))])
    assert truth.mean() < 0.95 and found.mean() > 0.85  # about a second without a face, detected elsewhere
    # detection every 5th frame: flags may lag the true exit and entry by up to 4 frames
    assert np.mean(found == truth) > 0.95


def test_predictions_follow_the_sample(inferred):
    rows = [r for r in inferred["rows"] if r["face_found"] == "1"]
    valence = np.array([float(r["valence"]) for r in rows])
    arousal = np.array([float(r["arousal"]) for r in rows])
    assert valence.mean() > 0.2  # a smiling face
    assert np.mean([r["expr"] == "Happiness" for r in rows]) > 0.5
    # the voice goes from calm to excited halfway through; the audio branch raises arousal
    n = len(arousal)
    assert arousal[int(0.75 * n) :].mean() > arousal[: int(0.35 * n)].mean() + 0.05


def test_expressive_sample_makes_valence_and_arousal_vary(tmp_path):
    """The expressive clip exists for measurements that need VA to vary: the built-in detector finds its upscaled
    LFW faces, valence follows which face smiles, arousal follows the voice."""
    pytest.importorskip("skimage")
    from abaw_rt.defaults.sample import face_track, make_expressive_video

    path, plan = make_expressive_video(tmp_path / "expressive.mp4", seconds=16.0, fps=FPS)
    res = cli.invoke(app, ["infer", str(path), "--out", str(tmp_path / "o"), "--threads", "1", "--no-plot"])
    assert res.exit_code == 0, res.output
    with open(tmp_path / "o" / "expressive" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n = len(rows)
    assert n == 16 * FPS and len(plan.arousal) == n
    found = np.array([r["face_found"] == "1" for r in rows])
    truth = np.array([face_track(i, n, 640, 360) is not None for i in range(n)])
    assert np.mean(found == truth) > 0.95  # every face is detected, up to the detection stride at exit and entry
    valence = np.array([float(r["valence"]) for r in rows])
    arousal = np.array([float(r["arousal"]) for r in rows])
    smiling = plan.smiling_share()
    shown = found & truth & ((smiling == 0) | (smiling == 1))  # a face in frame, not mid-fade
    assert valence[shown & (smiling == 1)].mean() > valence[shown & (smiling == 0)].mean() + 0.4
    assert valence.std() > 0.2 and arousal.std() > 0.1
    assert np.corrcoef(arousal, plan.arousal)[0, 1] > 0.3
    assert len({r["expr"] for r in rows}) >= 2


def test_asking_the_demo_model_for_au_is_a_clear_error(sample, tmp_path):
    res = cli.invoke(app, ["infer", str(sample), "--out", str(tmp_path / "o"), "--task", "au"])
    assert res.exit_code == 2
    msg = res.stderr.strip()
    assert msg.startswith("error:") and len(msg.splitlines()) == 1
    assert "['au']" in msg and "--checkpoint" in msg
    assert not (tmp_path / "o").exists()


def test_task_option_keeps_only_the_asked_heads(sample, tmp_path):
    res = cli.invoke(app, ["infer", str(sample), "--out", str(tmp_path), "--task", "va", "--no-plot"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "sample").iterdir())
    assert names == ["predictions.csv", "report.json", "sample.VA.txt"]


def test_defaults_verb_lists_every_file():
    res = cli.invoke(app, ["defaults", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["demo_heads"] == ["va", "expr"]
    assert all(f["bytes"] and len(f["sha256"]) == 64 for f in data["files"])


def test_a_spec_without_detector_gets_the_builtin_one(tmp_path):
    from abaw_rt.pipeline.jobs import detector_or_default
    from abaw_rt.pipeline.extractor_spec import load_spec
    from abaw_rt.pipeline.synthetic import linear_extractor, write_spec

    linear_extractor(tmp_path / "v.onnx", "visual", 4)
    spec = load_spec(write_spec(tmp_path / "s.toml", [{"name": "v", "modality": "visual", "onnx": "v.onnx", "dim": 4}]))
    assert detector_or_default(None, spec).onnx.name == "retinaface_mnet025.onnx"


def test_default_inference_path_needs_no_torch(sample, tmp_path):
    """A fresh install with the [video] extra only (no torch) runs the default infer: torch is never imported."""
    code = (
        "import sys; from typer.testing import CliRunner; from abaw_rt.cli import app; "
        f"r = CliRunner().invoke(app, ['infer', {str(sample)!r}, '--out', {str(tmp_path)!r}, '--no-plot']); "
        "assert r.exit_code == 0, r.output; "
        "print('torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "False"


def test_make_sample_video_expressive_option(tmp_path, monkeypatch):
    """``--expressive`` writes the expressive clip (the same bytes as ``make_expressive_video``); without
    scikit-image it is one line naming the extra, and no file."""
    pytest.importorskip("skimage")
    from abaw_rt.defaults.sample import make_expressive_video

    res = cli.invoke(app, ["make-sample-video", str(tmp_path / "e.mp4"), "--seconds", "3", "--expressive"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e.mp4").read_bytes() == make_expressive_video(tmp_path / "f.mp4", seconds=3)[0].read_bytes()
    plain = cli.invoke(app, ["make-sample-video", str(tmp_path / "p.mp4"), "--seconds", "3"])
    assert plain.exit_code == 0 and (tmp_path / "p.mp4").read_bytes() != (tmp_path / "e.mp4").read_bytes()
    monkeypatch.setitem(sys.modules, "skimage.data", None)  # import fails as if scikit-image were missing
    res = cli.invoke(app, ["make-sample-video", str(tmp_path / "g.mp4"), "--seconds", "3", "--expressive"])
    assert res.exit_code == 2 and "abaw-rt[samples]" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "g.mp4").exists()
