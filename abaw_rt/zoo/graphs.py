"""Zoo layer: torch reference extractors -> self-describing ONNX graphs (seeded weights, dynamic batch).

Uses torch's TorchScript-based exporter (``dynamo=False``): ``transformers``' wav2vec2 has data-dependent
branches (LayerDrop) that ``torch.export`` refuses, and the convolutional nets export the same either way.
BatchNorm statistics are set from random inputs before export, so that features of the random-weight
graphs have realistic scale (a freshly initialised deep net collapses to near-zero features, which would
make fp16 checks meaningless).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from abaw_rt import __version__
from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.io import atomic_write_bytes
from abaw_rt.zoo.recipes import Recipe

OPSET = 18
EXTRACTOR_KEY = "abaw_rt_extractor"  # metadata key of a zoo graph (JSON: recipe, size, dims, seed); not "abaw_rt."
# which marks an exported fusion graph (abaw_rt.artefacts)


def output_names(r: Recipe) -> tuple[str, ...]:
    return {"effnet": ("features", "logits"), "dan": ("features", "logits"), "iresnet": ("embedding",),
            "wav2vec2": ("hidden", "extract_features")}[r.family]  # fmt: skip


def input_name(r: Recipe) -> str:
    return "waveform" if r.modality == "audio" else "input"


def build_module(r: Recipe, size: str, dims: str = "paper", classes: int | None = None):
    """The torch reference of recipe ``r`` at ``size`` (eval mode, random weights)."""
    a = r.arch[size]
    classes = classes or r.classes
    if r.family == "effnet":
        from abaw_rt.zoo.nets_vision import EfficientNet

        return EfficientNet(a["width"], a["depth"], head=r.dim(size, dims), classes=classes)
    if r.family == "dan":
        from abaw_rt.zoo.nets_vision import DAN

        return DAN(classes=classes, heads=4, widths=tuple(a["widths"]))
    if r.family == "iresnet":
        from abaw_rt.zoo.nets_vision import IResNet

        return IResNet(tuple(a["layers"]), tuple(a["widths"]), embedding=r.dim(size, dims))
    from abaw_rt.zoo.nets_audio import wav2vec2_config, wav2vec2_pooled

    keys = ("hidden", "layers", "heads", "ffn", "conv", "pos_kernel", "pos_groups")
    return wav2vec2_pooled(wav2vec2_config(*(a[k] for k in keys)))


def example_input(r: Recipe, batch: int, seed: int = 0) -> np.ndarray:
    """Random input of the recipe's contract: normalised-looking pixels, or a 16 kHz waveform window."""
    rng = np.random.default_rng(seed)
    if r.modality == "audio":
        return (0.1 * rng.standard_normal((batch, r.spec["window"]))).astype(np.float32)
    h, w = r.spec["input_size"]
    return rng.standard_normal((batch, 3, h, w)).astype(np.float32)


def calibrate_batchnorm(module, r: Recipe, seed: int, batch: int = 4) -> None:
    """Set every BatchNorm's running statistics from one forward pass on random inputs."""
    torch = require_module("torch", "torch")
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass sets the statistics
    module.train()
    with torch.no_grad():
        module(torch.from_numpy(example_input(r, batch, seed + 1)))
    module.eval()


def export_extractor(module, r: Recipe, out: Path, meta: dict, check: bool = True) -> Path:
    """Export ``module`` to ``out`` (dynamic batch), add the zoo metadata, check it against torch; atomic."""
    torch = require_module("torch", "torch")
    onnx = require_module("onnx", "torch")
    import contextlib
    import io
    import warnings

    out = Path(out)
    names = output_names(r)
    x = torch.from_numpy(example_input(r, 2))
    staged = out.parent / f".{out.name}.{os.getpid()}.tmp"
    axes = {n: {0: "batch"} for n in (input_name(r), *names)}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), (x,), str(staged), dynamo=False, opset_version=OPSET,
                              input_names=[input_name(r)], output_names=list(names), dynamic_axes=axes)  # fmt: skip
        model = onnx.load(str(staged))
    except Exception as exc:
        raise AbawRtError(f"export of extractor '{r.name}' to '{out}' failed: {str(exc).splitlines()[0]}") from exc
    finally:
        staged.unlink(missing_ok=True)
    model.producer_name, model.producer_version = "abaw-rt", __version__
    entry = model.metadata_props.add()
    entry.key, entry.value = EXTRACTOR_KEY, json.dumps({"recipe": r.name, **meta}, sort_keys=True)
    data = model.SerializeToString()
    if check:
        _check_against_torch(module, r, data, out)
    return atomic_write_bytes(out, data)


def _check_against_torch(module, r: Recipe, data: bytes, out: Path, tol: float = 1e-3) -> None:
    import onnxruntime as ort
    import torch

    x = example_input(r, 3, seed=7)  # batch 3: not the export's example batch
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(None, {input_name(r): x})
    with torch.no_grad():
        ref = module(torch.from_numpy(x))
    ref = ref if isinstance(ref, tuple) else (ref,)
    for name, g, t in zip(output_names(r), got, ref):
        t = t.numpy()
        err = float(np.abs(g - t).max() / max(1.0, float(np.abs(t).max())))
        if not err <= tol:
            raise AbawRtError(f"extractor '{r.name}' ('{out}'): output '{name}' differs from torch by {err:.3g} (> {tol})")


def build_graph(r: Recipe, out: Path, size: str = "paper", dims: str = "paper", seed: int = 0) -> Path:
    """Build recipe ``r``'s reference graph with seeded random weights at ``out``."""
    torch = require_module("torch", "torch")
    torch.manual_seed(seed)
    module = build_module(r, size, dims).eval()
    calibrate_batchnorm(module, r, seed)
    meta = {"size": size, "dims": dims, "seed": seed, "trained": False, "dim": r.dim(size, dims),
            "output": r.output(dims)}  # fmt: skip
    return export_extractor(module, r, out, meta)
