"""Training on memory-mapped feature stores (windows read per batch) and ``abaw-rt evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from abaw_rt.cli import app  # noqa: E402
from abaw_rt.errors import AbawRtError  # noqa: E402
from abaw_rt.store import FeatureStore, LazyRows  # noqa: E402
from abaw_rt.train.config import load_train_recipe  # noqa: E402
from abaw_rt.train.data import load_data  # noqa: E402
from abaw_rt.train.loop import train  # noqa: E402
from abaw_rt.train.outputs import LAST  # noqa: E402
from abaw_rt.train.synthetic import SyntheticSpec, make_synthetic  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "training" / "recipes"
FAST = ["model.size='tiny'", "model.arch.d_model=32", "optim.lr=3e-3", "optim.batch_size=8", "run.threads=1",
        "optim.epochs=2"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, SyntheticSpec(videos=8, val_videos=3, min_frames=300, max_frames=500, seed=2))
    return root


def _cfg(synth, *extra):
    return load_train_recipe(RECIPES / "va.toml", [*FAST, f"data.root='{synth}'", *extra])


def test_lazy_rows_equal_the_in_memory_read_missing_faces_filled(synth):
    store = FeatureStore(synth / "features")
    video = store.videos()[0]
    names = ["eff", "affectnet8", "rafdb"]
    stored = store.read(video, names)
    assert not stored.face_found.all()  # the synthetic set has missing faces: the filled rows are compared too
    full = np.concatenate([stored.features[n] for n in names], axis=1)
    lazy, _ = store.read_lazy(video, names)
    assert isinstance(lazy, LazyRows) and lazy.shape == full.shape
    np.testing.assert_array_equal(lazy[0 : len(lazy)], full)
    np.testing.assert_array_equal(lazy[17:123], full[17:123])
    assert lazy[5:5].shape == (0, full.shape[1])


def test_memory_mapped_and_in_memory_training_agree_bit_for_bit(synth, tmp_path):
    mapped, loaded = _cfg(synth, "data.memory_map=true"), _cfg(synth, "data.memory_map=false")
    data_m, data_l = load_data(mapped), load_data(loaded)
    assert isinstance(data_m.train[0].inputs["visual"], LazyRows)
    assert isinstance(data_l.train[0].inputs["visual"], np.ndarray)
    assert data_m.fingerprint() == data_l.fingerprint()  # so a run may switch paths on --resume
    a = train(mapped, tmp_path / "m", data=data_m)
    b = train(loaded, tmp_path / "l", data=data_l)
    assert [r.metrics for r in a.history] == [r.metrics for r in b.history]
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]
    from safetensors.numpy import load_file

    sa, sb = load_file(str(tmp_path / "m" / LAST)), load_file(str(tmp_path / "l" / LAST))
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_a_nan_in_a_memory_mapped_file_names_file_and_frame(synth, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(synth, root)
    store = FeatureStore(root / "features")
    video = store.videos()[0]
    path = root / "features" / "eff" / f"{video}.npy"
    arr = np.load(path)
    arr[41, 3] = np.nan
    np.save(path, arr)
    with pytest.raises(AbawRtError, match=r"eff/.*\.npy': NaN or inf at frame 42"):
        store.read_lazy(video, ["eff"])


def test_evaluate_reproduces_the_figures_train_reported(synth, tmp_path):
    res = train(_cfg(synth), tmp_path / "run")
    r = CliRunner().invoke(app, ["evaluate", str(res.best_path), "--data", str(synth), "--json", "--threads", "1"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["split"] == "Validation_Set" and got["videos"] == len(load_data(_cfg(synth)).val)
    for k, v in res.best_metrics.items():  # val_loss is evaluate's pooled "loss"
        assert got["pooled"]["loss" if k == "val_loss" else k] == pytest.approx(v, abs=1e-6), k
    assert [v["video"] for v in got["per_video"]] == sorted(v["video"] for v in got["per_video"])
    assert sum(v["frames"] for v in got["per_video"]) >= got["pooled"]["frames"]
    table = CliRunner().invoke(app, ["evaluate", str(res.best_path), "--data", str(synth)])
    assert table.exit_code == 0 and "pooled" in table.stdout


def test_evaluate_bad_input_is_one_line(synth, tmp_path):
    runner = CliRunner()
    plain = tmp_path / "init.safetensors"
    assert runner.invoke(app, ["init-checkpoint", str(plain), "--size", "tiny"]).exit_code == 0
    cases = [
        ([str(plain), "--data", str(synth)], "no training recipe in its provenance"),
        ([str(tmp_path / "none.safetensors"), "--data", str(synth)], "no such file"),
    ]
    res = train(_cfg(synth, "optim.epochs=1"), tmp_path / "run")
    cases += [
        ([str(res.best_path), "--data", str(tmp_path)], "no store.json"),
        ([str(res.best_path), "--data", str(synth), "--split", "Test_Set"], "Test_Set"),
    ]
    for args, match in cases:
        r = runner.invoke(app, ["evaluate", *args])
        assert r.exit_code == 2, (args, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and match in lines[0], (args, r.stderr)
