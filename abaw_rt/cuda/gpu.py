"""CUDA layer: find CUDA devices and the driver version through the driver library (ctypes), without torch or TensorRT.

TensorRT objects must never be created on a machine without a CUDA device (the lean runtime
segfaults there), so every TensorRT code path asks this module first. It only reads the
driver's device list: no context, no memory.
"""

from __future__ import annotations

import ctypes
import re
import sys
from dataclasses import dataclass

from abaw_rt.errors import AbawRtError

# cuDeviceGetAttribute codes (cuda.h, CUdevice_attribute).
_CC_MAJOR = 75
_CC_MINOR = 76


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device, as the driver names it."""

    index: int  # CUDA device ordinal
    name: str  # e.g. "NVIDIA H100 80GB HBM3"; engines are tied to it
    compute_capability: tuple[int, int]  # (9, 0) for H100; engines are tied to it too
    memory_bytes: int = 0  # total device memory (0: the driver did not say)

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    @property
    def slug(self) -> str:
        """A file-name friendly form of the name: "nvidia-h100-80gb-hbm3"."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or f"gpu{self.index}"


def driver_library():
    """The CUDA driver library (ctypes), or None when it is not installed."""
    names = ("nvcuda.dll",) if sys.platform.startswith("win") else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def cuda_devices() -> list[GpuInfo]:
    """The CUDA devices the driver sees; an empty list without a driver or a device."""
    lib = driver_library()
    if lib is None or lib.cuInit(0) != 0:
        return []
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    devices = []
    for i in range(count.value):
        dev = ctypes.c_int(0)
        if lib.cuDeviceGet(ctypes.byref(dev), i) != 0:
            continue
        buf = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(buf, 256, dev)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, dev)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, dev)
        mem = ctypes.c_size_t(0)
        if lib.cuDeviceTotalMem_v2(ctypes.byref(mem), dev) != 0:
            mem = ctypes.c_size_t(0)
        name = buf.value.decode(errors="replace").strip()
        devices.append(GpuInfo(i, name, (major.value, minor.value), mem.value))
    return devices


def driver_version() -> str | None:
    """The CUDA version the installed driver supports ("12.8"), or None without a driver."""
    lib = driver_library()
    version = ctypes.c_int(0)
    if lib is None or lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or not version.value:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def gpu_report() -> list[dict]:
    """Every CUDA device as a JSON-ready dict (name, compute capability, memory, driver CUDA version)."""
    cuda = driver_version()
    return [
        {
            "index": d.index,
            "name": d.name,
            "compute_capability": d.cc,
            "memory_gib": round(d.memory_bytes / 2**30, 1),
            "driver_cuda": cuda,
        }
        for d in cuda_devices()
    ]


def require_gpu(index: int = 0, what: str = "TensorRT") -> GpuInfo:
    """The CUDA device ``index``, or an AbawRtError saying that ``what`` needs one."""
    devices = cuda_devices()
    if not devices:
        raise AbawRtError(
            f"{what} needs an NVIDIA GPU, and no CUDA device is visible here (no driver, or no device); "
            "use the 'ort' or 'torch' backend on this machine"
        )
    if not 0 <= index < len(devices):
        raise AbawRtError(
            f"CUDA device {index}: this machine has {len(devices)} ({', '.join(d.name for d in devices)})"
        )
    return devices[index]


def device_index(device: str | int) -> int:
    """ "cuda", "cuda:1" or 1 -> the ordinal; AbawRtError for anything else."""
    if isinstance(device, int):
        return device
    m = re.fullmatch(r"cuda(?::(\d+))?", str(device))
    if not m:
        raise AbawRtError(f"device {device!r}: expected 'cuda' or 'cuda:N'")
    return int(m.group(1) or 0)


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when the driver sees a CUDA device, else "cpu"; "cpu" and "cuda" pass through."""
    if device == "auto":
        return "cuda" if cuda_devices() else "cpu"
    if device not in ("cpu", "cuda"):
        raise AbawRtError(f"device {device!r}: expected auto, cpu or cuda")
    return device
