"""Training's output runs in the product: synthetic data -> train -> checkpoint -> abaw-rt infer on a video."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("av")

from abaw_rt.cli import app  # noqa: E402
from abaw_rt.pipeline import synthetic as syn  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "training" / "recipes"


def test_a_trained_checkpoint_runs_through_infer(tmp_path):
    cli = CliRunner()
    data = tmp_path / "data"
    args = ["make-synthetic", str(data), "--videos", "4", "--val-videos", "2", "--min-frames", "120", "--max-frames", "200"]
    assert cli.invoke(app, args).exit_code == 0
    run = tmp_path / "run"
    res = cli.invoke(app, ["train", "-r", str(RECIPES / "va.toml"), "--data", str(data), "--size", "tiny",
                           "--epochs", "1", "--out", str(run), "--json"])
    assert res.exit_code == 0, res.output
    best = Path(json.loads(res.stdout)["best_checkpoint"])

    # extractors named and sized like the training features (the synthetic set's small widths)
    from abaw_rt.checkpoint import load_checkpoint

    features = load_checkpoint(best).header.config.features
    kit = tmp_path / "kit"
    kit.mkdir()
    specs = []
    for i, f in enumerate(features):
        syn.linear_extractor(kit / f"{f.name}.onnx", f.modality, f.dim, size=(48, 48), window=1600, seed=i)
        spec = {"name": f.name, "modality": f.modality, "onnx": f"{f.name}.onnx", "dim": f.dim, "batch": 16}
        if f.modality == "audio":
            spec.update(window=1600, hop=640)
        specs.append(spec)
    spec_path = syn.write_spec(kit / "extractors.toml", specs)
    detector = syn.blob_detector(kit / "detector.onnx")
    video = tmp_path / "clip.mp4"
    syn.write_video(video, frames=60)

    # without an exported graph, the default ort backend says what to run
    res = cli.invoke(app, ["infer", str(video), "--checkpoint", str(best), "--extractors", str(spec_path),
                           "--detector", str(detector), "--out", str(tmp_path / "none")])
    assert res.exit_code == 2 and "abaw-rt export" in res.stderr
    assert cli.invoke(app, ["export", str(best), "-p", "fp32"]).exit_code == 0

    out = tmp_path / "out"
    res = cli.invoke(app, ["infer", str(video), "--checkpoint", str(best), "--extractors", str(spec_path),
                           "--detector", str(detector), "--out", str(out), "--no-plot"])
    assert res.exit_code == 0, res.output
    lines = (out / "clip" / "clip.VA.txt").read_text().splitlines()
    assert lines[0] == "valence,arousal" and len(lines) == 61
    values = [tuple(map(float, line.split(","))) for line in lines[1:]]
    assert all(-1.0 <= v <= 1.0 and -1.0 <= a <= 1.0 for v, a in values)
    report = json.loads((out / "clip" / "report.json").read_text())
    assert report["model"]["features"] == [f"{f.name}:{f.modality}:{f.dim}" for f in features]
