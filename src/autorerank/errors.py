"""The exceptions autorerank raises.

Every error derives from :class:`AutoRerankError`, and each also derives from the
built-in exception a caller would naturally catch, so ``except ValueError`` keeps working::

    AutoRerankError
    ├── InvalidInputError (ValueError)      bad pairs or documents passed to compute_score/rerank
    │   ├── InvalidPairTypeError (TypeError) a pair or text of the wrong type
    │   └── InputFileError                  a data file line the CLI cannot use (file:line: problem)
    ├── InvalidOptionError (ValueError)     an option value out of range (cutoff layer, compress ratio, ...)
    ├── UnknownOptionError (TypeError)      with strict=True: an option that does nothing here, or a misspelling
                                            (without strict, a UserWarning names it and the call goes on)
    ├── UnknownModelKindError (ValueError)  the checkpoint's kind could not be detected
    ├── ModelLoadError (OSError)            a path that is missing, unreadable or does not fit the kind
    ├── MissingDependencyError (ImportError) an optional extra is not installed
    └── WorkerError (RuntimeError)          a multi-device worker failed; carries its traceback
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = [
    "AutoRerankError",
    "InputFileError",
    "InvalidInputError",
    "InvalidOptionError",
    "InvalidPairTypeError",
    "MissingDependencyError",
    "ModelLoadError",
    "UnknownModelKindError",
    "UnknownOptionError",
    "WorkerError",
    "warn_caller",
]


class AutoRerankError(Exception):
    """Base class of every error autorerank raises on purpose."""


class InvalidInputError(AutoRerankError, ValueError):
    """Pairs or documents that cannot be scored as given."""


class InvalidPairTypeError(InvalidInputError, TypeError):
    """A pair, query or passage of the wrong Python type."""


# How standard input is named on the command line, and in messages.
STDIN = "-"


def display_name(path: str | os.PathLike[str]) -> str:
    """How a path appears in messages; ``-`` is standard input."""
    return "<stdin>" if str(path) == STDIN else str(path)


class InputFileError(InvalidInputError):
    """A file that cannot be used as given; the message is ``file:line: problem``.

    ``line`` is 1-based, or ``None`` when the problem concerns the whole file.
    """

    def __init__(self, path: str | os.PathLike[str], line: int | None, problem: str) -> None:
        self.path = display_name(path)
        self.line = line
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn at the first stack frame outside autorerank, so the warning names the caller's line, not ours."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2  # stacklevel 2 is warn_caller's caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    warnings.warn(message, category, stacklevel=level)


class InvalidOptionError(AutoRerankError, ValueError):
    """An option whose value is out of the range the model supports."""


class UnknownOptionError(AutoRerankError, TypeError):
    """Keyword arguments a reranker kind does not accept; ``names`` lists them."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


class UnknownModelKindError(AutoRerankError, ValueError):
    """The reranker kind of a checkpoint could not be worked out."""


class ModelLoadError(AutoRerankError, OSError):
    """A checkpoint that is missing, unreadable, or does not fit the requested kind."""


class MissingDependencyError(AutoRerankError, ImportError):
    """An optional dependency is needed; the message names the extra to install."""


class WorkerError(AutoRerankError, RuntimeError):
    """A worker process failed while scoring; the message carries its traceback."""
