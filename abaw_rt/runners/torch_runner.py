"""Runner layer: TorchRunner, the reference backend (PyTorch eager, CPU or CUDA, fp32 or fp16).

On CUDA it can also capture one CUDA graph per shape bucket (inputs padded up to the bucket, see
``abaw_rt.runners.buckets``) and run the model through ``torch.compile``. The CPU path is plain eager.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from abaw_rt.checkpoint import Checkpoint, load_checkpoint
from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.model.config import LENGTHS
from abaw_rt.runners.base import Runner
from abaw_rt.runners.buckets import ShapeBuckets, pad_feeds, unpad_outputs
from abaw_rt.specs import BATCH, TIME


class TorchRunner(Runner):
    """Runs a checkpoint's FusionModel in PyTorch eager mode.

    Args:
        checkpoint: a Checkpoint or the path of one.
        device: "cpu" or "cuda" (or "cuda:N").
        precision: "fp32", or "fp16" (half weights; normalisation, LayerNorm and softmax in FP32).
        threads: intra-op CPU threads (None leaves torch's default).
        cuda_graphs: CUDA only: capture one CUDA graph per shape bucket and replay it (static buffers;
            outputs are still copied to fresh host arrays).
        compile: CUDA only: run the model through ``torch.compile`` (compiles once per shape).
        buckets: shape buckets inputs are padded up to (default with ``cuda_graphs``: ``ShapeBuckets()``).
        tf32: CUDA only: allow TF32 matmuls and convolutions. Off by default so that fp32 on a GPU stays
            within fp32 tolerances of the CPU reference. Sets torch's process-wide flags.
    """

    name = "torch"

    def __init__(
        self,
        checkpoint: Checkpoint | Path | str,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        cuda_graphs: bool = False,
        compile: bool = False,
        buckets: ShapeBuckets | None = None,
        tf32: bool = False,
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
        if (cuda_graphs or compile) and not device.startswith("cuda"):
            raise AbawRtError(f"device {device!r}: CUDA graphs and torch.compile need a CUDA device ('cuda')")
        self.cuda_graphs = cuda_graphs
        self.compile = compile
        self.buckets = buckets if buckets is not None else (ShapeBuckets() if cuda_graphs else None)
        self.tf32 = tf32
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
        self._forward = self.model
        if self.device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
            if self.compile:
                self._forward = torch.compile(self.model, dynamic=False)
        self._graphs: dict = {}  # (batch, time) bucket -> (static inputs, static outputs, CUDA graph)
        self._pool = torch.cuda.graph_pool_handle() if self.cuda_graphs else None

    def _deactivate(self) -> None:
        self._graphs = {}
        self._forward = None
        self.model = None

    def _describe(self) -> dict:
        return {"device": self.device, "threads": self.threads, "cuda_graphs": self.cuda_graphs}

    def _infer(self, feeds: Mapping[str, np.ndarray], axes: Mapping[str, int]) -> dict[str, np.ndarray]:
        if self.cuda_graphs:
            return self._infer_graph(feeds, axes[BATCH], axes[TIME])
        torch = self._torch
        with torch.inference_mode():
            t = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
            lengths = t.pop(LENGTHS)
            out = self._forward(t, lengths)
            return {k: v.cpu().numpy() for k, v in out.items()}

    def _infer_graph(self, feeds: Mapping[str, np.ndarray], batch: int, time: int) -> dict[str, np.ndarray]:
        """Pad to the shape bucket, replay its CUDA graph (capturing it on first use), cut the outputs back."""
        torch = self._torch
        run_b, run_t = self.buckets.bucket(batch, time)
        padded = (run_b, run_t) != (batch, time)
        run_feeds = pad_feeds(feeds, self.input_specs, run_b, run_t) if padded else feeds
        with torch.no_grad(), torch.cuda.device(self.device):
            entry = self._graphs.get((run_b, run_t))
            if entry is None:
                entry = self._graphs[(run_b, run_t)] = self._capture(run_feeds)
            static_in, static_out, graph = entry
            for name, arr in run_feeds.items():
                static_in[name].copy_(torch.from_numpy(arr))
            graph.replay()
            out = {k: v.cpu().numpy() for k, v in static_out.items()}
        return unpad_outputs(out, batch, time) if padded else out

    def _capture(self, feeds: Mapping[str, np.ndarray]):
        torch = self._torch
        static_in = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}

        def step():
            x = {k: v for k, v in static_in.items() if k != LENGTHS}
            return self._forward(x, static_in[LENGTHS])

        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the capture: cuBLAS/cuDNN handles, torch.compile
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = step()
        return static_in, static_out, graph
