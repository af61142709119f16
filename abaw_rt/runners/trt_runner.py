"""Runner layer: TrtRunner, a TensorRT engine plan built by ``abaw-rt build`` (NVIDIA GPU only).

Creating the runner reads the engine's JSON sidecar and refuses, before any TensorRT object
exists, an engine that cannot run here: no CUDA device (checked first: the lean runtime segfaults
without one), another TensorRT version or GPU, plan or ONNX bytes that differ from the sidecar's
sha256; the error prints the command that rebuilds it. Entering the context deserialises the plan
and creates an execution context; leaving frees them.

Per call: the tightest optimisation profile that accepts (batch, time) is selected, input shapes
are set, inputs are copied into device buffers (torch CUDA tensors, reused across calls and grown
when a larger shape arrives), ``execute_async_v3`` runs on the runner's CUDA stream, and outputs
are copied back into fresh host arrays. With ``cuda_graphs`` each shape bucket gets its own
execution context, static buffers and captured CUDA graph (inputs padded up to the bucket).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np

from abaw_rt.cuda.gpu import device_index
from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.runners.base import Runner
from abaw_rt.runners.buckets import ShapeBuckets, pad_feeds, unpad_outputs
from abaw_rt.specs import BATCH, TIME
from abaw_rt.trt.compat import import_tensorrt, make_logger
from abaw_rt.trt.profiles import fits_any, select_profile
from abaw_rt.trt.sidecar import RuntimeInfo, check_sidecar, read_sidecar


class TrtRunner(Runner):
    """Runs a TensorRT engine plan with its sidecar.

    Args:
        plan: the ``.plan`` file; its sidecar ``<plan stem>.json`` must sit beside it.
        device: "cuda" or "cuda:N".
        onnx: the graph to check the engine against (default: the path recorded at build time, when present).
        cuda_graphs: capture one CUDA graph per shape bucket (one execution context each).
        buckets: shape buckets inputs are padded up to (default with ``cuda_graphs``: ``ShapeBuckets()``;
            otherwise none: every call runs at its exact shape).
        profile: run every call on this optimisation profile (by name) instead of the tightest that fits.
        verbose: TensorRT's verbose log.
    """

    name = "trt"

    def __init__(
        self,
        plan: Path | str,
        device: str = "cuda",
        onnx: Path | str | None = None,
        cuda_graphs: bool = False,
        buckets: ShapeBuckets | None = None,
        profile: str | None = None,
        verbose: bool = False,
    ):
        super().__init__()
        self.plan = Path(plan)
        self.sidecar = read_sidecar(self.plan)
        info = self.sidecar.onnx_info(source=f"engine sidecar of '{self.plan}'")
        self.header, self.input_specs, self.output_specs = info.header, info.inputs, info.outputs
        self.precision = self.sidecar.precision
        self.profiles = self.sidecar.profiles
        self.device_index = device_index(device)
        self.cuda_graphs = cuda_graphs
        self.buckets = buckets if buckets is not None else (ShapeBuckets() if cuda_graphs else None)
        self.verbose = verbose
        names = [p.name for p in self.profiles]
        if profile is not None and profile not in names:
            raise AbawRtError(f"profile {profile!r}: engine '{self.plan}' has profiles {names}")
        self.pinned = names.index(profile) if profile is not None else None
        # Everything that can refuse the engine runs now, before a TensorRT object exists.
        self._trt, version, self.gpu = import_tensorrt(self.device_index)  # no CUDA device: AbawRtError here
        runtime = RuntimeInfo(str(version), self.gpu.name, self.gpu.cc)
        self.onnx_checked = check_sidecar(self.sidecar, self.plan, runtime, Path(onnx) if onnx else None)

    # -- lifecycle ----------------------------------------------------------------------------------
    def _activate(self) -> None:
        torch = require_module("torch", "trt")
        if not torch.cuda.is_available():
            raise AbawRtError(
                f"the trt backend keeps device buffers in torch CUDA tensors, and this torch ({torch.__version__}) "
                "has no CUDA; install a CUDA build of torch"
            )
        trt = self._trt
        self._torch = torch
        self._device = torch.device("cuda", self.device_index)
        with torch.cuda.device(self._device):
            self._stream = torch.cuda.Stream(self._device)
            self._trt_logger = make_logger(trt, self.verbose)
            self._trt_runtime = trt.Runtime(self._trt_logger)
            self._trt_engine = self._trt_runtime.deserialize_cuda_engine(self.plan.read_bytes())
            if self._trt_engine is None:
                raise AbawRtError(
                    f"engine '{self.plan}': TensorRT could not load the plan; rebuild it: "
                    f"{self.sidecar.rebuild_command(self.plan)}"
                )
            self._trt_context = self._trt_engine.create_execution_context()
        self._dtypes = self._check_engine(trt, torch)
        self._buffers: dict = {}  # name -> flat device tensor, reused across calls, grown on demand
        self._graphs: dict = {}  # (profile, shapes) -> (trt context, CUDA graph, static inputs, static outputs)
        self._profile: int | None = None  # the shared context's active profile

    def _check_engine(self, trt, torch) -> dict:
        """The engine must have the sidecar's tensors and profiles; returns {tensor: torch dtype}."""
        names = [self._trt_engine.get_tensor_name(i) for i in range(self._trt_engine.num_io_tensors)]
        declared = [s.name for s in self.input_specs + self.output_specs]
        if sorted(names) != sorted(declared):
            raise AbawRtError(f"engine '{self.plan}': has tensors {names}, its sidecar declares {declared}")
        if self._trt_engine.num_optimization_profiles != len(self.profiles):
            raise AbawRtError(
                f"engine '{self.plan}': has {self._trt_engine.num_optimization_profiles} optimisation profiles, "
                f"its sidecar declares {len(self.profiles)}"
            )
        for k, p in enumerate(self.profiles):
            for name, want in p.shapes(self.input_specs).items():
                got = tuple(tuple(d) for d in self._trt_engine.get_tensor_profile_shape(name, k))
                if got != want:
                    raise AbawRtError(
                        f"engine '{self.plan}': profile {k} ('{p.name}') input '{name}' is {got}, "
                        f"its sidecar says {want}"
                    )
        to_torch = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.int32: torch.int32,
            trt.int64: torch.int64,
        }
        dtypes = {}
        for name in names:
            dtype = self._trt_engine.get_tensor_dtype(name)
            if dtype not in to_torch:
                raise AbawRtError(f"engine '{self.plan}': tensor '{name}' has type {dtype}, expected float or int")
            dtypes[name] = to_torch[dtype]
        return dtypes

    def _deactivate(self) -> None:
        if getattr(self, "_stream", None) is not None:
            self._stream.synchronize()
        self._graphs = {}
        self._buffers = {}
        self._trt_context = None
        self._trt_engine = None
        self._trt_runtime = None
        self._stream = None

    # -- inference ----------------------------------------------------------------------------------
    def _infer(self, feeds: Mapping[str, np.ndarray], axes: Mapping[str, int]) -> dict[str, np.ndarray]:
        torch = self._torch
        batch, time = axes[BATCH], axes.get(TIME, 1)
        profiles = self.profiles if self.pinned is None else (self.profiles[self.pinned],)
        run_b, run_t = self.buckets.bucket(batch, time) if self.buckets else (batch, time)
        if not fits_any(profiles, run_b, run_t):
            run_b, run_t = batch, time  # a bucket past the profiles: run the exact shape
        k = select_profile(profiles, run_b, run_t)  # AbawRtError outside every profile
        k = k if self.pinned is None else self.pinned
        if (run_b, run_t) != (batch, time):
            feeds = pad_feeds(feeds, self.input_specs, run_b, run_t)
        with torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            device_out = self._run_graph(k, feeds) if self.cuda_graphs else self._run(k, feeds)
            host = {name: t.cpu().numpy() for name, t in device_out.items()}  # waits for the stream
        out = {name: a.astype(np.float32, copy=False) for name, a in host.items()}
        return unpad_outputs(out, batch, time) if (run_b, run_t) != (batch, time) else out

    def _host_tensor(self, name: str, arr: np.ndarray):
        return self._torch.from_numpy(np.ascontiguousarray(arr)).to(self._dtypes[name])

    def _buffer(self, name: str, shape: tuple[int, ...]):
        """A device view of ``shape`` over the tensor's reused buffer (grown when too small)."""
        n = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < n:
            buf = self._torch.empty(max(n, 1), dtype=self._dtypes[name], device=self._device)
            self._buffers[name] = buf
        return buf[:n].view(shape)

    def _set_io(self, trt_context, k: int, feeds: Mapping[str, np.ndarray], alloc) -> tuple[dict, dict]:
        """Select profile ``k``, set input shapes and addresses; returns (device inputs, device outputs)."""
        stream = self._stream.cuda_stream
        if trt_context is not self._trt_context or self._profile != k:
            # Contexts may share a profile: on by default since TensorRT 10 (PROFILE_SHARING_0806), always on 11.
            if not trt_context.set_optimization_profile_async(k, stream):
                raise AbawRtError(
                    f"engine '{self.plan}': TensorRT refused optimisation profile {k} ('{self.profiles[k].name}')"
                    + (" for a CUDA-graph context; run without cuda_graphs" if self.cuda_graphs else "")
                )
            if trt_context is self._trt_context:
                self._profile = k
        inputs, outputs = {}, {}
        for spec in self.input_specs:
            host = self._host_tensor(spec.name, feeds[spec.name])
            dev = alloc(spec.name, tuple(host.shape))
            dev.copy_(host)
            if not trt_context.set_input_shape(spec.name, tuple(host.shape)):
                raise AbawRtError(f"engine '{self.plan}': refused input '{spec.name}' of shape {tuple(host.shape)}")
            trt_context.set_tensor_address(spec.name, dev.data_ptr())
            inputs[spec.name] = dev
        for spec in self.output_specs:
            shape = tuple(trt_context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise AbawRtError(f"engine '{self.plan}': output '{spec.name}' shape {shape} is unresolved")
            dev = alloc(spec.name, shape)
            trt_context.set_tensor_address(spec.name, dev.data_ptr())
            outputs[spec.name] = dev
        return inputs, outputs

    def _execute(self, trt_context) -> None:
        if not trt_context.execute_async_v3(self._torch.cuda.current_stream().cuda_stream):
            raise AbawRtError(f"engine '{self.plan}': TensorRT failed to execute (see its log above)")

    def _run(self, k: int, feeds: Mapping[str, np.ndarray]) -> dict:
        _, outputs = self._set_io(self._trt_context, k, feeds, self._buffer)
        self._execute(self._trt_context)
        return outputs

    def _run_graph(self, k: int, feeds: Mapping[str, np.ndarray]) -> dict:
        """Replay the CUDA graph of this exact shape, capturing it first (own context, static buffers)."""
        torch = self._torch
        key = (k,) + tuple(tuple(feeds[s.name].shape) for s in self.input_specs)
        entry = self._graphs.get(key)
        if entry is None:
            trt_context = self._trt_engine.create_execution_context()

            def alloc(name, shape):
                return torch.empty(shape, dtype=self._dtypes[name], device=self._device)

            inputs, outputs = self._set_io(trt_context, k, feeds, alloc)
            self._execute(trt_context)  # TensorRT finishes shape-dependent setup before capture
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                self._execute(trt_context)
            entry = self._graphs[key] = (trt_context, graph, inputs, outputs)
        _, graph, inputs, outputs = entry
        for name, dev in inputs.items():
            dev.copy_(self._host_tensor(name, feeds[name]))
        graph.replay()
        return outputs

    def _describe(self) -> dict:
        return {"device": f"cuda:{self.device_index}", "gpu": self.gpu.name, "cuda_graphs": self.cuda_graphs}

    def __repr__(self) -> str:
        return f"TrtRunner(plan={str(self.plan)!r}, precision={self.precision!r}, cuda_graphs={self.cuda_graphs})"
