"""Runner layer: TrtRunner, a TensorRT engine plan built by ``abaw-rt build`` (NVIDIA GPU only).

Creating the runner reads the engine's JSON sidecar and refuses, before any TensorRT object
exists, an engine that cannot run here: no CUDA device (checked first: the lean runtime segfaults
without one), another TensorRT version or GPU, plan or ONNX bytes that differ from the sidecar's
sha256; the error prints the command that rebuilds it. Entering the context deserialises the plan
and creates an execution context; leaving frees them.

Per call: the tightest optimisation profile that accepts (batch, time) is selected, input shapes
are set, inputs are staged in pinned host memory (converted to the engine's types) and copied
asynchronously into device buffers (``abaw_rt.cuda.memory``: reused across calls, grown when a
larger shape arrives), ``execute_async_v3`` runs on the runner's CUDA stream, outputs are copied
back into pinned memory and, after the stream is synchronised, into fresh float32 arrays. With
``cuda_graphs`` each shape bucket gets its own execution context, static buffers and captured CUDA
graph (inputs padded up to the bucket). No torch: the device layer runs on cuda-python or PyCUDA.
CUDA torch tensors are accepted as feeds when torch is there: copied device to device, at their
exact shape (no bucket padding), their values not range-checked (that would need the host).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from abaw_rt.cuda.gpu import device_index
from abaw_rt.cuda.memory import CudaApi, CudaGraph, DeviceArray, PinnedBuffer, Stream, open_cuda
from abaw_rt.errors import AbawRtError
from abaw_rt.runners.base import Runner
from abaw_rt.runners.buckets import ShapeBuckets, pad_feeds, unpad_outputs
from abaw_rt.specs import BATCH, TIME
from abaw_rt.trt.compat import import_tensorrt, make_logger
from abaw_rt.trt.profiles import fits_any, select_profile
from abaw_rt.trt.sidecar import RuntimeInfo, check_sidecar, read_sidecar
from abaw_rt.vocab import CudaBinding


class _Io:
    """One tensor's device buffer and its pinned host staging."""

    def __init__(self, api: CudaApi):
        self.device = DeviceArray(api)
        self.host = PinnedBuffer(api)

    def free(self) -> None:
        self.device.free()
        self.host.free()


@dataclass
class _Captured:
    """A CUDA graph of one (profile, input shapes), with the context and static buffers it was captured on."""

    trt_context: object
    io: dict[str, _Io]
    graph: CudaGraph
    out_shapes: dict[str, tuple[int, ...]]


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
        cuda: the CUDA Python bindings ("auto": cuda-python, else pycuda; "cuda-python"; "pycuda"), or a
            ready ``abaw_rt.cuda.memory.CudaApi`` object.
        what: how error messages name the model ("extractor 'eff'").

    The interface comes from the sidecar: a fusion engine's from the graph's abaw-rt metadata (``header`` is the
    model's), an extractor engine's from the inputs and outputs recorded at build time (``header`` is None).
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
        cuda: CudaBinding | str | CudaApi = CudaBinding.auto,
        what: str = "engine",
    ):
        super().__init__()
        self.plan = Path(plan)
        self.sidecar = read_sidecar(self.plan)
        self.what = what
        source = f"engine sidecar of '{self.plan}'"
        self.header = self.sidecar.onnx_info(source).header if self.sidecar.is_fusion else None
        self.input_specs, self.output_specs = self.sidecar.io_specs(source)
        self._timed = any(TIME in s.shape for s in self.input_specs)  # an extractor has a batch axis only
        self.precision = self.sidecar.precision
        self.profiles = self.sidecar.profiles
        self.device_index = device_index(device)
        self.cuda_graphs = cuda_graphs
        self.buckets = buckets if buckets is not None else (ShapeBuckets() if cuda_graphs else None)
        self.verbose = verbose
        self.cuda = cuda
        self._device_feeds: dict = {}  # CUDA torch tensors of the current call (see infer)
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
        cuda = self.cuda
        self._api = open_cuda(cuda, self.device_index) if isinstance(cuda, (str, CudaBinding)) else cuda
        self._io: dict[str, _Io] = {}  # the shared context's buffers, reused across calls, grown on demand
        self._graphs: dict[tuple, _Captured] = {}  # (profile, input shapes) -> captured CUDA graph
        self._profile: int | None = None  # the shared context's active profile
        self._keep: list = []  # CUDA torch tensors the stream copies from, until it is synchronised
        self._stream = Stream(self._api)
        try:
            trt = self._trt
            self._trt_logger = make_logger(trt, self.verbose)
            self._trt_runtime = trt.Runtime(self._trt_logger)
            self._trt_engine = self._trt_runtime.deserialize_cuda_engine(self.plan.read_bytes())
            if self._trt_engine is None:
                raise AbawRtError(
                    f"engine '{self.plan}': TensorRT could not load the plan; rebuild it: "
                    f"{self.sidecar.rebuild_command(self.plan)}"
                )
            self._trt_context = self._trt_engine.create_execution_context()
            self._dtypes = self._check_engine(trt)
        except BaseException:
            self._deactivate()
            raise

    def _check_engine(self, trt) -> dict[str, np.dtype]:
        """The engine must have the sidecar's tensors and profiles; returns {tensor: numpy dtype}."""
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
        to_numpy = {trt.float32: np.float32, trt.float16: np.float16, trt.int32: np.int32, trt.int64: np.int64}
        dtypes = {}
        for name in names:
            dtype = self._trt_engine.get_tensor_dtype(name)
            if dtype not in to_numpy:
                raise AbawRtError(f"engine '{self.plan}': tensor '{name}' has type {dtype}, expected float or int")
            dtypes[name] = np.dtype(to_numpy[dtype])
        return dtypes

    def _deactivate(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.synchronize()
        for entry in getattr(self, "_graphs", {}).values():
            entry.graph.close()
            for io in entry.io.values():
                io.free()
        for io in getattr(self, "_io", {}).values():
            io.free()
        self._graphs, self._io = {}, {}
        self._trt_context = None
        self._trt_engine = None
        self._trt_runtime = None
        if stream is not None:
            stream.close()
        self._stream = None

    # -- inference ----------------------------------------------------------------------------------
    def infer(self, feeds: Mapping) -> dict[str, np.ndarray]:
        """As ``Runner.infer``; feeds may also be torch tensors (CUDA ones stay on the device)."""
        torch = sys.modules.get("torch")  # never imported here: a torch tensor means torch is loaded
        if torch is None or not any(isinstance(v, torch.Tensor) for v in feeds.values()):
            return super().infer(feeds)
        host, stand_ins, device = {}, {}, {}
        specs = {s.name: s for s in self.input_specs}
        for name, value in feeds.items():
            if not isinstance(value, torch.Tensor):
                host[name] = value
            elif not value.is_cuda:
                host[name] = value.detach().numpy()
            elif value.device.index != self.device_index:
                raise AbawRtError(
                    f"input '{name}': a tensor on {value.device}, this engine runs on cuda:{self.device_index}"
                )
            else:
                device[name] = value
                stand_ins[name] = _stand_in(specs.get(name), value)
        self._device_feeds = device
        try:
            return super().infer({**host, **stand_ins})  # checks names, types and shapes on the stand-ins
        finally:
            self._device_feeds = {}

    def _infer(self, feeds: Mapping[str, np.ndarray], axes: Mapping[str, int]) -> dict[str, np.ndarray]:
        batch, time = axes[BATCH], axes.get(TIME, 1)
        k, run_b, run_t = self._choose(batch, time, exact=bool(self._device_feeds))
        padded = (run_b, run_t) != (batch, time)
        if padded:
            feeds = pad_feeds(feeds, self.input_specs, run_b, run_t)
        shapes = {s.name: tuple(feeds[s.name].shape) for s in self.input_specs}
        io, out_shapes = self._replay(k, shapes, feeds) if self.cuda_graphs else self._run(k, shapes, feeds)
        self._stream.synchronize()  # outputs are in pinned memory only now
        self._keep = []
        out = {
            name: io[name].host.view(shape, self._dtypes[name]).astype(np.float32) for name, shape in out_shapes.items()
        }
        if padded and not self._timed:
            return {k: np.ascontiguousarray(v[:batch]) for k, v in out.items()}
        return unpad_outputs(out, batch, time) if padded else out

    def _choose(self, batch: int, time: int, exact: bool) -> tuple[int, int, int]:
        """(profile, batch, time) to run: the bucket when it fits a profile, else the exact shape."""
        profiles = self.profiles if self.pinned is None else (self.profiles[self.pinned],)
        run_b, run_t = self.buckets.bucket(batch, time) if self.buckets and not exact else (batch, time)
        run_t = run_t if self._timed else time
        if not fits_any(profiles, run_b, run_t):
            run_b, run_t = batch, time  # a bucket past the profiles: run the exact shape
        k = select_profile(profiles, run_b, run_t)  # AbawRtError outside every profile
        return (k if self.pinned is None else self.pinned), run_b, run_t

    def _nbytes(self, name: str, shape: tuple[int, ...]) -> int:
        return math.prod(shape) * self._dtypes[name].itemsize

    def _bind(self, trt_context, k: int, shapes: Mapping[str, tuple], io: dict[str, _Io]) -> dict[str, tuple]:
        """Select profile ``k``, set input shapes, size the buffers, set every address; returns output shapes."""
        if trt_context is not self._trt_context or self._profile != k:
            # Contexts may share a profile: on by default since TensorRT 10 (PROFILE_SHARING_0806), always on 11.
            if not trt_context.set_optimization_profile_async(k, self._stream.ptr):
                raise AbawRtError(
                    f"engine '{self.plan}': TensorRT refused optimisation profile {k} ('{self.profiles[k].name}')"
                    + (" for a CUDA-graph context; run without cuda_graphs" if self.cuda_graphs else "")
                )
            if trt_context is self._trt_context:
                self._profile = k
        for spec in self.input_specs:
            if not trt_context.set_input_shape(spec.name, shapes[spec.name]):
                raise AbawRtError(f"engine '{self.plan}': refused input '{spec.name}' of shape {shapes[spec.name]}")
        out_shapes = {}
        for spec in self.output_specs:
            shape = tuple(trt_context.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise AbawRtError(f"engine '{self.plan}': output '{spec.name}' shape {shape} is unresolved")
            out_shapes[spec.name] = shape
        for name, shape in {**shapes, **out_shapes}.items():
            if name not in io:
                io[name] = _Io(self._api)
            buf = io[name]
            buf.device.reserve(self._nbytes(name, shape))
            trt_context.set_tensor_address(name, buf.device.ptr)
        return out_shapes

    def _upload(self, io: dict[str, _Io], shapes: Mapping[str, tuple], feeds: Mapping[str, np.ndarray]) -> None:
        """Every input to its device buffer: host arrays through pinned staging, CUDA tensors device to device."""
        for spec in self.input_specs:
            name, dtype = spec.name, self._dtypes[spec.name]
            if name in self._device_feeds:
                torch = sys.modules["torch"]
                tensor = self._device_feeds[name].to(getattr(torch, dtype.name)).contiguous()
                torch.cuda.current_stream(tensor.device).synchronize()  # the tensor is ready before our copy
                self._keep.append(tensor)  # alive until our stream is synchronised
                self._stream.copy_from_device(io[name].device, tensor.data_ptr(), self._nbytes(name, shapes[name]))
            else:
                nbytes = io[name].host.write(feeds[name], dtype)
                self._stream.upload(io[name].device, io[name].host, nbytes)

    def _download(self, io: dict[str, _Io], out_shapes: Mapping[str, tuple]) -> None:
        for name, shape in out_shapes.items():
            nbytes = self._nbytes(name, shape)
            io[name].host.reserve(nbytes)
            self._stream.download(io[name].host, io[name].device, nbytes)

    def _execute(self, trt_context) -> None:
        if not trt_context.execute_async_v3(self._stream.ptr):
            raise AbawRtError(f"engine '{self.plan}': TensorRT failed to execute (see its log above)")

    def _run(self, k: int, shapes: Mapping[str, tuple], feeds: Mapping[str, np.ndarray]):
        self._keep = []
        out_shapes = self._bind(self._trt_context, k, shapes, self._io)
        self._upload(self._io, shapes, feeds)
        self._execute(self._trt_context)
        self._download(self._io, out_shapes)
        return self._io, out_shapes

    def _replay(self, k: int, shapes: Mapping[str, tuple], feeds: Mapping[str, np.ndarray]):
        """Replay the CUDA graph of this exact (profile, shapes), capturing it first (own context, static buffers)."""
        self._keep = []
        key = (k,) + tuple(shapes[s.name] for s in self.input_specs)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(k, shapes, feeds)
        else:
            self._upload(entry.io, shapes, feeds)
            entry.graph.launch()
        self._download(entry.io, entry.out_shapes)
        return entry.io, entry.out_shapes

    def _capture(self, k: int, shapes: Mapping[str, tuple], feeds: Mapping[str, np.ndarray]) -> _Captured:
        trt_context = self._trt_engine.create_execution_context()
        io: dict[str, _Io] = {}
        out_shapes = self._bind(trt_context, k, shapes, io)
        self._upload(io, shapes, feeds)
        self._execute(trt_context)  # this call's outputs; TensorRT finishes shape-dependent setup before capture
        self._stream.synchronize()
        graph = CudaGraph(self._stream, lambda: self._execute(trt_context))
        return _Captured(trt_context, io, graph, out_shapes)

    def _describe(self) -> dict:
        return {"device": f"cuda:{self.device_index}", "gpu": self.gpu.name, "cuda_graphs": self.cuda_graphs}

    def _label(self) -> str:
        return f"{self.what} '{self.plan}'" if self.what == "engine" else f"{self.what} engine '{self.plan}'"

    def example_feeds(self, batch: int, time: int, rng: np.random.Generator | None = None, padded: bool = False):
        """The fusion model's random feeds, or an extractor's (``abaw_rt.feeds.extractor_feeds``; ``time`` unused)."""
        if self.header is not None:
            return super().example_feeds(batch, time, rng=rng, padded=padded)
        from abaw_rt.feeds import extractor_feeds

        seed = int(rng.integers(1 << 31)) if rng is not None else 0
        return extractor_feeds(self.input_specs, batch, seed)

    def __repr__(self) -> str:
        return f"TrtRunner(plan={str(self.plan)!r}, precision={self.precision!r}, cuda_graphs={self.cuda_graphs})"


def _stand_in(spec, tensor) -> np.ndarray:
    """A zero-stride array with a CUDA tensor's shape and type, holding the spec's lowest valid value."""
    low = (
        spec.value_range[0] if spec is not None and spec.value_range and not isinstance(spec.value_range[0], str) else 0
    )
    dtype = np.dtype(str(tensor.dtype).removeprefix("torch."))
    return np.broadcast_to(np.array(low, dtype=dtype), tuple(tensor.shape))
