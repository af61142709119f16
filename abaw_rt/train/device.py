"""Training layer (torch): where a run trains and the torch settings it needs (determinism, threads), restored after."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch

from abaw_rt.errors import AbawRtError
from abaw_rt.vocab import Device


def resolve_device(device: Device) -> str:
    """``auto`` -> cuda when torch sees a CUDA device, else cpu; ``cuda`` without one is an error."""
    if device is Device.cpu:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if device is Device.cuda:
        raise AbawRtError("[run] device 'cuda': torch sees no CUDA device (use 'auto' or 'cpu')")
    return "cpu"


@contextmanager
def torch_settings(device: str, threads: int) -> Iterator[None]:
    """Deterministic algorithms (warn-only on CUDA, where cuBLAS allows) and ``threads`` intra-op threads
    (0 leaves torch's default) for the block; the previous settings come back afterwards."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    if device == "cuda":  # cuBLAS needs this for deterministic matmuls; must be set before its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=device == "cuda")
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


def to_device(arrays: dict, device: str) -> dict:
    """{name: numpy array} -> {name: tensor on ``device``} (zero-copy on CPU)."""
    return {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
