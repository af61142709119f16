"""Runner layer: TorchRunner, the reference backend (PyTorch eager, CPU or CUDA, fp32 or fp16)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from abaw_rt.checkpoint import Checkpoint, load_checkpoint
from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.runners.base import Runner


class TorchRunner(Runner):
    """Runs a checkpoint's FusionModel in PyTorch eager mode.

    Args:
        checkpoint: a Checkpoint or the path of one.
        device: "cpu" or "cuda" (or "cuda:N").
        precision: "fp32", or "fp16" (half weights; normalisation, LayerNorm and softmax in FP32).
        threads: intra-op CPU threads (None leaves torch's default).
    """

    name = "torch"

    def __init__(
        self,
        checkpoint: Checkpoint | Path | str,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
    ):
        super().__init__()
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(Path(checkpoint))
        self.header = self.checkpoint.header
        self.input_specs = self.header.config.input_specs()
        self.output_specs = self.header.config.output_specs()
        if precision not in ("fp32", "fp16"):
            raise AbawRtError(f"precision {precision!r}: expected 'fp32' or 'fp16'")
        self.precision = precision
        self.device = device
        self.threads = threads
        self.model = None

    def _activate(self) -> None:
        torch = require_module("torch", "torch")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise AbawRtError(f"device {self.device!r}: no CUDA device is available to torch")
        if self.threads:
            torch.set_num_threads(self.threads)
        from abaw_rt.model.fusion import build_model

        self._torch = torch
        self.model = build_model(self.checkpoint, self.precision).to(self.device)

    def _deactivate(self) -> None:
        self.model = None

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            t = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
            lengths = t.pop("lengths")
            out = self.model(t, lengths)
            return {k: v.cpu().numpy() for k, v in out.items()}
