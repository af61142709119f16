"""The training loop on a small synthetic ABAW set: learning happens, runs are deterministic and resume exactly,
checkpoints carry train-split statistics and provenance, cross-validation folds by video, and the whole chain
synthetic -> train -> export -> verify works from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from abaw_rt.checkpoint import load_checkpoint  # noqa: E402
from abaw_rt.cli import app  # noqa: E402
from abaw_rt.errors import AbawRtError  # noqa: E402
from abaw_rt.train.config import load_train_recipe  # noqa: E402
from abaw_rt.train.crossval import SUMMARY_JSON, assign_folds, crossval  # noqa: E402
from abaw_rt.train.dataset import normalization_stats  # noqa: E402
from abaw_rt.train.data import load_data  # noqa: E402
from abaw_rt.train.loop import Reporter, train  # noqa: E402
from abaw_rt.train.outputs import LAST, METRICS_CSV, METRICS_JSON  # noqa: E402
from abaw_rt.train.synthetic import SyntheticSpec, make_synthetic  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "training" / "recipes"
FAST = ["model.size='tiny'", "optim.lr=3e-3", "optim.batch_size=8", "run.threads=2"]
CHANCE = {"va": 0.0, "expr": 1 / 8}  # CCC of an uninformed predictor; macro F1 of a uniform guess


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, SyntheticSpec(videos=16, val_videos=4, min_frames=300, max_frames=600, seed=1))
    return root


def _cfg(synth, task="va", *extra):
    return load_train_recipe(RECIPES / f"{task}.toml", [*FAST, f"data.root='{synth}'", *extra])


def _state(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


@pytest.mark.slow  # 40-110 s each on a busy 2-core CPU
@pytest.mark.parametrize("task", ["va", "expr"])
def test_loss_falls_and_metric_rises_well_above_chance(synth, tmp_path, task):
    cfg = _cfg(synth, task, "optim.epochs=8")
    res = train(cfg, tmp_path / "run")
    first, last = res.history[0], res.history[-1]
    assert last.train_loss < 0.7 * first.train_loss
    assert last.val_loss < first.val_loss
    assert res.best_metrics["score"] > CHANCE[task] + 0.4, res.best_metrics
    assert res.best_metrics["score"] == max(r.metrics["score"] for r in res.history)


class _StopBefore(Reporter):
    def __init__(self, epoch):
        self.epoch = epoch

    def epoch_start(self, epoch, epochs, batches):
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_runs_are_deterministic_and_resume_exactly(synth, tmp_path):
    cfg = _cfg(synth, "expr", "optim.epochs=3")
    data = load_data(cfg)
    full = train(cfg, tmp_path / "full", data=data)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", data=data, reporter=_StopBefore(3))
    assert len(json.loads((tmp_path / "cut" / METRICS_JSON).read_text())) == 2
    resumed = train(cfg, tmp_path / "cut", data=data, resume=True)
    assert resumed.resumed_from == 2
    a, b = _state(tmp_path / "full" / LAST), _state(tmp_path / "cut" / LAST)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # model and AdamW state, bit for bit
    assert [r.metrics for r in full.history] == [r.metrics for r in resumed.history]
    assert full.best_epoch == resumed.best_epoch
    # a different seed is a different run
    other = train(cfg.replace(run={"seed": 7}), tmp_path / "other", data=data)
    assert other.history[-1].train_loss != full.history[-1].train_loss


def test_existing_run_needs_resume_and_the_same_recipe(synth, tmp_path):
    cfg = _cfg(synth, "va", "optim.epochs=1")
    data = load_data(cfg)
    train(cfg, tmp_path / "run", data=data)
    with pytest.raises(AbawRtError, match="already holds a run.*--resume"):
        train(cfg, tmp_path / "run", data=data)
    with pytest.raises(AbawRtError, match=r"recipe changed \(optim.lr"):
        train(cfg.replace(optim={"lr": 1e-4}), tmp_path / "run", data=data, resume=True)
    with pytest.raises(AbawRtError, match="data changed"):  # the same videos, split differently
        swapped = type(data)(data.train[1:], data.val + data.train[:1], data.extractors)
        train(cfg, tmp_path / "run", data=swapped, resume=True)
    done = train(cfg, tmp_path / "run", data=data, resume=True)  # finished: nothing left to do
    assert done.resumed_from == 1 and len(done.history) == 1


def test_best_checkpoint_carries_train_statistics_and_provenance(synth, tmp_path):
    cfg = _cfg(synth, "au", "optim.epochs=2")
    data = load_data(cfg)
    res = train(cfg, tmp_path / "run", data=data)
    ckpt = load_checkpoint(res.best_path)
    h = ckpt.header
    assert h.config.heads == ("au",) and [f.name for f in h.config.features] == ["eff", "affectnet8", "rafdb"]
    expected = normalization_stats(data.train, h.config.modalities)  # training split only
    np.testing.assert_allclose(h.normalization["visual"]["mean"], expected["visual"]["mean"], rtol=1e-12)
    assert not np.allclose(
        h.normalization["visual"]["mean"],
        normalization_stats(data.train + data.val, h.config.modalities)["visual"]["mean"],
    )
    p = h.provenance
    assert p["recipe"] == "au" and p["epochs"] == 2 and p["best_epoch"] == res.best_epoch and p["trained"] is True
    assert p["metrics"]["score"] == res.best_metrics["score"] and len(p["data_sha256"]) == 64 and p["date"]
    assert p["train_config"]["optim"]["lr"] == 3e-3
    assert (h.window, h.stride, h.fps) == (300, 200, 30.0)
    rows = json.loads((tmp_path / "run" / METRICS_JSON).read_text())
    assert [r["epoch"] for r in rows] == [1, 2] and sum(r["best"] for r in rows) >= 1
    assert (tmp_path / "run" / METRICS_CSV).read_text().splitlines()[0].startswith("epoch,lr,train_loss,val_loss")
    # the saved weights reproduce the metric the run reported
    from abaw_rt.model.fusion import build_model
    from abaw_rt.train.evaluate import evaluate

    _, metrics = evaluate(build_model(ckpt), data.val, cfg, "cpu")
    assert metrics["score"] == pytest.approx(res.best_metrics["score"], abs=1e-6)


def test_folds_keep_both_people_of_a_video_together():
    names = [f"v{i}" for i in range(7)] + ["duo_left", "duo_right", "pair_left", "pair_right"]
    folds = assign_folds(names, 3, seed=0)
    assert folds["duo_left"] == folds["duo_right"] and folds["pair_left"] == folds["pair_right"]
    assert set(folds.values()) == {0, 1, 2}
    assert folds == assign_folds(list(reversed(names)), 3, seed=0)
    with pytest.raises(AbawRtError, match="cannot fill 5 folds"):
        assign_folds(["a", "b_left", "b_right"], 5, seed=0)


def test_crossval_trains_one_run_per_fold_and_summarises(synth, tmp_path):
    cfg = _cfg(synth, "va", "optim.epochs=1", "run.folds=3")
    data = load_data(cfg)
    res = crossval(cfg, tmp_path / "cv", data=data)
    assert [f.fold for f in res.folds] == [1, 2, 3]
    total = len(data.train) + len(data.val)
    assert all(f.train_files + f.val_files == total for f in res.folds)
    assert sum(f.val_files for f in res.folds) == total  # every label file validated exactly once
    summary = json.loads((tmp_path / "cv" / SUMMARY_JSON).read_text())
    scores = [r["score"] for r in summary["folds"]]
    assert summary["aggregate"]["score"]["mean"] == pytest.approx(np.mean(scores))
    for k in (1, 2, 3):
        assert (tmp_path / "cv" / f"fold_{k}" / "best.safetensors").is_file()


def test_synthetic_to_train_to_export_to_verify_from_the_cli(tmp_path):
    cli = CliRunner()
    data = tmp_path / "data"
    r = cli.invoke(
        app,
        [
            "make-synthetic",
            str(data),
            "--videos",
            "6",
            "--val-videos",
            "2",
            "--min-frames",
            "150",
            "--max-frames",
            "400",
        ],
    )
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    r = cli.invoke(
        app,
        [
            "train",
            "-r",
            str(RECIPES / "va.toml"),
            "--data",
            str(data),
            "--size",
            "tiny",
            "--epochs",
            "2",
            "--out",
            str(run),
            "--set",
            "optim.lr=1e-3",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    best = Path(summary["best_checkpoint"])
    assert best == run / "best.safetensors" and summary["epochs"] == 2
    r = cli.invoke(app, ["export", str(best), "-p", "fp32"])
    assert r.exit_code == 0, r.output
    r = cli.invoke(app, ["verify", str(best), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["passed"] is True


def test_cli_reports_bad_annotations_in_one_line_and_writes_nothing(synth, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth, data)
    bad = sorted((data / "annotations" / "EXPR_Classification_Challenge" / "Train_Set").glob("*.txt"))[0]
    lines = bad.read_text().splitlines()
    lines[10] = "3,4"
    bad.write_text("\n".join(lines) + "\n")
    r = CliRunner().invoke(
        app,
        [
            "train",
            "-r",
            str(RECIPES / "expr.toml"),
            "--data",
            str(data),
            "--size",
            "tiny",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert r.exit_code == 2
    msg = r.stderr.strip()
    assert len(msg.splitlines()) == 1 and f"{bad.name}' line 11: 2 column(s)" in msg, msg
    assert not (tmp_path / "run").exists()  # nothing written


def test_crossval_from_the_cli_prints_a_summary(synth, tmp_path):
    r = CliRunner().invoke(
        app,
        [
            "crossval",
            "-r",
            str(RECIPES / "expr.toml"),
            "--data",
            str(synth),
            "--size",
            "tiny",
            "--epochs",
            "1",
            "--folds",
            "2",
            "--out",
            str(tmp_path / "cv"),
            "--set",
            "optim.batch_size=8",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [f["fold"] for f in out["folds"]] == [1, 2] and "f1" in out["aggregate"]
    assert Path(out["summary"]).is_file() and (tmp_path / "cv" / "crossval.csv").is_file()


@pytest.mark.gpu
def test_trains_on_cuda_with_mixed_precision(synth, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cfg = _cfg(synth, "expr", "optim.epochs=3", "run.device='cuda'", "run.amp=true")
    res = train(cfg, tmp_path / "run")
    assert load_checkpoint(res.best_path).header.provenance["device"] == "cuda"
    assert res.history[-1].train_loss < res.history[0].train_loss
    assert np.isfinite(res.best_metrics["score"])
