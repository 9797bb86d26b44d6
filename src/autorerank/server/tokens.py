"""Token counts per request, and the dialects' rules for pairs longer than the model takes.

Runs on a worker thread, never on the event loop: the ``tokenizers`` library encodes a batch in Rust without the
GIL, so requests are counted while the model scores earlier ones. The count is what the model reads of each pair,
laid out by the reranker's kind (``reranker.input_lengths``): instructions, the pair template's special tokens, an
LLM kind's prompt, a chat template. A pair is too long when the layout cuts it (the query at its limit, the pair at
``max_length``). A reranker spread over several devices holds no model in this process; its pairs are counted as
cross-encoders lay them out. The counts feed ``usage``, the metrics, the log line, and the worker's token budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..options import query_limit
from .dialects import Scoring
from .errors import PayloadTooLarge

__all__ = ["Prepared", "TokenCounter"]

# Tokens read per pair, which pairs are cut, and the passage tokens that fit for the given rows.
Measured = tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]


@dataclass(frozen=True)
class Prepared:
    """A request ready for the queue: its pairs (long passages cut as its dialect asks), the library options for
    its call, and its token count."""

    queries: list[str]
    passages: list[str]
    options: tuple[tuple[str, Any], ...]  # per-call library options; requests with equal options share a call
    tokens: int


class TokenCounter:
    """Counts tokens with the reranker's own tokenizer and limits (``reranker.text_tokenizer``, ``max_length``)."""

    def __init__(self, reranker: Any) -> None:
        self._reranker = reranker
        self._tokenizer = reranker.text_tokenizer
        self._backend = self._tokenizer.text_backend or self._tokenizer.backend
        options = reranker.options
        self.max_length = int(options.max_length)
        self.query_limit = query_limit(options)
        self.passage_limit: int | None = options.passage_max_length
        # What every pair adds to its two texts: the template's special tokens and the instructions' tokens.
        instructed = reranker.get_detailed_inputs([("", "")])[0]
        self.overhead = int(self._backend.num_special_tokens_to_add(True)) + int(
            self._tokenizer.encode(instructed).lengths.sum()
        )

    def prepare(self, scoring: Scoring) -> Prepared:
        """Count ``scoring``'s tokens, refuse or cut pairs longer than the model takes as its dialect says."""
        limit = _smaller(scoring.passage_max_length, self.passage_limit)
        options = {} if limit is None or limit == self.passage_limit else {"passage_max_length": limit}
        read, cut, room = self._measure(scoring, options, limit)
        too_long = np.flatnonzero(cut)
        if len(too_long) and not scoring.truncate:
            index = int(too_long[0])
            raise PayloadTooLarge(
                f"`{scoring.field}[{index}]` with its query has more than the model's {self.max_length} tokens "
                "(max_length) and truncation is off: send truncate: true to cut it, or shorten it",
                field=f"{scoring.field}[{index}]",
            )
        passages = scoring.passages
        if len(too_long) and scoring.truncate_left:
            passages = list(passages)
            for index, keep in zip(too_long.tolist(), room(too_long).tolist()):
                passages[index] = self._keep_end(passages[index], int(keep))
        return Prepared(scoring.queries, passages, tuple(options.items()), int(read.sum()))

    def _measure(self, scoring: Scoring, options: dict[str, Any], limit: int | None) -> Measured:
        """Tokens read per pair, which pairs are cut, and the passage tokens that fit (for the rows asked), as the
        kind lays pairs out where this process holds the model; else as a cross-encoder does (several devices)."""
        lengths = self._reranker.input_lengths(scoring.queries, scoring.passages, **options)
        if lengths is None:
            return self._estimate(scoring, limit)
        checked = not scoring.truncate or scoring.truncate_left
        cut = (
            lengths.cut if checked else np.zeros(len(lengths.read), dtype=bool)
        )  # cut pairs: only if they matter

        def room(rows: np.ndarray) -> np.ndarray:
            queries = [scoring.queries[row] for row in rows.tolist()]
            alone = self._reranker.input_lengths(queries, [""] * len(queries), **options).read
            return lengths.read[rows] - alone  # the passage's share of what the model reads

        return lengths.read, cut, room

    def _estimate(self, scoring: Scoring, limit: int | None) -> Measured:
        """:meth:`_measure` from token counts: the pair template's special tokens and the instructions inside
        ``max_length``, as cross-encoders lay pairs out."""
        cap = self.max_length + 1  # enough to tell a long text, and it bounds the work on a huge one
        distinct = list(dict.fromkeys(scoring.queries))
        query_lengths = dict(zip(distinct, self._tokenizer.encode(distinct, cap).lengths.tolist()))
        query = np.fromiter((query_lengths[text] for text in scoring.queries), np.int64, len(scoring.queries))
        passage = self._tokenizer.encode(scoring.passages, cap).lengths
        if limit is not None:
            passage = np.minimum(passage, limit)
        kept_query = np.minimum(query, self.query_limit)
        total = kept_query + passage + self.overhead
        cut = (query > self.query_limit) | (total > self.max_length)
        return np.minimum(total, self.max_length), cut, lambda rows: (self.max_length - total + passage)[rows]

    def _keep_end(self, text: str, keep: int) -> str:
        """``text`` from the start of its ``keep``-th token from the end (cut at a token boundary)."""
        encoding = self._backend.encode(text, add_special_tokens=False)
        if (
            keep < 1 or len(encoding.ids) <= keep
        ):  # keep < 1: the query fills max_length, the passage stays whole
            return text
        start: int = encoding.offsets[len(encoding.ids) - keep][0]
        return text[start:]


def _smaller(first: int | None, second: int | None) -> int | None:
    given = [value for value in (first, second) if value is not None]
    return min(given) if given else None
