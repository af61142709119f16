"""Export layer: checkpoint -> self-describing ONNX graph with dynamic batch and time (torch dynamo exporter)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abaw_rt import __version__
from abaw_rt.checkpoint import Checkpoint
from abaw_rt.errors import AbawRtError, require_module
from abaw_rt.feeds import example_feeds
from abaw_rt.graphs.metadata import metadata_props
from abaw_rt.specs import BATCH, TIME

PRECISIONS = ("fp32", "fp16")


def check_lengths_for(window: int) -> tuple[int, ...]:
    """Segment lengths the exported graph is run at: 1, primes, w-1, w, w+1, 2w (catches baked-in reshapes)."""
    return tuple(sorted({1, 7, 211, max(window - 1, 1), window, window + 1, 2 * window}))


@dataclass(frozen=True)
class ExportResult:
    path: Path
    precision: str
    external_data: Path | None  # the weights file beside the graph, when written as external data
    checked_lengths: tuple[int, ...]
    max_abs_error: float  # worst |ONNX - torch fp32| over the length check


def export_onnx(
    checkpoint: Checkpoint,
    out: Path,
    precision: str = "fp32",
    external_data: bool = False,
    opset: int = 18,
    check: bool = True,
) -> ExportResult:
    """Export a checkpoint to ONNX with dynamic ``batch`` and ``time`` axes.

    The graph takes raw float32 features per modality and ``lengths``; normalisation is in-graph.
    ``fp16`` graphs compute in FP16 with normalisation, LayerNorm and softmax in FP32, and keep float32
    I/O. After export the graph is run with onnxruntime at several lengths (``check_lengths_for``) and
    compared with torch; any failure removes the output and raises.

    Args:
        checkpoint: a loaded checkpoint.
        out: destination ``.onnx`` path (its folder must exist).
        precision: "fp32" or "fp16".
        external_data: write weights to ``<out>.data`` beside the graph (needed past 2 GB).
        opset: ONNX opset (18: LayerNormalization as one op, understood by TensorRT 10 and 11).
        check: run the multi-length parity check (always on from the CLI).

    Returns:
        ExportResult with the written path(s) and the worst error of the check.
    """
    if precision not in PRECISIONS:
        raise AbawRtError(f"precision {precision!r}: expected one of {PRECISIONS}")
    out = Path(out)
    if not out.parent.is_dir():
        raise AbawRtError(f"output '{out}': folder '{out.parent}' does not exist")
    torch = require_module("torch", "torch")
    require_module("onnxscript", "torch")
    from abaw_rt.model.fusion import PositionalFusion, build_model

    header = checkpoint.header
    cfg = header.config
    model = PositionalFusion(build_model(checkpoint, precision).export_mode())
    inputs = cfg.input_specs()
    outputs = cfg.output_specs()
    # Batch >= 2 and an odd length, or the exporter specialises the axes (DEVELOPERS.md).
    example = example_feeds(header, batch=2, time=17, padded=True)
    args = tuple(torch.from_numpy(example[s.name]) for s in inputs)
    dims = {BATCH: torch.export.Dim(BATCH, min=1), TIME: torch.export.Dim(TIME, min=1)}
    dynamic = tuple({i: dims[d] for i, d in enumerate(s.shape) if isinstance(d, str)} for s in inputs)

    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        program = _quiet_export(
            torch,
            model,
            args,
            dynamic_shapes=(dynamic,),
            input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs],
            opset_version=opset,
        )
        program.model.metadata_props.update(metadata_props(header, precision, checkpoint.sha256 or "", __version__))
        program.model.producer_name = "abaw-rt"
        program.model.producer_version = __version__
        staged = tmpdir / out.name
        program.save(str(staged), external_data=external_data)
        max_err = 0.0
        lengths = check_lengths_for(header.window) if check else ()
        if check:
            max_err = check_exported(staged, checkpoint, precision, lengths)
        data_file = None
        for f in sorted(tmpdir.iterdir(), key=lambda p: p.suffix == ".onnx"):  # weights first, graph last
            os.replace(f, out.parent / f.name)
            if f.suffix != ".onnx":
                data_file = out.parent / f.name
        return ExportResult(out, precision, data_file, lengths, max_err)
    except AbawRtError:
        raise
    except Exception as exc:
        raise AbawRtError(f"export of checkpoint '{checkpoint.path}' to '{out}' failed: {exc}") from exc
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def check_exported(path: Path, checkpoint: Checkpoint, precision: str, lengths) -> float:
    """Run the graph with onnxruntime at each length (batch 2, one segment padded) against torch fp32.

    Returns:
        The worst absolute error over all lengths and outputs.

    Raises:
        AbawRtError: the graph fails to run at some length or differs from torch beyond tolerance.
    """
    from abaw_rt.runners.ort_runner import OrtRunner
    from abaw_rt.runners.torch_runner import TorchRunner
    from abaw_rt.verify import DEFAULT_TOLERANCES, compare_outputs

    tol = DEFAULT_TOLERANCES[precision]
    worst = 0.0
    rng = np.random.default_rng(1)
    with TorchRunner(checkpoint) as ref, OrtRunner(path) as cand:
        for t in lengths:
            feeds = ref.example_feeds(batch=2, time=t, rng=rng, padded=True)
            try:
                got = cand.infer(feeds)
            except AbawRtError as exc:
                raise AbawRtError(
                    f"exported graph fails at length {t} (a length baked into the graph?): {exc}"
                ) from None
            stats = compare_outputs(ref.infer(feeds), got, feeds["lengths"], tol)
            for name, s in stats.items():
                worst = max(worst, s.max_abs)
                if not s.passed:
                    raise AbawRtError(
                        f"exported graph differs from torch at length {t}, output '{name}': {'; '.join(s.failures)}"
                    )
    return worst


def _quiet_export(torch, model, args, **kw):
    """torch.onnx.export(dynamo=True) with its progress chatter kept off the user's terminal."""
    import contextlib
    import io
    import logging
    import warnings

    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            return torch.onnx.export(model, args, f=None, dynamo=True, optimize=True, verbose=False, **kw)
        except Exception as exc:
            raise AbawRtError(f"torch.onnx.export failed: {str(exc).splitlines()[0]}") from exc
