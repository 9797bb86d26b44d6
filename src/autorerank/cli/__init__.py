"""The ``autorerank`` command: a thin shell over the public API.

``main(argv)`` returns the exit status instead of exiting, so tests call it directly:

* 0: done;
* 1: a failure while scoring (a worker crashed);
* 2: bad usage or a bad input (file, line and problem on stderr, no traceback);
* 130: interrupted (``score`` keeps what it wrote: rerun it to resume; ``rerank-run`` starts over).

Library warnings (an option refused on this device, say) are printed as ``autorerank: warning: ...`` lines.

Commands: ``rank``, ``score``, ``rerank-run``, ``eval``, ``info``; each has ``--help``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

from ..errors import AutoRerankError, WorkerError
from .commands import COMMANDS
from .parser import parse_args

__all__ = ["main"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    """Run one command; ``argv`` defaults to ``sys.argv[1:]``, output to ``sys.stdout``."""
    try:
        args = parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_request:  # --help, or a usage error argparse already printed
        return int(exit_request.code or 0)
    out = stdout if stdout is not None else sys.stdout
    with warnings.catch_warnings():  # restores the caller's warning display when the command ends
        warnings.showwarning = warning_printer("autorerank")
        return _run(args, out)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    try:
        return COMMANDS[args.command](args, out)
    except BrokenPipeError:  # e.g. `autorerank rank ... | head -3`; before OSError, its base class
        _silence_stdout()
        return 0
    except WorkerError as exc:
        return _fail(EXIT_FAILURE, str(exc))
    except (AutoRerankError, OSError) as exc:  # our errors say file, line and fix; OSErrors name the path
        return _fail(EXIT_USAGE, _describe(exc))
    except KeyboardInterrupt:
        command = "score --ray" if getattr(args, "ray", False) else args.command
        return _fail(EXIT_INTERRUPTED, "interrupted" + _AFTER_INTERRUPT.get(command, ""))


_AFTER_INTERRUPT = {
    "score": "; the scores written so far are kept: rerun the same command to resume",
    "score --ray": "; the output folder may hold part of the scores: rerun with --overwrite to start over",
    "rerank-run": "; nothing was written (rerank-run writes its output when every query is done): "
    "rerunning starts over",
}


def warning_printer(program: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints one plain line per warning, like the command's other messages."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        print(f"{program}: warning: {message}", file=sys.stderr)

    return show


def _fail(code: int, message: str) -> int:
    print(f"autorerank: error: {message}", file=sys.stderr)
    return code


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, AutoRerankError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _silence_stdout() -> None:
    # Python flushes stdout at exit; once the reader is gone, point it at /dev/null so that
    # flush does not raise a second BrokenPipeError.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
