"""Errors layer: the one exception type for anything a user can fix."""


class AbawRtError(Exception):
    """A problem the user can fix: names the thing, what arrived and what was expected.

    The CLI catches it, prints the message on one line to stderr and exits non-zero.
    """


def require_module(module: str, extra: str):
    """Import an optional dependency, or raise an AbawRtError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AbawRtError(
            f"this needs the Python package '{module}' ({exc}); install it with: pip install 'abaw-rt[{extra}]'"
        ) from None
