"""One-line error messages for the command-line front ends: every expected failure (bad data, manifest,
spec, checkpoint, flags) ends a command with one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import sys

EXIT_ERROR = 2


def one_line(exc: BaseException, limit: int = 600) -> str:
    """The message of ``exc`` on one line (pydantic validation errors as ``field: problem; ...``)."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or type(exc).__name__}: {e['msg']}" for e in errors())
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fail(command: str, exc: BaseException | str) -> int:
    """Print ``vidgan COMMAND: error: MESSAGE`` on one line to stderr; return the exit status (2)."""
    message = exc if isinstance(exc, str) else one_line(exc)
    print(f"vidgan {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR
