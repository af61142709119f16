"""CLI layer: the ``abaw-rt`` Typer app, shared options and the one place AbawRtError becomes an exit code.

Heavy frameworks (torch, onnxruntime, av) are imported inside the verbs that use them, so
``abaw-rt --help`` stays instant.
"""

from __future__ import annotations

import functools
from enum import Enum
from typing import Annotated

import typer
from rich.console import Console

from abaw_rt import __version__
from abaw_rt.errors import AbawRtError

app = typer.Typer(
    name="abaw-rt",
    no_args_is_help=True,
    add_completion=False,
    help="Deploy the TCN + Transformer audio-visual emotion model (ABAW5): export, verify, run.",
)
out = Console()
err = Console(stderr=True)


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"


class Preset(str, Enum):
    va = "va"
    va_arcface = "va_arcface"
    expr = "expr"
    au = "au"


class Size(str, Enum):
    paper = "paper"  # the authors' widths (about 42 M parameters for va)
    tiny = "tiny"  # a small width for tests, CI and smoke runs


def user_errors(fn):
    """Turn AbawRtError (and Ctrl-C) into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AbawRtError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"abaw-rt {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """abaw-rt: continuous emotion recognition (valence/arousal, expressions, action units) in production."""


def run() -> None:
    """Console-script entry point."""
    app()


# Verbs register themselves on ``app`` when their module is imported (one module per group of verbs).
from abaw_rt.cli import model_cmds  # noqa: E402,F401
from abaw_rt.cli import engine_cmds  # noqa: E402,F401
from abaw_rt.cli import infer_cmds  # noqa: E402,F401
from abaw_rt.cli import bench_cmds  # noqa: E402,F401
from abaw_rt.cli import train_cmds  # noqa: E402,F401
