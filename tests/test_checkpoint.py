"""Checkpoints: safetensors + JSON header round-trip, no pickle, clear refusal of corrupt or mismatched files."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from abaw_rt.checkpoint import (
    METADATA_KEY,
    CheckpointHeader,
    default_normalization,
    load_checkpoint,
    save_checkpoint,
)
from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import TINY, preset


def test_round_trip_keeps_header_and_weights(tiny_ckpt_path, tiny_ckpt, tmp_path):
    again = load_checkpoint(tiny_ckpt_path)
    assert again.header.config == tiny_ckpt.header.config
    assert again.header.window == 40 and again.header.stride == 25
    assert again.header.labels["expr"][4] == "Happiness"
    assert again.header.labels["au"][0] == "AU1"
    assert set(again.tensors) == set(tiny_ckpt.tensors)
    for k, v in tiny_ckpt.tensors.items():
        np.testing.assert_array_equal(again.tensors[k], v)
    mean, std = again.header.normalization_arrays()["visual"]
    assert mean.shape == std.shape == (tiny_ckpt.header.config.modality_dim("visual"),)
    # save what we loaded: the same bytes come back
    copy = save_checkpoint(tmp_path / "copy.safetensors", again.header, again.tensors)
    assert load_checkpoint(copy).sha256 == again.sha256


def test_header_is_plain_json_with_the_feature_spec(tiny_ckpt_path):
    from safetensors import safe_open

    with safe_open(str(tiny_ckpt_path), framework="numpy") as f:
        header = json.loads(f.metadata()[METADATA_KEY])
    assert [g["name"] for g in header["features"]] == ["eff", "affectnet8", "rafdb", "wav2vec2"]
    assert header["features"][0] == {"name": "eff", "dim": 1280, "modality": "visual"}
    assert len(header["normalization"]["audio"]["std"]) == 512
    assert header["provenance"] == {"test": True}


def test_weights_load_into_the_model(tiny_ckpt):
    torch = pytest.importorskip("torch")
    from abaw_rt.model.fusion import build_model

    model = build_model(tiny_ckpt)
    name = next(iter(tiny_ckpt.tensors))
    np.testing.assert_array_equal(model.state_dict()[name].numpy(), tiny_ckpt.tensors[name])
    mean, _ = tiny_ckpt.header.normalization_arrays()["audio"]
    assert torch.equal(model.mean_audio, torch.from_numpy(mean))


@pytest.mark.parametrize("cut", [0, 7, 100, -10])
def test_truncated_or_garbage_file_is_refused(tiny_ckpt_path, tmp_path, cut):
    data = tiny_ckpt_path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[:cut] if cut else b"\x00" * 64)
    with pytest.raises(AbawRtError, match="bad.safetensors"):
        load_checkpoint(bad)


def test_pickle_is_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("a checkpoint was unpickled",))

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(AbawRtError, match="not a readable safetensors file"):
        load_checkpoint(evil)


def test_safetensors_without_our_header_is_refused(tmp_path):
    from safetensors.numpy import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(plain))
    with pytest.raises(AbawRtError, match="not an abaw-rt checkpoint"):
        load_checkpoint(plain)


def test_weights_of_another_architecture_are_refused(tiny_ckpt, tmp_path):
    pytest.importorskip("torch")
    from abaw_rt.model.fusion import build_model

    wider = tiny_ckpt.header.config.replace(d_model=64)
    header = CheckpointHeader(config=wider, normalization=default_normalization(wider))
    path = save_checkpoint(tmp_path / "other.safetensors", header, tiny_ckpt.tensors)
    with pytest.raises(AbawRtError, match="weights do not match its model config.*wrong shape"):
        build_model(load_checkpoint(path))


def test_header_problems_are_named(tmp_path):
    cfg = preset("expr", **TINY)
    norm = default_normalization(cfg)
    with pytest.raises(AbawRtError, match="stride"):
        CheckpointHeader(config=cfg, normalization=norm, window=100, stride=101)
    with pytest.raises(AbawRtError, match="window"):
        CheckpointHeader(config=cfg, normalization=norm, window=0, stride=0)
    short = {"visual": {"mean": (0.0,) * 3, "std": (1.0,) * 3}}
    with pytest.raises(AbawRtError, match=r"normalization visual.mean: got shape \(3,\)"):
        CheckpointHeader(config=cfg, normalization=short)
    zero_std = {"visual": {"mean": norm["visual"]["mean"], "std": (0.0,) * cfg.modality_dim("visual")}}
    with pytest.raises(AbawRtError, match="std"):
        CheckpointHeader(config=cfg, normalization=zero_std)


def test_future_format_version_is_refused(tiny_ckpt, tmp_path):
    from safetensors.numpy import save_file

    head = tiny_ckpt.header.to_dict()
    head["format_version"] = 99
    path = tmp_path / "future.safetensors"
    save_file(dict(tiny_ckpt.tensors), str(path), metadata={METADATA_KEY: json.dumps(head)})
    with pytest.raises(AbawRtError, match="format version 99"):
        load_checkpoint(path)


def test_missing_file_and_missing_folder(tmp_path):
    with pytest.raises(AbawRtError, match="no such file"):
        load_checkpoint(tmp_path / "nope.safetensors")
    cfg = preset("au", **TINY)
    header = CheckpointHeader(config=cfg, normalization=default_normalization(cfg))
    with pytest.raises(AbawRtError, match="does not exist"):
        save_checkpoint(tmp_path / "no" / "dir" / "x.safetensors", header, {})


def test_save_leaves_no_temporary_files(tiny_ckpt, tmp_path):
    save_checkpoint(tmp_path / "a.safetensors", tiny_ckpt.header, tiny_ckpt.tensors)
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]
