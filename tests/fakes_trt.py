"""Fakes of the CUDA device layer's primitives and of TensorRT's Runtime / ICudaEngine / IExecutionContext.

They implement exactly the calls ``TrtRunner`` makes and check the contract a real GPU enforces
only by crashing or returning garbage; a breach raises ``ContractError`` naming the call:

- streams are asynchronous: copies and executions are queued and run only at ``stream_synchronize``
  (so host memory read before the sync holds stale bytes), and async copies need pinned host memory;
- every device address must lie inside a live allocation with room for the bytes used there;
- ``execute_async_v3``: a profile selected, every input shape set and inside that profile, every
  I/O tensor given an address with room for its shape, a stream this device created;
- a CUDA graph is replayed only with the input shapes it was captured for, and only after each input
  buffer was last written with exactly the captured shape's bytes.

The fake engine computes, per frame, ``sum over feature inputs of mean(x[b, t]) * (c + 1) + 1e-3 *
lengths[b]`` for output channel ``c``, in the engine's tensor types (``reference`` gives the same in numpy).
"""

from __future__ import annotations

import hashlib
import json
import math
import types
from dataclasses import replace
from pathlib import Path

import numpy as np

from abaw_rt.cuda.gpu import GpuInfo
from abaw_rt.trt.profiles import default_profiles
from abaw_rt.trt.sidecar import write_sidecar

H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", (9, 0), 80 << 30)


class ContractError(AssertionError):
    """The code under test broke the CUDA / TensorRT call contract."""


# -- the CUDA primitives (abaw_rt.cuda.memory.CudaApi) ----------------------------------------------------------
class _Stream:
    def __init__(self, ptr: int):
        self.ptr = ptr
        self.queue: list = []
        self.capture: list | None = None  # ops recorded while capturing


class _Graph:
    def __init__(self, ops: list):
        self.ops = [op for op, _ in ops]
        self.checks = [check for _, check in ops if check is not None]
        self.launches = 0


class FakeCuda:
    """Device memory as numpy bytes, streams as queues run at synchronise, graphs as recorded queues."""

    name = "fake"

    def __init__(self) -> None:
        self.device: dict[int, np.ndarray] = {}  # base pointer -> bytes
        self.pinned: list[np.ndarray] = []
        self.streams: dict[int, _Stream] = {}
        self.last_write: dict[int, int] = {}  # allocation base -> bytes of the latest queued write into it
        self.mallocs = 0
        self.syncs = 0
        self.graphs: list[_Graph] = []
        self._next = 0x7F00_0000_0000

    # memory
    def malloc(self, nbytes: int) -> int:
        ptr, self._next = self._next, self._next + ((nbytes + 511) // 256) * 256
        self.device[ptr] = np.full(nbytes, 0xAB, np.uint8)  # garbage until written
        self.mallocs += 1
        return ptr

    def free(self, ptr: int) -> None:
        if ptr not in self.device:
            raise ContractError(f"free of {ptr:#x}: not a live allocation")
        del self.device[ptr]

    def host_alloc(self, nbytes: int) -> np.ndarray:
        buf = np.full(nbytes, 0xCD, np.uint8)
        self.pinned.append(buf)
        return buf

    def host_free(self, buf: np.ndarray) -> None:
        if not any(b is buf for b in self.pinned):
            raise ContractError("host_free of memory that host_alloc did not return")
        self.pinned = [b for b in self.pinned if b is not buf]

    def resolve(self, ptr: int, nbytes: int, what: str) -> np.ndarray:
        """The device bytes [ptr, ptr + nbytes), or a ContractError."""
        for base, mem in self.device.items():
            if base <= ptr < base + mem.nbytes:
                if ptr + nbytes > base + mem.nbytes:
                    raise ContractError(
                        f"{what}: {nbytes} bytes at {ptr:#x} overrun its allocation of {mem.nbytes} bytes"
                    )
                return mem[ptr - base : ptr - base + nbytes]
        raise ContractError(f"{what}: address {ptr:#x} is not inside any live device allocation")

    def _base(self, ptr: int) -> int:
        return next(b for b, m in self.device.items() if b <= ptr < b + m.nbytes)

    def _pinned_view(self, arr: np.ndarray, what: str) -> np.ndarray:
        if not any(np.shares_memory(arr, b) for b in self.pinned):
            raise ContractError(f"{what}: async copy with pageable host memory (needs pinned memory)")
        return arr

    # streams
    def stream_create(self) -> _Stream:
        s = _Stream(0x5000 + 16 * len(self.streams))
        self.streams[s.ptr] = s
        return s

    def stream_ptr(self, stream: _Stream) -> int:
        return stream.ptr

    def stream_of(self, ptr: int, what: str) -> _Stream:
        if ptr not in self.streams:
            raise ContractError(f"{what}: stream {ptr!r} was not created on this device")
        return self.streams[ptr]

    def enqueue(self, stream: _Stream, op, check=None) -> None:
        (stream.capture if stream.capture is not None else stream.queue).append((op, check))

    def stream_synchronize(self, stream: _Stream) -> None:
        if stream.capture is not None:
            raise ContractError("stream synchronised while capturing a CUDA graph")
        queue, stream.queue = stream.queue, []
        for op, _ in queue:
            op()
        self.syncs += 1

    def stream_destroy(self, stream: _Stream) -> None:
        if stream.queue:
            raise ContractError("stream destroyed with queued work")
        del self.streams[stream.ptr]

    # copies (queued; they read their source when the stream runs them)
    def copy_htod_async(self, dst: int, src: np.ndarray, stream: _Stream) -> None:
        src = self._pinned_view(src, "copy_htod_async")
        mem = self.resolve(dst, src.nbytes, "copy_htod_async")
        self.last_write[self._base(dst)] = src.nbytes
        self.enqueue(stream, lambda: np.copyto(mem, src))

    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream: _Stream) -> None:
        dst = self._pinned_view(dst, "copy_dtoh_async")
        mem = self.resolve(src, dst.nbytes, "copy_dtoh_async")
        self.enqueue(stream, lambda: np.copyto(dst, mem))

    def copy_dtod_async(self, dst: int, src: int, nbytes: int, stream: _Stream) -> None:
        to, frm = self.resolve(dst, nbytes, "copy_dtod_async dst"), self.resolve(src, nbytes, "copy_dtod_async src")
        self.last_write[self._base(dst)] = nbytes
        self.enqueue(stream, lambda: np.copyto(to, frm))

    # graphs
    def begin_capture(self, stream: _Stream) -> None:
        if stream.capture is not None:
            raise ContractError("begin_capture on a stream already capturing")
        stream.capture = []

    def end_capture(self, stream: _Stream) -> _Graph:
        if stream.capture is None:
            raise ContractError("end_capture without begin_capture")
        graph, stream.capture = _Graph(stream.capture), None
        self.graphs.append(graph)
        return graph

    def graph_launch(self, graph: _Graph, stream: _Stream) -> None:
        for check in graph.checks:
            check()
        graph.launches += 1
        stream.queue.extend((op, None) for op in graph.ops)

    def graph_destroy(self, graph: _Graph) -> None:
        self.graphs.remove(graph)


# -- TensorRT ---------------------------------------------------------------------------------------------
class _DataType:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"DataType.{self.name.upper()}"


DTYPES = {n: _DataType(n) for n in ("float32", "float16", "int32", "int64", "bool")}


class FakeEngine:
    def __init__(self, spec: dict, cuda: FakeCuda):
        self.spec, self.cuda = spec, cuda
        self.tensors = {t["name"]: t for t in spec["tensors"]}
        self.contexts: list[FakeContext] = []

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.spec["profiles"])

    def get_tensor_name(self, i: int) -> str:
        return self.spec["tensors"][i]["name"]

    def get_tensor_dtype(self, name: str) -> _DataType:
        return DTYPES[self.tensors[name]["dtype"]]

    def get_tensor_profile_shape(self, name: str, k: int) -> list[list[int]]:
        return self.spec["profiles"][k][name]

    def create_execution_context(self) -> "FakeContext":
        ctx = FakeContext(self)
        self.contexts.append(ctx)
        return ctx


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine, self.cuda = engine, engine.cuda
        self.profile: int | None = None
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.profiles_set: list[int] = []
        self.executions = 0

    def _inputs(self) -> list[dict]:
        return [t for t in self.engine.spec["tensors"] if t["mode"] == "input"]

    def set_optimization_profile_async(self, k: int, stream: int) -> bool:
        self.cuda.stream_of(stream, "set_optimization_profile_async")
        if not 0 <= k < self.engine.num_optimization_profiles:
            raise ContractError(f"set_optimization_profile_async({k}): the engine has no such profile")
        self.profile, self.shapes = k, {}
        self.profiles_set.append(k)
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        if self.profile is None:
            raise ContractError(f"set_input_shape('{name}') before an optimisation profile was selected")
        if self.engine.tensors.get(name, {}).get("mode") != "input":
            raise ContractError(f"set_input_shape('{name}'): not an input tensor")
        lo, _, hi = self.engine.get_tensor_profile_shape(name, self.profile)
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(lo) or any(not a <= d <= b for a, d, b in zip(lo, shape, hi)):
            return False  # TensorRT refuses (and logs) a shape outside the profile
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        t = self.engine.tensors[name]
        if t["mode"] == "input":
            return self.shapes.get(name, tuple(t["shape"]))
        first = next((self.shapes.get(i["name"]) for i in self._inputs() if len(i["shape"]) == 3), None)
        return (first[0], first[1], t["shape"][2]) if first else tuple(t["shape"])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if name not in self.engine.tensors:
            raise ContractError(f"set_tensor_address('{name}'): no such tensor")
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        stream = self.cuda.stream_of(stream_handle, "execute_async_v3")
        if self.profile is None:
            raise ContractError("execute_async_v3 before an optimisation profile was selected")
        for t in self._inputs():
            if t["name"] not in self.shapes:
                raise ContractError(f"execute_async_v3: input '{t['name']}' has no shape set")
        views, live = {}, {}
        for name, t in self.engine.tensors.items():
            if name not in self.addresses:
                raise ContractError(f"execute_async_v3: tensor '{name}' has no address")
            shape = self.get_tensor_shape(name)
            nbytes = math.prod(shape) * np.dtype(t["dtype"]).itemsize
            mem = self.cuda.resolve(self.addresses[name], nbytes, f"execute_async_v3: tensor '{name}' {shape}")
            views[name] = mem.view(t["dtype"]).reshape(shape)
            live[name] = (self.addresses[name], nbytes)
        self.executions += 1
        captured = {n: self.shapes[n] for n in self.shapes}
        addresses = dict(self.addresses)
        self.cuda.enqueue(stream, lambda: self._compute(views, live), lambda: self._check_replay(captured, addresses))
        return True

    def _check_replay(self, captured: dict, addresses: dict) -> None:
        if self.shapes != captured or self.addresses != addresses:
            raise ContractError(f"CUDA graph captured for {captured} replayed after its context changed to {self.shapes}")
        for t in self._inputs():
            want = math.prod(captured[t["name"]]) * np.dtype(t["dtype"]).itemsize
            got = self.cuda.last_write.get(self.cuda._base(addresses[t["name"]]))
            if got != want:
                raise ContractError(
                    f"CUDA graph captured for input '{t['name']}' {captured[t['name']]} ({want} bytes) "
                    f"replayed after {got} bytes were copied in"
                )

    def _compute(self, views: dict, live: dict) -> None:
        for name, (ptr, nbytes) in live.items():  # freed or regrown before the stream ran the work?
            self.cuda.resolve(ptr, nbytes, f"execute_async_v3 (when the stream ran it): tensor '{name}'")
        inputs = {t["name"]: views[t["name"]] for t in self._inputs()}
        outputs = [t for t in self.engine.spec["tensors"] if t["mode"] == "output"]
        for t in outputs:
            views[t["name"]][...] = reference(inputs, t["shape"][2]).astype(t["dtype"])


def reference(inputs: dict, channels: int) -> np.ndarray:
    """The fake engine's function, in float32 on inputs already in the engine's types."""
    feats = [np.asarray(a, np.float32) for a in inputs.values() if a.ndim == 3]
    base = sum(f.mean(axis=2) for f in feats)
    lengths = next((np.asarray(a, np.float32) for a in inputs.values() if a.ndim == 1), np.zeros(base.shape[0]))
    c = np.arange(channels, dtype=np.float32) + 1
    return base[:, :, None] * c + 1e-3 * lengths[:, None, None]


class FakeRuntime:
    def __init__(self, logger, cuda: FakeCuda):
        if not isinstance(logger, FakeLogger):
            raise ContractError("trt.Runtime needs a trt.Logger")
        self.cuda = cuda
        self.engines: list[FakeEngine] = []

    def deserialize_cuda_engine(self, plan: bytes):
        try:
            spec = json.loads(plan)
        except (ValueError, UnicodeDecodeError):
            return None  # TensorRT logs the error and returns None
        engine = FakeEngine(spec, self.cuda)
        self.engines.append(engine)
        return engine


class FakeLogger:
    VERBOSE, WARNING = "verbose", "warning"

    def __init__(self, level):
        self.level = level


def fake_tensorrt(cuda: FakeCuda, version: str = "10.13.3.9") -> types.ModuleType:
    """A stand-in ``tensorrt`` module with the calls TrtRunner makes; its runtimes land in ``.runtimes``."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.Logger = FakeLogger
    trt.runtimes = []

    def runtime(logger):
        r = FakeRuntime(logger, cuda)
        trt.runtimes.append(r)
        return r

    trt.Runtime = runtime
    for name, dt in DTYPES.items():
        setattr(trt, name, dt)
    return trt


def install(monkeypatch, version: str = "10.13.3.9") -> tuple[FakeCuda, types.ModuleType]:
    """One fake H100: the driver sees it, ``import tensorrt`` gives the fake; returns (cuda, trt)."""
    import sys

    import abaw_rt.cuda.gpu as gpu

    cuda = FakeCuda()
    trt = fake_tensorrt(cuda, version)
    monkeypatch.setattr(gpu, "cuda_devices", lambda: [H100])
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return cuda, trt


def make_fake_engine(folder: Path, dtype: str = "float32", profiles=None, tamper=None) -> Path:
    """An engine plan the fake runtime loads (JSON: tensors, types, profile shapes) with a matching sidecar.

    ``tamper(spec)`` may change the plan's content after the sidecar was derived (to test refusals).
    """
    from tests.test_trt_sidecar import make_engine

    profiles = tuple(profiles or default_profiles(300))
    plan, sidecar = make_engine(folder, profiles=profiles)
    info = sidecar.onnx_info()
    tensors = [
        {
            "name": s.name,
            "mode": mode,
            "dtype": dtype if s.dtype == "float32" else s.dtype,
            "shape": [d if isinstance(d, int) else -1 for d in s.shape],
        }
        for mode, specs in (("input", info.inputs), ("output", info.outputs))
        for s in specs
    ]
    shapes = [{n: [list(x) for x in s] for n, s in p.shapes(info.inputs).items()} for p in profiles]
    spec = {"tensors": tensors, "profiles": shapes}
    if tamper is not None:
        tamper(spec)
    plan.write_bytes(json.dumps(spec).encode())
    write_sidecar(plan, replace(sidecar, plan_sha256=hashlib.sha256(plan.read_bytes()).hexdigest()))
    return plan
