"""Line-numbered, UTF-8-checked reading of text files, and atomic writing.

Every reader in :mod:`autorerank.io` goes through :func:`numbered_lines`, so a bad byte or a
bad field is always reported as ``file:line: problem`` (an :class:`InputFileError`) instead of
a traceback from deep inside ``json`` or ``codecs``. Files are read in binary and decoded line
by line, which is what lets the error name the line: a text-mode ``open`` only reports a byte
offset into its read buffer.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import STDIN, InputFileError, display_name

__all__ = [
    "STDIN",
    "atomic_writer",
    "count_lines",
    "display_name",
    "first_text_line",
    "is_stream",
    "numbered_lines",
]

_BLOCK = 1 << 20


def numbered_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of ``path`` (``-``: standard input).

    The text has its line ending (``\\n`` or ``\\r\\n``) removed. Blank lines are yielded too;
    callers decide whether they are allowed. A UTF-8 byte order mark on the first line is
    dropped, since spreadsheet tools write one. Files ending in ``.gz`` are decompressed.
    """
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputFileError(
                    path,
                    number,
                    f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                    "convert the file to UTF-8",
                ) from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield number, text.rstrip("\r\n")


def first_text_line(path: str | os.PathLike[str]) -> str | None:
    """The first non-blank line of a file (for sniffing its format), or None when it has none."""
    return next((text for _, text in numbered_lines(path) if text.strip()), None)


def is_stream(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is standard input/output (``-``) or exists as something other than a regular file
    (``/dev/null``, ``/dev/stdout``, a pipe): nothing to read back, resume or replace."""
    if str(path) == STDIN:
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def count_lines(path: str | os.PathLike[str]) -> int | None:
    """The lines of a regular, uncompressed file, counted in large blocks (an estimate of its records, for a
    progress bar); None for standard input, pipes and ``.gz`` files, which cannot be read twice cheaply."""
    if is_stream(path) or str(path).endswith(".gz"):
        return None
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


@contextlib.contextmanager
def _open_binary(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    if str(path) == STDIN:
        yield sys.stdin.buffer
        return
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        handle: IO[bytes] = opener(path, "rb")  # type: ignore[assignment]  # GzipFile is a binary IO
    except FileNotFoundError:
        raise InputFileError(path, None, "no such file") from None
    except IsADirectoryError:
        raise InputFileError(path, None, "is a directory, not a file") from None
    with handle:
        try:
            yield handle
        except (gzip.BadGzipFile, EOFError) as exc:
            raise InputFileError(path, None, f"not a readable gzip file ({exc})") from None


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """Write a text file that appears complete or not at all.

    The content goes to a temporary file next to ``path`` and replaces it only when the
    block finishes without an exception, so a crash or a bad input found half-way never
    leaves a truncated output, and never destroys an older output of the same name.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        os.chmod(temp_name, 0o666 & ~_umask())  # mkstemp's 0600 would surprise whoever reads the output
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
