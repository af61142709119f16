"""CUDA layer: the device-memory primitives on PyCUDA (what many Jetson images carry).

PyCUDA works on the device's primary context (the one the CUDA runtime, and so TensorRT, uses),
retained and pushed here. PyCUDA has no stream-capture API, so CUDA graphs go to the driver
(``libcuda``) through ctypes, on PyCUDA's own stream handle. PyCUDA errors and driver error codes
become ``AbawRtError``. The names used on ``cuda`` (``pycuda.driver``) are checked against PyCUDA's
sources by ``tests/test_cuda_api_conformance.py``.
"""

from __future__ import annotations

import ctypes

import numpy as np

from abaw_rt.cuda.gpu import driver_library
from abaw_rt.errors import AbawRtError

_CAPTURE_MODE_THREAD_LOCAL = 1  # CUstreamCaptureMode


class PycudaApi:
    name = "pycuda"

    def __init__(self, device: int = 0):
        import pycuda.driver as cuda  # ImportError: open_cuda reports it

        self.cuda = cuda
        self._driver = driver_library()
        try:
            cuda.init()
            self._context = cuda.Device(device).retain_primary_context()
            self._context.push()
        except cuda.Error as exc:
            raise AbawRtError(f"CUDA (pycuda) device {device}: {exc}") from None
        self._device: dict[int, object] = {}  # pointer -> DeviceAllocation

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except self.cuda.Error as exc:
            raise AbawRtError(f"CUDA {what} failed (pycuda): {exc}") from None

    def _drv(self, what: str, code: int) -> None:
        if code != 0:
            name = ctypes.c_char_p()
            self._driver.cuGetErrorName(code, ctypes.byref(name))
            raise AbawRtError(f"CUDA {what} failed: {(name.value or b'error %d' % code).decode()}")

    # -- memory -----------------------------------------------------------------------------------------
    def malloc(self, nbytes: int) -> int:
        alloc = self._call(f"mem_alloc({nbytes})", self.cuda.mem_alloc, nbytes)
        self._device[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        self._call("free", self._device.pop(ptr).free)

    def host_alloc(self, nbytes: int) -> np.ndarray:
        return self._call(f"pagelocked_empty({nbytes})", self.cuda.pagelocked_empty, nbytes, np.uint8)

    def host_free(self, buf: np.ndarray) -> None:
        self._call("free (pinned)", buf.base.free)

    # -- streams and copies -----------------------------------------------------------------------------
    def stream_create(self):
        return self._call("Stream", self.cuda.Stream)

    def stream_ptr(self, stream) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream) -> None:
        self._call("stream synchronize", stream.synchronize)

    def stream_destroy(self, stream) -> None:
        pass  # PyCUDA destroys a stream with its Python object

    def copy_htod_async(self, dst: int, src: np.ndarray, stream) -> None:
        self._call("memcpy_htod_async", self.cuda.memcpy_htod_async, dst, src, stream)

    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream) -> None:
        self._call("memcpy_dtoh_async", self.cuda.memcpy_dtoh_async, dst, src, stream)

    def copy_dtod_async(self, dst: int, src: int, nbytes: int, stream) -> None:
        self._call("memcpy_dtod_async", self.cuda.memcpy_dtod_async, dst, src, nbytes, stream)

    # -- CUDA graphs (driver API) -----------------------------------------------------------------------
    def begin_capture(self, stream) -> None:
        handle = ctypes.c_void_p(int(stream.handle))
        self._drv("cuStreamBeginCapture", self._driver.cuStreamBeginCapture_v2(handle, _CAPTURE_MODE_THREAD_LOCAL))

    def end_capture(self, stream):
        graph, exe = ctypes.c_void_p(), ctypes.c_void_p()
        self._drv("cuStreamEndCapture", self._driver.cuStreamEndCapture(ctypes.c_void_p(int(stream.handle)),
                                                                         ctypes.byref(graph)))  # fmt: skip
        code = self._driver.cuGraphInstantiateWithFlags(ctypes.byref(exe), graph, ctypes.c_ulonglong(0))
        if code != 0:
            self._driver.cuGraphDestroy(graph)
            self._drv("cuGraphInstantiateWithFlags", code)
        return graph, exe

    def graph_launch(self, graph, stream) -> None:
        self._drv("cuGraphLaunch", self._driver.cuGraphLaunch(graph[1], ctypes.c_void_p(int(stream.handle))))

    def graph_destroy(self, graph) -> None:
        self._drv("cuGraphExecDestroy", self._driver.cuGraphExecDestroy(graph[1]))
        self._drv("cuGraphDestroy", self._driver.cuGraphDestroy(graph[0]))
