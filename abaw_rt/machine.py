"""Reporting layer: what machine and software a measurement was taken on (for benchmark and run reports)."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _gpu() -> dict | None:
    """The first CUDA device through the driver (no torch needed); None without one.

    Also lists every device when there are several, and torch's CUDA version when torch is already
    imported (never imports it).
    """
    import sys

    from abaw_rt.cuda.gpu import gpu_report

    devices = gpu_report()
    if not devices:
        return None
    info = dict(devices[0])
    if len(devices) > 1:
        info["all"] = devices
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch.version, "cuda", None):
        info["torch_cuda"] = torch.version.cuda
    return info


def machine_info() -> dict:
    """CPU model, cores, memory, GPU (through the CUDA driver), OS, and versions of the packages that matter."""
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    packages = (
        "abaw-rt", "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "tensorrt",
        "cuda-bindings", "pycuda", "av",
    )  # fmt: skip
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "gpu": _gpu(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: v for p in packages if (v := _version(p)) is not None},
        "env": {
            k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "MKL_NUM_THREADS") if k in os.environ
        },
        # other work on the machine while measuring skews timings: recorded so readers can judge
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


SMALL_MACHINE_CORES = 2


def default_threads(requested: int | None = None) -> int | None:
    """CPU threads for torch and onnxruntime: ``requested`` if given; else 1 on a machine with at most 2 cores
    (there torch's one-thread-per-core default made training steps 3-25x slower than one thread while other
    work shared the CPU, and one onnxruntime thread per model was the fastest ``infer``); else None (the
    libraries' own default, one per core)."""
    if requested is not None:
        return requested
    return 1 if (os.cpu_count() or 1) <= SMALL_MACHINE_CORES else None
