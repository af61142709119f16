"""CLI layer: options shared by the heavy verbs (``--threads``) and how they are applied."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

ThreadsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--threads", min=1,
        help="CPU threads for torch and onnxruntime (default: 1 on machines with <= 2 cores, else one per core).",
    ),
]


def pin_threads(requested: int | None) -> int | None:
    """Resolve ``--threads`` (``machine.default_threads``) and pin torch to it: through OMP/MKL_NUM_THREADS
    before torch is imported (verbs import it lazily), or ``torch.set_num_threads`` if it already is.
    Returns the count for onnxruntime sessions (None: its default)."""
    from abaw_rt.machine import default_threads

    n = default_threads(requested)
    if n is None:
        return None
    if requested is not None or "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
