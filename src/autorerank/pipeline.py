"""The one streaming scorer, used by the library, the command-line jobs and the worker processes.

Per chunk of pairs: drop repeated pairs, tokenize (the next chunk is read and tokenized on a helper thread
while the model scores this one), plan batches by length under the token budget, collate, score on the
runtime, and restore the input order. Nothing here depends on the kind or the runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .backends.base import Runtime
from .batching import Features, collate, default_batch_tokens, plan_batches
from .errors import warn_caller
from .kinds.base import Kind, Plan
from .options import AUTO, Options

__all__ = ["CHUNK_PAIRS", "Engine", "TextChunk", "chunked", "finish_scores", "unique_pairs"]

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


def finish_scores(scores: np.ndarray, normalize: bool) -> np.ndarray:
    """Raw scores as float64, through a sigmoid when asked."""
    values = scores.astype(np.float64)
    return 1.0 / (1.0 + np.exp(-values)) if normalize else values


@dataclass(frozen=True)
class Engine:
    """One process's scoring machinery for one loaded model: kind hooks, their constants, a runtime."""

    kind: Kind
    prepared: Any
    runtime: Runtime
    pad_id: int
    config: Mapping[str, Any]  # config.json, which sizes the "auto" token budget
    _halved: bool = field(default=False, init=False)  # warned about an out-of-memory retry already

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
        for rows in plan_batches(features.lengths, max_pairs=options.batch_size, max_tokens=budget):
            scores[:, rows] = self._score_rows(features, rows, plan)
            bar.update(len(rows))
        return scores

    def _score_rows(self, features: Features, rows: np.ndarray, plan: Plan) -> np.ndarray:
        """Scores ``(n_outputs, len(rows))`` of one batch; out of device memory, the batch is halved and retried
        (down to one pair), as FlagEmbedding does, with one warning per engine."""
        batch = collate(
            features, rows, pad_id=self.pad_id, side=self.kind.padding_side, device=self.runtime.device
        )
        try:
            return self.runtime.score(batch, plan).float().cpu().numpy()
        except torch.cuda.OutOfMemoryError:
            if len(rows) == 1:
                raise
        del batch
        _release_cached_memory()
        if not self._halved:
            object.__setattr__(self, "_halved", True)
            warn_caller(
                f"Out of device memory on a batch of {len(rows)} pairs; halving such batches and retrying."
            )
        half = len(rows) // 2
        return np.concatenate(
            [self._score_rows(features, rows[:half], plan), self._score_rows(features, rows[half:], plan)],
            axis=1,
        )


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
