"""File-to-file jobs on top of the public scoring API: score a pair file, rerank a TREC run.

They take anything with the reranker's streaming methods (``iter_scores``, ``scores_per_pair``: a loaded
reranker, or a fake one in tests) so that the command line stays a thin shell and these can be used from
Python too. Pairs stream through ``iter_scores`` in chunks of a few thousand: large enough for its
length-sorted, token-budget batching to pay off, small enough to show progress and, for
:func:`score_pair_file`, to make each chunk durable before the next starts; the next chunk is read and
tokenized while the model scores this one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from .errors import STDIN, InputFileError, InvalidOptionError
from .io.lines import count_lines, is_stream
from .io.meta import check_meta, input_fingerprint, write_meta
from .io.pairs import Pair, read_pairs
from .io.scores import ScoreWriter, count_scores
from .io.texts import read_corpus, read_queries
from .io.trec import Run, RunEntry, read_run

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "RankedRun",
    "RerankInputs",
    "ScoreFileResult",
    "ScoreJob",
    "Scorer",
    "load_rerank_inputs",
    "plan_score_job",
    "rerank_run",
    "score_pair_file",
]

DEFAULT_CHUNK_SIZE = 4096

# query id -> (doc id, score), best first
RankedRun = dict[str, list[tuple[str, float]]]


class Scorer(Protocol):
    def iter_scores(
        self, chunks: Iterable[list[tuple[str, str]]], **options: Any
    ) -> Iterator[np.ndarray]: ...

    def scores_per_pair(self, **options: Any) -> int: ...


@dataclass(frozen=True)
class ScoreJob:
    """A checked pair file and output: what :func:`score_pair_file` will do."""

    input_path: str
    output_path: str  # "-": standard output
    fmt: str
    done: int  # pairs the output already holds
    meta: dict[str, Any] | None = None  # written next to the output (OUTPUT.meta.json) before the first chunk


@dataclass(frozen=True)
class ScoreFileResult:
    """How many pairs a :func:`score_pair_file` call found already scored, and scored now."""

    skipped: int
    scored: int


def plan_score_job(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    fmt: str,
    overwrite: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> ScoreJob:
    """Check the input's first pair and the existing output, before any model is loaded.

    An existing output is checked line by line (see :func:`autorerank.io.scores.count_scores`)
    and its pairs will be skipped; ``overwrite`` empties it instead. ``settings`` (the model and the options
    that change scores) are recorded with a fingerprint of the input in ``OUTPUT.meta.json``, and resuming an
    output whose recorded ones differ is refused (see :mod:`autorerank.io.meta`), as is resuming from standard input
    (nothing to check it against). Standard output (``-``) and outputs that are not regular files (``/dev/null``, a
    pipe) are written as a stream: nothing to resume.
    """
    if str(input_path) != STDIN:  # standard input cannot be read twice
        if not is_stream(output_path) and Path(output_path).resolve() == Path(input_path).resolve():
            raise InputFileError(output_path, None, "is the input file too; choose another --output")
        next(read_pairs(input_path, fmt), None)
    if is_stream(output_path):
        return ScoreJob(str(input_path), str(output_path), fmt, 0)
    if overwrite:
        Path(output_path).write_bytes(b"")
    meta = None if settings is None else {**settings, "input": input_fingerprint(input_path)}
    done = count_scores(output_path)
    if done and str(input_path) == STDIN:
        raise InputFileError(
            output_path,
            None,
            f"already holds {done} score{'s' if done != 1 else ''}, and pairs read from standard input cannot be "
            "checked against the "
            "ones they were written for: pass --overwrite to start again, or read the pairs from a file to resume",
        )
    if meta is not None and done:
        check_meta(output_path, meta, done)
    return ScoreJob(str(input_path), str(output_path), fmt, done, meta)


def score_pair_file(
    scorer: Scorer,
    job: ScoreJob,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool | None = None,
    stdout: IO[str] | None = None,
) -> ScoreFileResult:
    """Score the pairs of ``job`` that its output lacks, appending them chunk by chunk.

    ``progress``: ``None`` shows a bar (pairs/s, and an ETA when the input is a regular file) only on a
    terminal. ``stdout``: where an output named ``-`` goes (default ``sys.stdout``).
    """
    _check_chunk_size(chunk_size)
    pairs = read_pairs(job.input_path, job.fmt)
    skipped = sum(1 for _ in _take(pairs, job.done))
    if skipped < job.done:
        raise InputFileError(
            job.output_path,
            None,
            f"holds {job.done} scores but {job.input_path} has only {skipped} pairs: "
            "it is the output of another input (use another --output, or --overwrite)",
        )
    if job.meta is not None and job.done == 0:
        write_meta(job.output_path, job.meta)
    target = (stdout or sys.stdout) if job.output_path == STDIN else job.output_path
    total = count_lines(job.input_path) if _shows_progress(progress) else None
    scored = 0
    chunks = ([(pair.query, pair.passage) for pair in chunk] for chunk in _chunks(pairs, chunk_size))
    with (
        ScoreWriter(target, start_index=job.done) as writer,
        _bar(progress, "Scoring", total=total, initial=job.done) as bar,
    ):
        for scores in scorer.iter_scores(chunks):
            writer.write_chunk(_per_pair(scores))
            scored += scores.shape[1]
            bar.update(scores.shape[1])
        bar.total = bar.n  # the line count was an estimate (headers, blank lines): end the bar at 100%
    return ScoreFileResult(skipped=job.done, scored=scored)


@dataclass(frozen=True)
class RerankInputs:
    """A run with the texts of its queries and of the documents to rerank."""

    run: Run
    depth: int
    queries: dict[str, str]
    corpus: dict[str, str]


def load_rerank_inputs(
    run_path: str | os.PathLike[str],
    queries_path: str | os.PathLike[str],
    corpus_path: str | os.PathLike[str],
    *,
    depth: int = 100,
) -> RerankInputs:
    """Read a TREC run and the texts of its queries and of each query's top ``depth`` documents.

    The corpus is streamed once and only the needed documents are kept. A query or document id
    that the texts lack is reported at the first run line that needs it.
    """
    if depth < 1:
        raise InvalidOptionError(f"depth must be at least 1, got {depth}.")
    run = read_run(run_path)
    queries = read_queries(queries_path, set(run))
    _require_found(
        run_path, queries_path, "query", {q: entries[0].line for q, entries in run.items()}, queries
    )
    needed_docs = _first_lines(entries[:depth] for entries in run.values())
    corpus = read_corpus(corpus_path, set(needed_docs))
    _require_found(run_path, corpus_path, "document", needed_docs, corpus)
    return RerankInputs(run, depth, queries, corpus)


def rerank_run(
    scorer: Scorer,
    inputs: RerankInputs,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool | None = None,
) -> RankedRun:
    """Rerank the top ``depth`` documents of each query of the run.

    Documents below ``depth`` follow the reranked ones in their original order, with scores
    below the lowest reranked score (one apart), so the result is one consistent ranking.
    """
    _check_chunk_size(chunk_size)
    heads = {query_id: entries[: inputs.depth] for query_id, entries in inputs.run.items()}
    scores = _score_heads(scorer, heads, inputs.queries, inputs.corpus, chunk_size, progress)
    return {
        query_id: _merge(heads[query_id], scores[query_id], entries[inputs.depth :])
        for query_id, entries in inputs.run.items()
    }


def _score_heads(
    scorer: Scorer,
    heads: dict[str, list[RunEntry]],
    queries: dict[str, str],
    corpus: dict[str, str],
    chunk_size: int,
    progress: bool | None,
) -> dict[str, list[float]]:
    """Score each query's head in chunks of whole queries (one query may exceed a chunk)."""
    if scorer.scores_per_pair() != 1:
        raise InvalidOptionError(
            "Reranking needs one score per document: pass a single --cutoff-layers value."
        )
    groups = list(_query_groups(heads, chunk_size))
    chunks = ([(queries[q], corpus[entry.doc_id]) for q in group for entry in heads[q]] for group in groups)
    scores: dict[str, list[float]] = {}
    with _bar(progress, "Reranking", total=sum(len(head) for head in heads.values())) as bar:
        for group, group_scores in zip(groups, scorer.iter_scores(chunks)):
            flat = group_scores[0].tolist()
            start = 0
            for query_id in group:
                scores[query_id] = flat[start : start + len(heads[query_id])]
                start += len(heads[query_id])
            bar.update(len(flat))
    return scores


def _merge(head: list[RunEntry], head_scores: list[float], tail: list[RunEntry]) -> list[tuple[str, float]]:
    # sorted() is stable, so equal scores keep the first-stage order.
    ranked = sorted(zip((entry.doc_id for entry in head), head_scores), key=lambda item: -item[1])
    floor = ranked[-1][1]
    return ranked + [(entry.doc_id, floor - (offset + 1)) for offset, entry in enumerate(tail)]


def _query_groups(heads: dict[str, list[RunEntry]], chunk_size: int) -> Iterator[list[str]]:
    group: list[str] = []
    size = 0
    for query_id, head in heads.items():
        if group and size + len(head) > chunk_size:
            yield group
            group, size = [], 0
        group.append(query_id)
        size += len(head)
    if group:
        yield group


def _first_lines(heads: Iterable[list[RunEntry]]) -> dict[str, int]:
    """Each needed document id, with the first run line that asks for it."""
    lines: dict[str, int] = {}
    for head in heads:
        for entry in head:
            lines[entry.doc_id] = min(entry.line, lines.get(entry.doc_id, entry.line))
    return lines


def _require_found(
    run_path: str | os.PathLike[str],
    texts_path: str | os.PathLike[str],
    what: str,
    needed: dict[str, int],
    found: dict[str, str],
) -> None:
    missing = [(line, item_id) for item_id, line in needed.items() if item_id not in found]
    if missing:
        line, item_id = min(missing)
        more = f" ({len(missing) - 1} more {what} ids are missing too)" if len(missing) > 1 else ""
        raise InputFileError(run_path, line, f"{what} id {item_id!r} is not in {texts_path}{more}")


def _per_pair(scores: np.ndarray) -> list[float] | list[list[float]]:
    """``(layers, n)`` scores as one entry per pair: a float, or a list of floats when several layers are scored."""
    return scores[0].tolist() if scores.shape[0] == 1 else scores.T.tolist()


def _take(pairs: Iterator[Pair], count: int) -> Iterator[Pair]:
    for _ in range(count):
        pair = next(pairs, None)
        if pair is None:
            return
        yield pair


def _chunks(pairs: Iterator[Pair], size: int) -> Iterator[list[Pair]]:
    chunk: list[Pair] = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise InvalidOptionError(f"chunk_size must be at least 1, got {chunk_size}.")


def _shows_progress(progress: bool | None) -> bool:
    """``None``: a bar only when standard error is a terminal (what tqdm does with ``disable=None``)."""
    return progress if progress is not None else sys.stderr is not None and sys.stderr.isatty()


def _bar(progress: bool | None, desc: str, *, total: int | None = None, initial: int = 0) -> tqdm:
    return tqdm(
        desc=desc,
        total=total,
        initial=initial,
        unit=" pairs",
        unit_scale=True,
        disable=not _shows_progress(progress),
    )
