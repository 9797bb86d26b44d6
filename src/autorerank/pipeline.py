"""The one streaming scorer, used by the library, the command-line jobs and the worker processes.

Per chunk of pairs: drop repeated pairs, tokenize (the next chunk is read and tokenized on a helper thread
while the model scores this one), plan batches by length under the token budget, collate, score on the
runtime, and restore the input order. Nothing here depends on the kind or the runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .backends.base import Runtime
from .batching import Features, collate, default_batch_tokens, plan_batches
from .kinds.base import Kind, Plan
from .options import AUTO, Options

__all__ = ["CHUNK_PAIRS", "Engine", "TextChunk", "chunked", "unique_pairs"]

# Pairs tokenized per step: large enough for length sorting to pay off, small enough to overlap and stream.
CHUNK_PAIRS = 4096

TextChunk = tuple[list[str], list[str]]  # (instructed queries, instructed passages)


@dataclass(frozen=True)
class UniquePairs:
    """The distinct pairs of a chunk, and where each input pair's score comes from."""

    queries: list[str]
    passages: list[str]
    inverse: np.ndarray  # (N,) index into the distinct pairs


def unique_pairs(queries: Sequence[str], passages: Sequence[str]) -> UniquePairs:
    index: dict[tuple[str, str], int] = {}
    inverse = np.fromiter(
        (index.setdefault(pair, len(index)) for pair in zip(queries, passages)),
        dtype=np.int64,
        count=len(queries),
    )
    return UniquePairs([pair[0] for pair in index], [pair[1] for pair in index], inverse)


def chunked(queries: list[str], passages: list[str], size: int | None = None) -> Iterator[TextChunk]:
    """Consecutive chunks of ``size`` pairs (default :data:`CHUNK_PAIRS`)."""
    size = size or CHUNK_PAIRS
    for start in range(0, len(queries), size):
        yield queries[start : start + size], passages[start : start + size]


@dataclass(frozen=True)
class Engine:
    """One process's scoring machinery for one loaded model: kind hooks, their constants, a runtime."""

    kind: Kind
    prepared: Any
    runtime: Runtime
    pad_id: int
    config: Mapping[str, Any]  # config.json, which sizes the "auto" token budget

    def score_chunks(
        self, chunks: Iterable[TextChunk], options: Options, plan: Plan, bar: tqdm
    ) -> Iterator[np.ndarray]:
        """Raw scores ``(plan.n_outputs, len(chunk))`` of each chunk, in order."""
        source = iter(chunks)
        with ThreadPoolExecutor(1, thread_name_prefix="autorerank-tokenize") as helper:
            pending: Future[tuple[UniquePairs, Features] | None] = helper.submit(self._next, source, options)
            while (ready := pending.result()) is not None:
                pending = helper.submit(self._next, source, options)
                unique, features = ready
                yield self._score_features(features, options, plan, bar)[:, unique.inverse]

    def _next(self, source: Iterator[TextChunk], options: Options) -> tuple[UniquePairs, Features] | None:
        chunk = next(source, None)
        if chunk is None:
            return None
        unique = unique_pairs(*chunk)
        return unique, self.kind.encode(self.prepared, unique.queries, unique.passages, options)

    def _score_features(self, features: Features, options: Options, plan: Plan, bar: tqdm) -> np.ndarray:
        scores = np.empty((plan.n_outputs, len(features)), dtype=np.float32)
        budget = options.max_batch_tokens
        if budget == AUTO:
            budget = default_batch_tokens(self.runtime.device, self.config)
        device, side = self.runtime.device, self.kind.padding_side
        for rows in plan_batches(features.lengths, max_pairs=options.batch_size, max_tokens=budget):
            batch = collate(features, rows, pad_id=self.pad_id, side=side, device=device)
            scores[:, rows] = self.runtime.score(batch, plan).float().cpu().numpy()
            bar.update(len(rows))
        return scores
