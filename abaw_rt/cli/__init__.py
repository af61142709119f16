"""CLI layer: the ``abaw-rt`` Typer app, shared options and the one place AbawRtError becomes an exit code.

Heavy frameworks (torch, onnxruntime, av) are imported inside the verbs that use them, so
``abaw-rt --help`` stays instant.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys


def _interrupted_now(signum, frame) -> None:
    """Ctrl-C while nothing can clean up (start-up imports, interpreter shutdown): one line, exit 128 + signal."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or reentrant stream: the line below still goes out
            pass
    os.write(2, b"interrupted\n")
    os._exit(128 + signum)


def _install_startup_guard():
    """Until the verbs are imported, Ctrl-C is one line (not a traceback from inside an import)."""
    import threading

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is (
        signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, _interrupted_now)
        return signal.default_int_handler
    return None


_startup_handler = _install_startup_guard()
_exit_status: int | None = None  # set by run() (the console script) when the verb has finished


@atexit.register  # registered first, so it runs last: after every other atexit callback
def _finish() -> None:
    """The console script's last step: flush and leave, skipping the interpreter's teardown (where Ctrl-C
    can no longer be handled and would end the process by the signal, with no message)."""
    if _exit_status is None:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(_exit_status)


import contextlib  # noqa: E402
import errno  # noqa: E402
import functools  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from abaw_rt import __version__  # noqa: E402
from abaw_rt.errors import EXTRA_OF, AbawRtError, missing_module_message  # noqa: E402


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every verb cleans up the same way; exit code 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While a verb runs, SIGTERM (kill, docker stop, a job scheduler) interrupts it like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Typer's own click (a vendored copy since Typer 0.22, the click package before): its exception classes.
_click_errors = sys.modules[typer.BadParameter.__module__]
_NoArgsIsHelp = getattr(_click_errors, "NoArgsIsHelpError", ())


def _one_line(text: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


def print_error(message: str) -> None:
    """``error: <message>`` as one line on stderr (the message is never read as Rich markup)."""
    from rich.text import Text

    err.print(Text.assemble(("error:", "bold red"), " ", _one_line(message)), highlight=False, soft_wrap=True)


def print_warning(message: str) -> None:
    """``warning: <message>`` as one line on stderr (the run goes on)."""
    from rich.text import Text

    err.print(Text.assemble(("warning:", "bold yellow"), " ", _one_line(message)), highlight=False, soft_wrap=True)


def warn_lost_frames(report: dict) -> None:
    """One stderr line when a damaged video lost frames (filled in and flagged, so that line i is frame i)."""
    decode = report.get("decode", {})
    lost = decode.get("lost_frames") or 0
    if lost:
        first = ", ".join(map(str, decode.get("lost_frame_numbers", [])[:10]))
        print_warning(
            f"video '{report.get('source')}': {lost} of {report.get('frames')} frames could not be decoded "
            f"(frames {first}{', ...' if lost > 10 else ''}); they repeat the previous frame and are flagged "
            "face_found = 0 in predictions.csv"
        )


class OneLineGroup(TyperGroup):
    """The app's click group: usage errors (an option out of range, a missing argument) as one line on stderr.

    Typer would draw them in a multi-line panel; here, as for AbawRtError, the message names the option,
    what arrived and what was expected, in one line, exit code 2. SIGTERM is handled like Ctrl-C.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        with _sigterm_as_interrupt():
            if not standalone_mode:
                return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            try:
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except _NoArgsIsHelp as exc:  # bare 'abaw-rt': the help text
                exc.show()
                sys.exit(exc.exit_code)
            except _click_errors.ClickException as exc:
                hint = f" (see '{exc.ctx.command_path} --help')" if getattr(exc, "ctx", None) is not None else ""
                print_error(exc.format_message() + hint)
                sys.exit(exc.exit_code)
            except typer.Abort:
                err.print("aborted", highlight=False)
                sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="abaw-rt",
    cls=OneLineGroup,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: wraps at any width, never cuts an option name or default with "…"
    help="Deploy the TCN + Transformer audio-visual emotion model (ABAW5): export, verify, run.",
)
out = Console()
err = Console(stderr=True)



def user_errors(fn):
    """Turn AbawRtError, a system error (disk full, permission denied) and Ctrl-C / SIGTERM into one line
    on stderr and a non-zero exit: 2 for an error, 130 for Ctrl-C, 143 for SIGTERM."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AbawRtError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None
        except ModuleNotFoundError as exc:  # an optional extra not installed: one line with the install command
            root = (exc.name or "").split(".")[0]
            if root not in EXTRA_OF:
                raise
            print_error(missing_module_message(root))
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            err.print("interrupted" if signum == signal.SIGINT else "terminated", highlight=False)
            raise typer.Exit(128 + signum) from None
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # stdout closed early (| head): click exits quietly
                raise
            print_error(os_error_message(exc))
            raise typer.Exit(2) from None

    return wrapper


def os_error_message(exc: OSError) -> str:
    """One line for a system error: the file, the reason, and the errno name (ENOSPC, EACCES, ...)."""
    name = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = f"'{exc.filename}': " if exc.filename is not None else ""
    hint = " (disk full)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return _one_line(f"{where}{reason}{f' [{name}]' if name else ''}{hint}")


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
    """Console-script entry point. Ctrl-C before a verb starts, or once it has finished (interpreter
    shutdown), is one line and exit 130, like Ctrl-C inside a verb."""
    global _exit_status
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
        err.print("interrupted", highlight=False)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupted_now)  # shutdown: thread joins, atexit callbacks
    _exit_status = code
    sys.exit(code)


# Verbs register themselves on ``app`` when their module is imported (one module per group of verbs).
from abaw_rt.cli import (
    bench_cmds,  # noqa: E402,F401
    defaults_cmds,  # noqa: E402,F401
    engine_cmds,  # noqa: E402,F401
    infer_cmds,  # noqa: E402,F401
    live_cmds,  # noqa: E402,F401
    model_cmds,  # noqa: E402,F401
    quant_cmds,  # noqa: E402,F401
    train_cmds,  # noqa: E402,F401
    zoo_cmds,  # noqa: E402,F401
)

if _startup_handler is not None:  # the verbs are in: Ctrl-C raises KeyboardInterrupt again (handled per verb)
    signal.signal(signal.SIGINT, _startup_handler)
