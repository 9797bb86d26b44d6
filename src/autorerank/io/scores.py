"""The score output of ``autorerank score``: JSONL that is appended to and can be resumed.

Each line is ``{"index": i, "score": s}``, ``i`` counting the input's pairs from 0 and ``s`` a
number (a list of numbers when several cutoff layers are scored). Lines are appended and
flushed chunk by chunk, so an interrupted run loses at most the chunk it was scoring, and a
rerun continues after the last complete line. Scores are written with ``repr`` and read back
as exactly the floats ``compute_score`` returned.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..errors import STDIN, InputFileError, display_name

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["MAX_LINE_BYTES", "ScoreWriter", "count_scores", "score_line"]

logger = logging.getLogger(__name__)

Score = float | Sequence[float]

# A record is a few dozen bytes (a few KiB with many cutoff layers); a longer line is not one.
MAX_LINE_BYTES = 1 << 16
_NOT_OURS = "; it does not look like an autorerank score output (use another --output, or --overwrite)"


def score_line(index: int, score: Score) -> str:
    """One output record, newline included."""
    value = [float(part) for part in score] if isinstance(score, Sequence) else float(score)
    return json.dumps({"index": index, "score": value}) + "\n"


def count_scores(path: str | os.PathLike[str]) -> int:
    """How many pairs an existing output already holds; 0 when it does not exist.

    Every complete line must be a record with the expected index, else the file is not a
    score output of this input and an :class:`InputFileError` says which line is wrong. A last
    line without its newline is what a crash mid-write leaves: it is cut off the file so that
    appending continues on a clean line, and that pair is scored again. Lines are read at most
    :data:`MAX_LINE_BYTES` at a time, so a file that is not an output (one huge line, or a device
    such as ``/dev/full`` that never ends a line) is refused instead of read into memory.
    """
    target = Path(path)
    if not target.exists():
        return 0
    count = 0
    complete_bytes = 0
    with target.open("rb") as handle:
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            if not raw.endswith(b"\n"):
                _check_partial(path, count + 1, raw, expected_index=count)
                break
            _check_record(path, count + 1, raw, expected_index=count)
            count += 1
            complete_bytes += len(raw)
    if complete_bytes < target.stat().st_size:
        logger.warning("%s: dropping an incomplete last line (an interrupted write)", path)
        with target.open("r+b") as handle:
            handle.truncate(complete_bytes)
    return count


def _check_partial(path: str | os.PathLike[str], number: int, raw: bytes, *, expected_index: int) -> None:
    """A last line without a line end must be the start of the next record: what an interrupted write leaves."""
    if len(raw) > MAX_LINE_BYTES:
        raise InputFileError(path, number, f"no line end within {MAX_LINE_BYTES} bytes" + _NOT_OURS)
    start = f'{{"index": {expected_index}, "score": '.encode()
    if not (start.startswith(raw) or raw.startswith(start)):
        raise InputFileError(
            path, number, "a last line without a line end that is not a score record" + _NOT_OURS
        )


def _check_record(path: str | os.PathLike[str], number: int, raw: bytes, *, expected_index: int) -> None:
    hint = _NOT_OURS
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputFileError(path, number, "not a valid JSON line" + hint) from None
    if not isinstance(record, dict) or set(record) != {"index", "score"}:
        raise InputFileError(path, number, "expected a record {'index': ..., 'score': ...}" + hint)
    if record["index"] != expected_index:
        raise InputFileError(
            path, number, f"index {record['index']!r} where {expected_index} was expected" + hint
        )
    score = record["score"]
    parts = score if isinstance(score, list) else [score]
    if not parts or not all(isinstance(part, (int, float)) and not isinstance(part, bool) for part in parts):
        raise InputFileError(path, number, f"score {score!r} is not a number or a list of numbers" + hint)


class ScoreWriter:
    """Appends score records to the output (a path, or an open stream such as standard output), durably after
    each chunk when the output is a regular file."""

    def __init__(self, target: str | os.PathLike[str] | IO[str], *, start_index: int) -> None:
        if isinstance(target, (str, os.PathLike)):
            self._name = str(target)
            self._handle: IO[str] = open(target, "a", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed in close()
            self._owned = True
        else:
            self._name, self._handle, self._owned = display_name(STDIN), target, False
        self._durable = self._owned and _is_regular(self._handle)
        self._next_index = start_index
        self._failed = False

    def write_chunk(self, scores: Sequence[Score]) -> None:
        """Append one chunk and make it reach the disk before the next chunk is scored."""
        lines = [score_line(self._next_index + offset, score) for offset, score in enumerate(scores)]
        try:
            self._handle.write("".join(lines))
            self._handle.flush()
            if self._durable:  # fsync fails on pipes and terminals, and means nothing there
                os.fsync(self._handle.fileno())
        except OSError as exc:
            self._failed = True
            raise InputFileError(
                self._name, None, f"cannot write the scores ({exc.strerror or exc})"
            ) from None
        self._next_index += len(lines)

    def close(self) -> None:
        if not self._owned:
            return
        try:
            self._handle.close()
        except OSError as exc:  # the last flush; after a failed write it fails the same way
            if not self._failed:
                raise InputFileError(
                    self._name, None, f"cannot write the scores ({exc.strerror or exc})"
                ) from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_regular(handle: IO[str]) -> bool:
    return stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
