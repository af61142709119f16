"""Recipes: the paper's values, strict parsing, overrides, and the learning-rate schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import PAPER_FEATURES, PRESET_FEATURES
from abaw_rt.train.config import ModelSize, OptimSection, TrainConfig, load_train_recipe

RECIPES = Path(__file__).resolve().parents[1] / "training" / "recipes"
STORE = {name: {"dim": g.dim, "modality": g.modality} for name, g in PAPER_FEATURES.items()}


@pytest.mark.parametrize("name", ["va", "va_arcface", "expr", "au"])
def test_recipes_hold_the_papers_values_and_feature_sets(name):
    cfg = load_train_recipe(RECIPES / f"{name}.toml")
    feats, heads = PRESET_FEATURES[name]
    assert cfg.model.features == feats and (cfg.task.value,) == heads
    assert cfg.name == name
    o = cfg.optim
    assert (o.lr, o.weight_decay, o.batch_size, o.warmup_epochs) == (3e-5, 1e-5, 32, 1.0)
    assert cfg.model.dropout == 0.3 and cfg.model.size is ModelSize.paper
    assert (cfg.windows.window, cfg.windows.stride) == (300, 200)
    assert cfg.run.folds == 5
    mcfg = cfg.model_config(STORE)
    assert mcfg.n_layers == 8 and mcfg.n_heads == 4 and mcfg.kernel_size == 5 and mcfg.d_model == 512
    assert [f.name for f in mcfg.features] == list(feats)


def test_defaults_are_the_papers():
    o = OptimSection()
    assert (o.lr, o.weight_decay, o.batch_size, o.warmup_epochs) == (3e-5, 1e-5, 32, 1.0)


def test_to_dict_round_trips():
    cfg = load_train_recipe(RECIPES / "va.toml", ["model.arch.d_model=64", "model.size='tiny'"])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.model_config(STORE).d_model == 64


def test_overrides_and_replace():
    cfg = load_train_recipe(RECIPES / "expr.toml", ["optim.lr=1e-3", "run.device=cpu", "data.root=/tmp/x"])
    assert cfg.optim.lr == 1e-3 and cfg.run.device.value == "cpu" and cfg.data.root == "/tmp/x"
    assert cfg.replace(optim={"epochs": 2}).optim.epochs == 2
    with pytest.raises(AbawRtError, match="section.key=value"):
        load_train_recipe(RECIPES / "expr.toml", ["lr"])


@pytest.mark.parametrize(
    "change, match",
    [
        ({"optim": {"lrate": 1}}, r"\[optim\]: unknown key\(s\) \['lrate'\]"),
        ({"optim": {"epochs": 2.5}}, r"\[optim\] epochs: got 2.5, expected an integer"),
        ({"optim": {"lr": 0.0}}, r"lr 0.0 \(expected > 0\)"),
        ({"task": "valence"}, r"task: got 'valence', expected one of"),
        ({"model": {"features": ["eff", "eff"]}}, "distinct extractor names"),
        ({"model": {"features": ["eff"], "arch": {"depth": 3}}}, r"\[model.arch\]: unknown field"),
        ({"windows": {"window": 100, "stride": 200}}, "stride <= window"),
        ({"run": {"device": "tpu"}}, r"device: got 'tpu'"),
        ({"bogus": 1}, r"unknown key\(s\) \['bogus'\]"),
    ],
)
def test_bad_recipes_are_rejected_by_name(change, match):
    base = load_train_recipe(RECIPES / "va.toml").to_dict()
    for k, v in change.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    with pytest.raises(AbawRtError, match=match):
        TrainConfig.from_dict(base)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(AbawRtError, match="no such file"):
        load_train_recipe(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("task = \n")
    with pytest.raises(AbawRtError, match="not valid TOML"):
        load_train_recipe(bad)


def test_feature_missing_from_store_is_named():
    cfg = load_train_recipe(RECIPES / "va.toml")
    with pytest.raises(AbawRtError, match="extractor 'wav2vec2' is not in the feature store"):
        cfg.model_config({k: v for k, v in STORE.items() if k != "wav2vec2"})


def test_schedule_warms_up_linearly_for_one_epoch_then_decays_by_cosine():
    from abaw_rt.train.schedule import lr_at  # torch

    o = OptimSection(lr=1.0, epochs=5, warmup_epochs=1.0, min_lr=0.0)
    spe = 10
    lrs = [lr_at(s, spe, o) for s in range(spe * o.epochs)]
    assert lrs[:spe] == pytest.approx([(i + 1) / spe for i in range(spe)])  # linear, peak at the epoch's end
    decay = lrs[spe:]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    total = spe * o.epochs
    assert lrs[spe + 20] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / (total - spe))))
    assert lrs[-1] < 0.01


def test_several_tasks_one_run_round_trip_and_need_pre_loaded_data():
    cfg = load_train_recipe(RECIPES / "va.toml", ["task=['va', 'expr']"])
    assert [t.value for t in cfg.tasks] == ["va", "expr"] and cfg.task.value == "va"
    assert cfg.to_dict()["task"] == ["va", "expr"]
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert load_train_recipe(RECIPES / "va.toml").to_dict()["task"] == "va"  # one task stays a string
    mcfg = cfg.model_config({n: {"dim": 4, "modality": "visual"} for n in cfg.model.features[:-1]}
                            | {"wav2vec2": {"dim": 4, "modality": "audio"}})
    assert mcfg.heads == ("va", "expr")
    with pytest.raises(AbawRtError, match="distinct tasks"):
        load_train_recipe(RECIPES / "va.toml", ["task=['va', 'va']"])
    from abaw_rt.train.data import load_data

    with pytest.raises(AbawRtError, match="Python API with pre-loaded data"):
        load_data(cfg)
