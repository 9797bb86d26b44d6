"""Retrieval evaluation of TREC runs, for ``autorerank eval``.

Built on **ir-measures** (``pip install 'autorerank[eval]'``). Why that library:

* its numbers are trec_eval's: nDCG, RR, recall, P and AP are computed by
  ``pytrec_eval-terrier``, trec_eval's C code, which is what TREC, MS MARCO and BEIR report;
* it installs offline from PyPI wheels (a pure-Python wheel plus manylinux wheels of
  pytrec_eval-terrier), whereas the original ``pytrec_eval`` ships only a source archive that
  needs a C compiler, and ``ranx`` pulls in numba and llvmlite and compiles on first use;
* one measure syntax (``nDCG@10``, ``RR@10``, ``R@100``, ``P(rel=2)@5``) that users already
  know from papers and from PyTerrier, and it is maintained.

Conventions (those of ir-measures, pinned by ``tests/test_eval.py``): the mean is over the
queries that have judgments; a judged query missing from the run counts as 0 (like
``trec_eval -c``); run queries without judgments are ignored. Linear gains for nDCG (trec_eval's).

Measure names are also accepted in the lower-case spellings people type: ``ndcg@10``,
``mrr@10`` (reciprocal rank cut at 10), ``recall@100``, ``map``, ``p@5``, ``success@1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInputError, InvalidOptionError
from .optional import require

__all__ = ["DEFAULT_MEASURES", "Evaluation", "evaluate", "format_table", "parse_measures"]

DEFAULT_MEASURES = ("ndcg@10", "mrr@10", "recall@100")

# Lower-case spelling -> ir-measures' name, for the part before "@" or "(".
_ALIASES = {
    "ndcg": "nDCG",
    "mrr": "RR",
    "rr": "RR",
    "recall": "R",
    "r": "R",
    "precision": "P",
    "p": "P",
    "map": "AP",
    "ap": "AP",
    "success": "Success",
    "bpref": "Bpref",
    "judged": "Judged",
    "rprec": "Rprec",
    "infap": "infAP",
}
_NAME = re.compile(r"^([A-Za-z_]+)(.*)$")


@dataclass(frozen=True)
class Evaluation:
    """Mean value of each measure, and which queries it covers."""

    values: dict[str, float]
    judged_queries: int  # queries in the qrels: the denominator of every mean
    missing_queries: int  # judged queries the run has no documents for (each counted as 0)
    unjudged_queries: int  # run queries without judgments (ignored)


def _ir_measures() -> Any:
    return require("ir_measures", "eval", "Evaluating runs")


def parse_measures(names: Sequence[str]) -> list[Any]:
    """ir-measures measure objects for ``names``, in order, without duplicates."""
    ir_measures = _ir_measures()
    measures: list[Any] = []
    for name in names:
        measure = _parse_one(ir_measures, name)
        if str(measure) not in {str(known) for known in measures}:
            measures.append(measure)
    return measures


def _parse_one(ir_measures: Any, name: str) -> Any:
    match = _NAME.match(name.strip())
    candidates = [name.strip()]
    if match and match.group(1).lower() in _ALIASES:
        candidates.append(_ALIASES[match.group(1).lower()] + match.group(2))
    for candidate in candidates:
        try:
            measure = ir_measures.parse_measure(candidate)
        except (NameError, ValueError, TypeError, SyntaxError):
            continue
        cutoff = measure.params.get("cutoff")
        if isinstance(cutoff, int) and cutoff < 1:  # trec_eval aborts the process on a cutoff of 0
            raise InvalidOptionError(f"Measure {name!r} has cutoff {cutoff}: a cutoff counts ranks, from 1.")
        return measure
    known = ", ".join(sorted({f"{alias}@k" for alias in ("ndcg", "mrr", "recall", "p", "success")} | {"map"}))
    raise InvalidOptionError(
        f"Unknown measure {name!r}. Use one of {known}, or any ir-measures name such as 'nDCG@10' or 'P(rel=2)@5'."
    )


def evaluate(
    qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], measures: Sequence[str]
) -> Evaluation:
    """Mean of each measure over the judged queries (see the module docstring for conventions)."""
    parsed = parse_measures(measures)
    if not qrels:
        raise InvalidInputError("The qrels hold no judgments.")
    judged = set(qrels)
    if not judged & set(run):
        raise InvalidInputError(
            f"None of the run's {len(run)} queries has judgments in the qrels ({len(judged)} queries): "
            "are the run and the qrels from the same collection?"
        )
    aggregate = _ir_measures().calc_aggregate(parsed, qrels, run)
    values = {str(measure): float(aggregate[measure]) for measure in parsed}
    return Evaluation(
        values=values,
        judged_queries=len(judged),
        missing_queries=len(judged - set(run)),
        unjudged_queries=len(set(run) - judged),
    )


def format_table(columns: Sequence[tuple[str, Evaluation]], *, digits: int = 4) -> str:
    """A plain-text table: one row per measure, one column per run, and with two runs their
    difference (second minus first)."""
    names = list(columns[0][1].values)
    header = ["measure", *(label for label, _ in columns)]
    rows = [[name, *(f"{evaluation.values[name]:.{digits}f}" for _, evaluation in columns)] for name in names]
    if len(columns) == 2:
        header.append("diff")
        for row, name in zip(rows, names):
            row.append(f"{columns[1][1].values[name] - columns[0][1].values[name]:+.{digits}f}")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [_format_row(row, widths) for row in [header, *rows]]
    return "\n".join(lines) + "\n" + "\n".join(_coverage_note(label, ev) for label, ev in columns) + "\n"


def _format_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    first = cells[0].ljust(widths[0])
    return "  ".join([first, *(cell.rjust(width) for cell, width in zip(cells[1:], widths[1:]))]).rstrip()


def _coverage_note(label: str, evaluation: Evaluation) -> str:
    note = f"{label}: {evaluation.judged_queries} judged queries"
    if evaluation.missing_queries:
        note += f", {evaluation.missing_queries} of them absent from the run (counted as 0)"
    if evaluation.unjudged_queries:
        note += f"; {evaluation.unjudged_queries} run queries without judgments ignored"
    return note
