"""Files of (query, passage) pairs, read as a stream so that any size fits in memory.

Formats, chosen by the file name (optionally ending in ``.gz``) or given explicitly:

* ``jsonl`` (``.jsonl``, ``.json``, ``.ndjson``): one object per line with string fields
  ``query`` and ``passage``, or a two-element array ``["query", "passage"]``;
* ``tsv`` (``.tsv``, ``.txt``): two tab-separated columns, no quoting;
* ``csv`` (``.csv``): two columns with the usual quoting (fields may span lines), or any
  number of columns when a header row names ``query`` and ``passage``.

A first row ``query, passage`` (any case) is a header and is skipped. Blank lines are skipped.
Pairs are numbered from 0 in file order; that number is the ``index`` of its score.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import InputFileError
from .lines import numbered_lines

__all__ = ["PAIR_FORMATS", "Pair", "pair_format", "read_pairs"]

PAIR_FORMATS = ("jsonl", "tsv", "csv")

_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".csv": "csv",
}
_HEADER = ("query", "passage")


@dataclass(frozen=True)
class Pair:
    """One pair and the line it starts on."""

    query: str
    passage: str
    line: int


def pair_format(path: str | os.PathLike[str], explicit: str | None = None) -> str:
    """The format of a pair file: ``explicit`` when given, else from its extension."""
    if explicit is not None:
        return explicit
    name = str(path).lower().removesuffix(".gz")
    for extension, fmt in _EXTENSIONS.items():
        if name.endswith(extension):
            return fmt
    raise InputFileError(
        path, None, "cannot tell the format from the file name; pass --input-format jsonl, tsv or csv"
    )


def read_pairs(path: str | os.PathLike[str], fmt: str) -> Iterator[Pair]:
    """Yield the pairs of ``path`` one by one, checking each line as it is read."""
    if fmt == "jsonl":
        return _jsonl_pairs(path)
    if fmt == "tsv":
        return _tsv_pairs(path)
    if fmt == "csv":
        return _csv_pairs(path)
    raise ValueError(f"unknown pair format {fmt!r}; expected one of {PAIR_FORMATS}")


def _jsonl_pairs(path: str | os.PathLike[str]) -> Iterator[Pair]:
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(path, number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if isinstance(item, dict):
            missing = [key for key in _HEADER if key not in item]
            if missing:
                found = ", ".join(repr(key) for key in item) or "none"
                raise InputFileError(path, number, f"missing field {missing[0]!r} (fields found: {found})")
            values = [item["query"], item["passage"]]
        elif isinstance(item, list) and len(item) == 2:
            values = item
        else:
            raise InputFileError(
                path, number, 'expected {"query": ..., "passage": ...} or ["query", "passage"]'
            )
        yield _checked_pair(path, number, values)


def _tsv_pairs(path: str | os.PathLike[str]) -> Iterator[Pair]:
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        columns = line.split("\t")
        if number == 1 and _is_header(columns):
            continue
        if len(columns) != 2:
            raise InputFileError(
                path, number, f"expected 2 tab-separated columns 'query<TAB>passage', found {len(columns)}"
            )
        yield _checked_pair(path, number, columns)


def _csv_pairs(path: str | os.PathLike[str]) -> Iterator[Pair]:
    reader = csv.reader(text + "\n" for _, text in numbered_lines(path))
    positions = (0, 1)
    width = 2
    record_start = 1
    try:
        for row in reader:
            number, record_start = record_start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if number == 1 and {"query", "passage"} <= {cell.strip().lower() for cell in row}:
                lowered = [cell.strip().lower() for cell in row]
                positions, width = (lowered.index("query"), lowered.index("passage")), len(row)
                continue
            if len(row) != width:
                raise InputFileError(
                    path, number, f"expected {width} comma-separated columns, found {len(row)}"
                )
            yield _checked_pair(path, number, [row[positions[0]], row[positions[1]]])
    except csv.Error as exc:
        raise InputFileError(path, reader.line_num, f"malformed CSV ({exc})") from None


def _is_header(columns: list[str]) -> bool:
    return tuple(cell.strip().lower() for cell in columns) == _HEADER


def _checked_pair(path: str | os.PathLike[str], number: int, values: Sequence[object]) -> Pair:
    for name, value in zip(_HEADER, values):
        if not isinstance(value, str):
            raise InputFileError(path, number, f"the {name} must be a string, found {type(value).__name__}")
    return Pair(str(values[0]), str(values[1]), number)
