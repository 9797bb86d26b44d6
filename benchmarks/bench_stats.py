"""The benchmark's numbers from its raw runs: one row per (model, library, setting), medians and spreads over
repeats, each peer's best batch size, and score agreement. Pure: no subprocess, no timing, no printing.

A row is run several times, interleaved with the other rows (A B C A B C ...), so a burst of load from other
processes lands on every row alike. Its speed is the *median* pairs/s over those runs, its spread the lowest and
highest run (with three repeats an interquartile range would say nothing more), and its memory the largest peak
RSS of any run. A peer's best setting is its row with the highest median; ratios against it are the honest ones.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Measurement:
    """One row: a library variant (``label``) on one model at one setting, with every run it made.

    ``batch_size`` is the batch size the benchmark asked for; ``None`` is the library's defaults (the batch size
    the library then used is in each run's result, ``effective_batch_size``).
    """

    model: str
    label: str
    library: str
    batch_size: int | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    error: str | None = None

    def add_run(self, result: dict[str, Any], rss_mib: float) -> None:
        self.runs.append(result)
        self.rss_mib.append(rss_mib)

    @property
    def ok(self) -> bool:
        """True when every run of the row succeeded (a row that failed once is not trusted, nor run again)."""
        return self.error is None and bool(self.runs)

    @property
    def is_defaults(self) -> bool:
        return self.batch_size is None

    @property
    def rates(self) -> list[float]:
        """pairs/s of each run, in the order they ran."""
        return [run["pairs"] / run["seconds"] for run in self.runs]

    @property
    def median(self) -> float:
        return float(statistics.median(self.rates))

    @property
    def low(self) -> float:
        return min(self.rates)

    @property
    def high(self) -> float:
        return max(self.rates)

    @property
    def peak_rss_mib(self) -> float:
        return max(self.rss_mib, default=0.0)

    @property
    def scores(self) -> list[float]:
        return list(self.runs[0]["scores"])

    @property
    def effective_batch_size(self) -> int | None:
        """The batch size the library used (reported by the child), else the one asked for."""
        if self.runs and self.runs[0].get("batch_size") is not None:
            return int(self.runs[0]["batch_size"])
        return self.batch_size

    @property
    def setting(self) -> str:
        """'defaults', 'defaults (batch 128)' or 'batch 8'."""
        if not self.is_defaults:
            return f"batch {self.batch_size}"
        used = self.effective_batch_size
        return "defaults" if used is None else f"defaults (batch {used})"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "label": self.label,
            "library": self.library,
            "batch_size": self.batch_size,
            "setting": self.setting,
            "rss_mib": self.rss_mib,
            "error": self.error,
            "runs": self.runs,
        }


def group(measurements: Iterable[Measurement], model: str, label: str) -> list[Measurement]:
    """Every row of one variant on one model (its defaults and each swept batch size)."""
    return [m for m in measurements if m.model == model and m.label == label]


def best_row(rows: Iterable[Measurement]) -> Measurement | None:
    """The row with the highest median pairs/s among those that ran cleanly; ties go to the earlier row."""
    best: Measurement | None = None
    for row in rows:
        if row.ok and (best is None or row.median > best.median):
            best = row
    return best


def defaults_row(rows: Iterable[Measurement]) -> Measurement | None:
    return next((row for row in rows if row.is_defaults), None)


def ratio(a: Measurement, b: Measurement) -> float:
    """Median speed of ``a`` over median speed of ``b``."""
    return a.median / b.median


def ratio_range(a: Measurement, b: Measurement) -> tuple[float, float]:
    """The widest speed ratios the repeats allow: a's slowest run over b's fastest, a's fastest over b's slowest."""
    return a.low / b.high, a.high / b.low


def sweep_settings(default: int, sweep: Sequence[int], pairs: int) -> tuple[list[int], dict[int, int | None]]:
    """Which swept batch sizes to run besides the defaults row, and which to skip as repeats of another row.

    A batch size at or above the pair count scores all pairs in one batch, so only the first such setting is
    distinct; the library's own default batch size is the defaults row. Returns the sizes to run, and for each
    skipped size the row it would repeat (``None``: the defaults row).
    """
    seen: dict[int, int | None] = {min(default, pairs): None}  # effective batch size -> the row that has it
    run: list[int] = []
    skipped: dict[int, int | None] = {}
    for size in sorted(set(sweep)):
        if size < 1:
            raise ValueError(f"batch sizes must be positive, got {size}")
        effective = min(size, pairs)
        if effective in seen:
            skipped[size] = seen[effective]
        else:
            seen[effective] = size
            run.append(size)
    return run, skipped


def max_abs_diff(a: Sequence[float], b: Sequence[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Rank correlation (tied scores share their mean rank): how well a variant keeps the baseline's ordering."""
    if len(a) != len(b):
        raise ValueError(f"cannot correlate {len(a)} scores with {len(b)}")
    ranks_a, ranks_b = _ranks(a), _ranks(b)
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return float("nan")
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    _, inverse, counts = np.unique(np.asarray(values), return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # rank of the first copy of each distinct value
    return (first + (counts - 1) / 2)[inverse]
