"""Shared fixtures: one tiny checkpoint with every head and one export per precision per test session."""

from __future__ import annotations

import pytest


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_cfg():
    from abaw_rt.model.config import TINY, preset

    return preset("va", heads=("va", "expr", "au"), **TINY)


@pytest.fixture(scope="session")
def tiny_ckpt_path(tmp_path_factory, tiny_cfg):
    """A tiny checkpoint with all three heads and non-trivial normalisation statistics."""
    import numpy as np

    from abaw_rt.checkpoint import CheckpointHeader, save_checkpoint
    from abaw_rt.model.fusion import init_state

    rng = np.random.default_rng(3)
    norm = {
        m: {
            "mean": tuple(rng.normal(0, 2, tiny_cfg.modality_dim(m)).tolist()),
            "std": tuple(rng.uniform(0.5, 3, tiny_cfg.modality_dim(m)).tolist()),
        }
        for m in tiny_cfg.modalities
    }
    header = CheckpointHeader(config=tiny_cfg, normalization=norm, window=40, stride=25, provenance={"test": True})
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, header, init_state(tiny_cfg, seed=7))


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_ckpt_path):
    from abaw_rt.checkpoint import load_checkpoint

    return load_checkpoint(tiny_ckpt_path)


@pytest.fixture(scope="session")
def exported(tiny_ckpt, tiny_ckpt_path):
    """{precision: ExportResult} for the tiny checkpoint, exported beside it."""
    from abaw_rt.artefacts import onnx_path_for
    from abaw_rt.export.onnx_export import export_onnx

    return {p: export_onnx(tiny_ckpt, onnx_path_for(tiny_ckpt_path, p), precision=p) for p in ("fp32", "fp16")}
