"""Errors layer: the one exception type for anything a user can fix, and the missing-package message."""


class AbawRtError(Exception):
    """A problem the user can fix: names the thing, what arrived and what was expected.

    The CLI catches it, prints the message on one line to stderr and exits non-zero.
    """


# Optional packages (import name -> the extra that provides it), for one-line hints when one is missing.
EXTRA_OF = {
    "torch": "torch",
    "onnxscript": "torch",
    "av": "video",
    "cv2": "video",
    "PIL": "video",
    "matplotlib": "plot",
    "tensorrt": "trt",
    "tomli": "train",
    "h5py": "build-defaults",
    "ai_edge_litert": "build-defaults",
    "sklearn": "dev",
    "skimage": "samples",
    "hypothesis": "dev",
    "tritonclient": "triton",
    "ray": "ray",
}
# Extras that pull torch: the CPU wheel goes first, or pip resolves a CUDA build of several GB.
_TORCH_EXTRAS = ("torch", "train", "build-defaults")
TORCH_PIN = "torch==2.13.0"


def install_command(extra: str) -> str:
    """The command that installs an extra, e.g. ``pip install torch==2.13.0 && pip install 'abaw-rt[torch]'``."""
    command = f"pip install 'abaw-rt[{extra}]'"
    if extra in _TORCH_EXTRAS:
        return f"pip install {TORCH_PIN} && {command}"
    if extra == "trt":
        return f"{command} (plus a CUDA build of torch, installed first)"
    return command


def missing_module_message(module: str, extra: str | None = None, reason: str = "") -> str:
    """One line: which package is missing, which extra provides it and the command that installs it."""
    root = module.split(".")[0]
    extra = extra or EXTRA_OF.get(root, "dev")
    why = f" ({reason})" if reason else ""
    return f"this needs the Python package '{root}'{why}, from the extra [{extra}]; install it with: {install_command(extra)}"


def require_module(module: str, extra: str):
    """Import an optional dependency, or raise an AbawRtError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AbawRtError(missing_module_message(module, extra, str(exc))) from None
