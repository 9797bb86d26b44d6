"""TREC run and qrels files: read with validation, write runs.

A run line is ``qid Q0 docid rank score tag`` (six fields separated by whitespace). Evaluation
tools order a query's documents by score and ignore the rank column; so does
:func:`read_run`, which breaks ties by rank and then by position in the file, so that a run
written with tied scores keeps the order its producer meant.

Qrels are read in the TREC format (``qid iteration docid relevance``) and in the BEIR TSV
format (``query-id<TAB>corpus-id<TAB>score``, with its header line; without it when the first line's
score is an integer).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from ..errors import InputFileError
from .lines import numbered_lines

__all__ = ["Qrels", "Run", "RunEntry", "read_qrels", "read_run", "run_to_dict", "write_run_lines"]


@dataclass(frozen=True, slots=True)  # slots: a run can hold millions of entries
class RunEntry:
    """One retrieved document of a run, with the line it came from (for error messages)."""

    doc_id: str
    score: float
    rank: int
    line: int


# query id -> entries, best first; queries in the order they first appear in the file.
Run = dict[str, list[RunEntry]]
# query id -> document id -> graded relevance.
Qrels = dict[str, dict[str, int]]

_BEIR_QRELS_HEADER = ("query-id", "corpus-id", "score")


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run file; each query's entries are sorted best first (score, then rank)."""
    run: Run = {}
    seen: dict[tuple[str, str], int] = {}
    for number, text in numbered_lines(path):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise InputFileError(
                path, number, f"a run line needs 6 fields 'qid Q0 docid rank score tag', found {len(fields)}"
            )
        query_id, _, doc_id, rank_text, score_text, _ = fields
        first = seen.setdefault((query_id, doc_id), number)
        if first != number:
            raise InputFileError(
                path,
                number,
                f"document {doc_id!r} appears twice for query {query_id!r} (first on line {first})",
            )
        entry = RunEntry(
            doc_id, _parse_score(path, number, score_text), _parse_rank(path, number, rank_text), number
        )
        run.setdefault(query_id, []).append(entry)
    for entries in run.values():
        entries.sort(key=lambda entry: (-entry.score, entry.rank, entry.line))
    return run


def _parse_rank(path: str | os.PathLike[str], number: int, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputFileError(path, number, f"rank {text!r} (field 4) is not an integer") from None


def _parse_score(path: str | os.PathLike[str], number: int, text: str) -> float:
    try:
        score = float(text)
    except ValueError:
        raise InputFileError(path, number, f"score {text!r} (field 5) is not a number") from None
    if math.isnan(score):
        raise InputFileError(path, number, "score is NaN; a run needs comparable scores")
    return score


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read relevance judgments in the TREC (4 fields) or BEIR TSV (3 fields) format.

    The header line or the first judgment decides the format, and every line must have its number of fields.
    A 3-field line whose last field is not an integer is a TREC line missing a field, and is reported as such.
    """
    qrels: Qrels = {}
    first_line: dict[tuple[str, str], int] = {}
    width: int | None = None  # 4: TREC, 3: BEIR; None until the header or the first judgment
    for number, text in numbered_lines(path):
        fields = text.split()
        if not fields:
            continue
        if width is None and tuple(fields) == _BEIR_QRELS_HEADER:
            width = 3
            continue
        width = _qrels_width(path, number, fields, width)
        query_id, doc_id, relevance = fields[0], fields[-2], _parse_relevance(path, number, fields[-1])
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged and judged[doc_id] != relevance:
            raise InputFileError(
                path,
                number,
                f"document {doc_id!r} of query {query_id!r} is judged {relevance} here but "
                f"{judged[doc_id]} on line {first_line[(query_id, doc_id)]}",
            )
        first_line.setdefault((query_id, doc_id), number)
        judged[doc_id] = relevance
    return qrels


def _qrels_width(path: str | os.PathLike[str], number: int, fields: list[str], width: int | None) -> int:
    """The number of fields of this file's lines, checked on this one."""
    found = len(fields)
    beir_line = found == 3 and width != 4 and fields[2].lstrip("+-").isdigit()
    if (found == 4 and width != 3) or beir_line:
        return found
    if width == 3:
        expected = "3 fields 'query-id<TAB>corpus-id<TAB>score' (a BEIR qrels TSV, as the lines above)"
    else:
        expected = (
            "4 fields 'qid 0 docid relevance' (TREC), or 3 'query-id<TAB>corpus-id<TAB>score' "
            "in a BEIR qrels TSV with its header line"
        )
    raise InputFileError(path, number, f"a qrels line needs {expected}, found {found}")


def _parse_relevance(path: str | os.PathLike[str], number: int, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputFileError(path, number, f"relevance {text!r} is not an integer") from None


def write_run_lines(handle: IO[str], query_id: str, ranked: Iterable[tuple[str, float]], tag: str) -> None:
    """Write one query's ranking, best first, numbering ranks from 1.

    Scores are written with ``repr`` so they read back as exactly the floats that were scored.
    """
    for rank, (doc_id, score) in enumerate(ranked, start=1):
        handle.write(f"{query_id} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")


def run_to_dict(run: Run) -> dict[str, dict[str, float]]:
    """The ``{qid: {docid: score}}`` form that evaluation libraries take."""
    return {query_id: {entry.doc_id: entry.score for entry in entries} for query_id, entries in run.items()}
