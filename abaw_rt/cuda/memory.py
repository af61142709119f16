"""CUDA layer: device arrays that grow, pinned host staging, a stream, async copies and CUDA graphs (torch-free).

Modelled on Polygraphy's ``polygraphy/cuda/cuda.py``: a handful of objects over a small set of
primitives (``CudaApi``), implemented on NVIDIA's cuda-python (``abaw_rt.cuda.cuda_python``, the
default) and on PyCUDA (``abaw_rt.cuda.pycuda_api``). Every CUDA error becomes an ``AbawRtError``
naming the call and CUDA's own error name. The objects also keep the one rule a caller most easily
breaks: a pinned host buffer that an async copy is reading or writing may not be touched until its
stream has been synchronised (``HostBusyError``).
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import numpy as np

from abaw_rt.errors import AbawRtError
from abaw_rt.vocab import CudaBinding


class HostBusyError(RuntimeError):
    """A pinned host buffer was used while an async copy on an unsynchronised stream still owns it."""


class CudaApi(Protocol):
    """The primitives the layer needs; pointers are ints, host memory is a uint8 numpy array."""

    name: str

    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def host_alloc(self, nbytes: int) -> np.ndarray: ...
    def host_free(self, buf: np.ndarray) -> None: ...
    def stream_create(self) -> object: ...
    def stream_ptr(self, stream: object) -> int: ...
    def stream_synchronize(self, stream: object) -> None: ...
    def stream_destroy(self, stream: object) -> None: ...
    def copy_htod_async(self, dst: int, src: np.ndarray, stream: object) -> None: ...
    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream: object) -> None: ...
    def copy_dtod_async(self, dst: int, src: int, nbytes: int, stream: object) -> None: ...
    def begin_capture(self, stream: object) -> None: ...
    def end_capture(self, stream: object) -> object: ...  # an instantiated, launchable graph
    def graph_launch(self, graph: object, stream: object) -> None: ...
    def graph_destroy(self, graph: object) -> None: ...


# binding -> "module:Class"; imported only when chosen.
BINDINGS = {
    CudaBinding.cuda_python: "abaw_rt.cuda.cuda_python:CudaPythonApi",
    CudaBinding.pycuda: "abaw_rt.cuda.pycuda_api:PycudaApi",
}


def open_cuda(binding: CudaBinding | str = CudaBinding.auto, device: int = 0) -> CudaApi:
    """The CUDA primitives on ``device`` through ``binding``; ``auto`` takes cuda-python, else pycuda.

    Raises:
        AbawRtError: no CUDA device (checked first, through the driver), an unknown binding, or
            the chosen binding not installed (naming the ``[trt]`` extra).
    """
    import importlib

    from abaw_rt.cuda.gpu import require_gpu

    try:
        binding = CudaBinding(binding)
    except ValueError:
        raise AbawRtError(f"CUDA binding {binding!r}: expected one of {[b.value for b in CudaBinding]}") from None
    require_gpu(device, "the CUDA device layer")
    order = [binding] if binding != CudaBinding.auto else [CudaBinding.cuda_python, CudaBinding.pycuda]
    missing = []
    for b in order:
        module, cls = BINDINGS[b].split(":")
        try:
            return getattr(importlib.import_module(module), cls)(device)
        except ImportError as exc:
            missing.append(f"{b.value}: {exc}")
    raise AbawRtError(
        f"no CUDA Python bindings ({'; '.join(missing)}); install them with: pip install 'abaw-rt[trt]' "
        "(cuda-bindings), or pip install pycuda"
    )


class Stream:
    """A CUDA stream; every copy and launch of the runner goes through one."""

    def __init__(self, api: CudaApi):
        self.api = api
        self.handle = api.stream_create()
        self._busy: list[PinnedBuffer] = []

    @property
    def ptr(self) -> int:
        """The raw ``cudaStream_t`` (what TensorRT's ``execute_async_v3`` takes)."""
        return self.api.stream_ptr(self.handle)

    def upload(self, dst: "DeviceArray", src: "PinnedBuffer", nbytes: int) -> None:
        """Async host -> device of the first ``nbytes`` of ``src``."""
        dst.check_fits(nbytes, "upload")
        self.api.copy_htod_async(dst.ptr, src.claim(self, nbytes), self.handle)
        self._busy.append(src)

    def download(self, dst: "PinnedBuffer", src: "DeviceArray", nbytes: int) -> None:
        """Async device -> host into the first ``nbytes`` of ``dst`` (readable after ``synchronize``)."""
        src.check_fits(nbytes, "download")
        self.api.copy_dtoh_async(dst.claim(self, nbytes), src.ptr, self.handle)
        self._busy.append(dst)

    def copy_from_device(self, dst: "DeviceArray", src_ptr: int, nbytes: int) -> None:
        """Async device -> device (e.g. from a CUDA torch tensor's ``data_ptr()``)."""
        dst.check_fits(nbytes, "device copy")
        self.api.copy_dtod_async(dst.ptr, src_ptr, nbytes, self.handle)

    def synchronize(self) -> None:
        self.api.stream_synchronize(self.handle)
        for buf in self._busy:
            buf.release(self)
        self._busy = []

    def close(self) -> None:
        if self.handle is not None:
            self.synchronize()
            self.api.stream_destroy(self.handle)
            self.handle = None


class DeviceArray:
    """Device memory that grows on demand (``reserve``); its address changes only when it grows."""

    def __init__(self, api: CudaApi, nbytes: int = 0):
        self.api = api
        self.ptr = 0
        self.nbytes = 0
        if nbytes:
            self.reserve(nbytes)

    def reserve(self, nbytes: int) -> bool:
        """Make room for ``nbytes``; returns whether it had to reallocate (the address changed)."""
        if nbytes <= self.nbytes and self.ptr:
            return False
        self.free()
        self.ptr = self.api.malloc(max(int(nbytes), 1))
        self.nbytes = max(int(nbytes), 1)
        return True

    def check_fits(self, nbytes: int, what: str) -> None:
        if nbytes > self.nbytes:
            raise RuntimeError(f"{what} of {nbytes} bytes into a device array of {self.nbytes}")

    def free(self) -> None:
        if self.ptr:
            self.api.free(self.ptr)
        self.ptr, self.nbytes = 0, 0


class PinnedBuffer:
    """Page-locked host memory (what async copies need), viewed as numpy arrays of any shape and type."""

    def __init__(self, api: CudaApi, nbytes: int = 0):
        self.api = api
        self._buf: np.ndarray | None = None
        self._owner: Stream | None = None
        if nbytes:
            self.reserve(nbytes)

    @property
    def nbytes(self) -> int:
        return 0 if self._buf is None else self._buf.nbytes

    def reserve(self, nbytes: int) -> None:
        if self._buf is not None and nbytes <= self._buf.nbytes:
            return
        self._check_free("grown")
        self.free()
        self._buf = self.api.host_alloc(max(int(nbytes), 1))

    def write(self, arr: np.ndarray, dtype: np.dtype) -> int:
        """Copy ``arr`` in, converted to ``dtype`` (growing if needed); returns the bytes written."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(arr.shape) * dtype.itemsize
        self.reserve(nbytes)
        np.copyto(self.view(arr.shape, dtype), arr, casting="unsafe")
        return nbytes

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The first bytes as an array of ``shape`` (shares the memory: copy it before the next call)."""
        self._check_free("read or written")
        dtype = np.dtype(dtype)
        n = math.prod(shape) * dtype.itemsize
        if n > self.nbytes:
            raise RuntimeError(f"view of {n} bytes on a pinned buffer of {self.nbytes}")
        return self._buf[:n].view(dtype).reshape(shape)

    def claim(self, stream: Stream, nbytes: int) -> np.ndarray:
        """Hand the first ``nbytes`` to an async copy on ``stream`` until it is synchronised."""
        self._check_free("given to another copy")
        if nbytes > self.nbytes:
            raise RuntimeError(f"copy of {nbytes} bytes with a pinned buffer of {self.nbytes}")
        self._owner = stream
        return self._buf[:nbytes]

    def release(self, stream: Stream) -> None:
        if self._owner is stream:
            self._owner = None

    def _check_free(self, what: str) -> None:
        if self._owner is not None:
            raise HostBusyError(
                f"pinned host buffer {what} while an async copy on an unsynchronised stream owns it "
                "(call stream.synchronize() first)"
            )

    def free(self) -> None:
        if self._buf is not None:
            self.api.host_free(self._buf)
        self._buf = None


class CudaGraph:
    """The work ``enqueue`` puts on ``stream``, captured once and replayed with ``launch``."""

    def __init__(self, stream: Stream, enqueue: Callable[[], None]):
        self.stream = stream
        stream.api.begin_capture(stream.handle)
        try:
            enqueue()
        finally:
            self.handle = stream.api.end_capture(stream.handle)  # ends the capture even when enqueue failed

    def launch(self) -> None:
        self.stream.api.graph_launch(self.handle, self.stream.handle)

    def close(self) -> None:
        if self.handle is not None:
            self.stream.api.graph_destroy(self.handle)
            self.handle = None
