"""Files of (query, passage) pairs, read as a stream so that any size fits in memory.

Formats, given explicitly or chosen by the file name (optionally ending in ``.gz``):

* ``jsonl`` (``.jsonl``, ``.json``, ``.ndjson``): one object per line with string fields
  ``query`` and ``passage``, or a two-element array ``["query", "passage"]``;
* ``tsv`` (``.tsv``): two tab-separated columns, no quoting;
* ``csv`` (``.csv``): two columns with the usual quoting (fields may span lines).

Any other name (``.txt`` included) is sniffed from its first non-blank line: ``{`` or a JSON array starts
JSONL; otherwise a tab means TSV (``.txt`` is TSV in any case).

A first row naming its columns is a header and is skipped; it may also pick the two columns out of more (TSV
and CSV). Names are matched without case: the query column is one of :data:`QUERY_NAMES` and the passage column
one of :data:`PASSAGE_NAMES` (e.g. ``query,passage``, ``question<TAB>answer``, ``query,text``); when several
names fit, the earlier one in those lists wins. Blank lines are skipped. Pairs are numbered from 0 in file
order; that number is the ``index`` of its score.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..errors import STDIN, InputFileError, InvalidInputError
from ..inputs import check_encodable
from .lines import first_text_line, numbered_lines

__all__ = ["PAIR_FORMATS", "PASSAGE_NAMES", "QUERY_NAMES", "Pair", "pair_format", "read_pairs"]

PAIR_FORMATS = ("jsonl", "tsv", "csv")
# Column names a header row may give each side of a pair, most specific first.
QUERY_NAMES = ("query", "question", "anchor")
PASSAGE_NAMES = ("passage", "document", "doc", "text", "context", "answer", "positive", "response")

_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".tsv": "tsv",
    ".csv": "csv",
}
_FIELDS = ("query", "passage")


@dataclass(frozen=True)
class Pair:
    """One pair and the line it starts on."""

    query: str
    passage: str
    line: int


@dataclass(frozen=True)
class _Layout:
    """Which columns hold the query and the passage, and how many columns a row has."""

    query: int = 0
    passage: int = 1
    width: int = 2


def pair_format(path: str | os.PathLike[str], explicit: str | None = None) -> str:
    """The format of a pair file: ``explicit`` when given, else from its extension, else sniffed."""
    if explicit is not None:
        return explicit
    name = str(path).lower().removesuffix(".gz")
    for extension, fmt in _EXTENSIONS.items():
        if name.endswith(extension):
            return fmt
    if str(path) != STDIN:
        sniffed = _sniff(first_text_line(path) or "", default="tsv" if name.endswith(".txt") else None)
        if sniffed is not None:
            return sniffed
    unknown = (
        "has no name to tell the format from"
        if str(path) == STDIN
        else "cannot tell the format from the file name"
    )
    raise InputFileError(path, None, f"{unknown}; pass --input-format jsonl, tsv or csv")


def _sniff(line: str, default: str | None) -> str | None:
    text = line.lstrip()
    if text.startswith("{"):
        return "jsonl"
    if text.startswith("["):
        try:
            json.loads(text)
            return "jsonl"
        except json.JSONDecodeError:
            pass
    return "tsv" if "\t" in line else default


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
            missing = [key for key in _FIELDS if key not in item]
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
    rows = ((number, line.split("\t")) for number, line in numbered_lines(path) if line.strip())
    return _pairs_from_rows(path, rows, "tab-separated")


def _pairs_from_rows(
    path: str | os.PathLike[str], rows: Iterable[tuple[int, list[str]]], separated: str
) -> Iterator[Pair]:
    layout = _Layout()
    for position, (number, row) in enumerate(rows):
        header = _header_layout(row) if position == 0 else None
        if header is not None:
            layout = header
            continue
        if len(row) != layout.width:
            shape = " 'query<TAB>passage'" if separated == "tab-separated" and layout.width == 2 else ""
            raise InputFileError(
                path, number, f"expected {layout.width} {separated} columns{shape}, found {len(row)}"
            )
        yield _checked_pair(path, number, [row[layout.query], row[layout.passage]])


def _header_layout(row: Sequence[str]) -> _Layout | None:
    """The layout a header row gives, or None when the row is not a header."""
    names = [cell.strip().lower() for cell in row]
    query = next((names.index(name) for name in QUERY_NAMES if name in names), None)
    passage = next((names.index(name) for name in PASSAGE_NAMES if name in names), None)
    if query is None or passage is None:
        return None
    return _Layout(query, passage, len(row))


def _csv_pairs(path: str | os.PathLike[str]) -> Iterator[Pair]:
    record: list[tuple[int, str]] = []  # the lines of the record being read, for error messages

    def lines() -> Iterator[str]:
        for number, text in numbered_lines(path):
            record.append((number, text))
            yield text + "\n"

    def rows() -> Iterator[tuple[int, list[str]]]:
        # strict: an unterminated quote is an error, not a field that swallows the rest of the file
        reader = csv.reader(lines(), strict=True)
        try:
            for row in reader:
                number = record[0][0]
                record.clear()
                if any(cell.strip() for cell in row):
                    yield number, row
        except csv.Error as exc:
            raise _csv_error(path, record, exc) from None

    return _pairs_from_rows(path, rows(), "comma-separated")


def _csv_error(path: str | os.PathLike[str], record: list[tuple[int, str]], exc: csv.Error) -> InputFileError:
    message = str(exc)
    # A quote left open runs to the end of the file, or to the field size limit on the way.
    if "end of data" in message or "field limit" in message:
        return InputFileError(
            path,
            _open_quote_line(record),
            "unterminated quote: the quoted field that starts on this line has no closing quote "
            '(a quote inside a quoted field is written twice: "")',
        )
    line = record[-1][0] if record else None
    return InputFileError(
        path, line, f'malformed CSV ({message}; a quote inside a quoted field is written twice: "")'
    )


def _open_quote_line(record: list[tuple[int, str]]) -> int | None:
    """The line on which the record's last quoted field opens (CSV rules: a quote opens a field only at its
    start, and a doubled quote inside a quoted field is a literal quote)."""
    opened: int | None = None
    quoted, at_start, previous_quote = False, True, False
    for number, text in record:
        for char in text + "\n":
            if quoted:
                if char == '"':
                    quoted, previous_quote = False, True
                continue
            if char == '"' and (at_start or previous_quote):
                quoted, opened = True, number if at_start else opened
            at_start, previous_quote = char in ",\n", False
    return opened if opened is not None else (record[0][0] if record else None)


def _checked_pair(path: str | os.PathLike[str], number: int, values: Sequence[object]) -> Pair:
    for name, value in zip(_FIELDS, values):
        if not isinstance(value, str):
            raise InputFileError(path, number, f"the {name} must be a string, found {type(value).__name__}")
        try:  # a JSON "\\ud800" escape decodes to a text the tokenizer cannot take: say where it is
            check_encodable(value, f"the {name}")
        except InvalidInputError as error:
            raise InputFileError(path, number, str(error)) from None
    return Pair(str(values[0]), str(values[1]), number)
