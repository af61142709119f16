"""CUDA layer: the device-memory primitives on NVIDIA's cuda-python (``cuda-bindings``, runtime API).

Every call returns ``(cudaError_t, *values)``; ``_ok`` turns any error into an ``AbawRtError``
naming the call and CUDA's error name and text. Without a driver the bindings answer
``cudaErrorInsufficientDriver`` rather than crashing (``open_cuda`` checks for a device first anyway).
The names used on ``cudart`` are checked against the installed wheel by
``tests/test_cuda_api_conformance.py``.
"""

from __future__ import annotations

import ctypes

import numpy as np

from abaw_rt.errors import AbawRtError


def _import():
    from cuda.bindings import runtime as cudart  # ImportError: open_cuda tries the next binding

    return cudart


class CudaPythonApi:
    name = "cuda-python"

    def __init__(self, device: int = 0):
        self.cudart = _import()
        self.device = device
        self._ok(self.cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
        self._host: dict[int, int] = {}  # id(host array) -> pinned pointer

    def _ok(self, result, what: str):
        cudart = self.cudart
        err, *values = result
        if err != cudart.cudaError_t.cudaSuccess:
            name = cudart.cudaGetErrorName(err)[1]
            text = cudart.cudaGetErrorString(err)[1]
            raise AbawRtError(f"CUDA {what} failed: {name.decode()} ({text.decode()})")
        return values[0] if len(values) == 1 else tuple(values)

    # -- memory -----------------------------------------------------------------------------------------
    def malloc(self, nbytes: int) -> int:
        return int(self._ok(self.cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes} bytes)"))

    def free(self, ptr: int) -> None:
        self._ok(self.cudart.cudaFree(ptr), "cudaFree")

    def host_alloc(self, nbytes: int) -> np.ndarray:
        cudart = self.cudart
        ptr = int(self._ok(cudart.cudaHostAlloc(nbytes, cudart.cudaHostAllocDefault), f"cudaHostAlloc({nbytes})"))
        buf = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))
        self._host[id(buf)] = ptr
        return buf

    def host_free(self, buf: np.ndarray) -> None:
        self._ok(self.cudart.cudaFreeHost(self._host.pop(id(buf))), "cudaFreeHost")

    # -- streams and copies -----------------------------------------------------------------------------
    def stream_create(self):
        cudart = self.cudart
        return self._ok(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    def stream_ptr(self, stream) -> int:
        return int(stream)

    def stream_synchronize(self, stream) -> None:
        self._ok(self.cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream) -> None:
        self._ok(self.cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def copy_htod_async(self, dst: int, src: np.ndarray, stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.cudart.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream), "cudaMemcpyAsync H2D")

    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.cudart.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream), "cudaMemcpyAsync D2H")

    def copy_dtod_async(self, dst: int, src: int, nbytes: int, stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        self._ok(self.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, stream), "cudaMemcpyAsync D2D")

    # -- CUDA graphs ------------------------------------------------------------------------------------
    def begin_capture(self, stream) -> None:
        mode = self.cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._ok(self.cudart.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")

    def end_capture(self, stream):
        cudart = self.cudart
        graph = self._ok(cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        try:
            return graph, self._ok(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except AbawRtError:
            cudart.cudaGraphDestroy(graph)
            raise

    def graph_launch(self, graph, stream) -> None:
        self._ok(self.cudart.cudaGraphLaunch(graph[1], stream), "cudaGraphLaunch")

    def graph_destroy(self, graph) -> None:
        self._ok(self.cudart.cudaGraphExecDestroy(graph[1]), "cudaGraphExecDestroy")
        self._ok(self.cudart.cudaGraphDestroy(graph[0]), "cudaGraphDestroy")
