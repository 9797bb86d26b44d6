"""The one streaming scorer, used by the library, the command-line jobs and the worker processes.

Per chunk of pairs: drop repeated pairs, tokenize (the next chunk is read and tokenized on a helper thread
while the model scores this one), plan batches by length under the token budget, collate, score on the
runtime, and restore the input order. Nothing here depends on the kind or the runtime.

Two overlaps keep an accelerator busy: the engine's one helper thread (started on first use, kept for the
engine's life) reads and tokenizes chunk N+1 while chunk N is scored, and each batch is launched before the
scores of the previous one are read back, so the device has the next batch queued while the host waits. On
CUDA, copies to and from the device do not wait for the device either (a blocking copy would wait for every
batch queued), so the host collates and launches batch k+1 while the device still computes batch k.
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .backends.base import Runtime
from .batching import Batch, Features, collate, default_batch_tokens, plan_batches
from .errors import warn_caller
from .heap import release_free_memory
from .kinds.base import Kind, Plan
from .options import AUTO, Options

__all__ = ["CHUNK_PAIRS", "Engine", "InputLengths", "TextChunk", "chunked", "finish_scores", "unique_pairs"]

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


class InputLengths:
    """Per pair, the tokens the model reads (``read``), and whether a limit cut it (``cut``: the query at its
    limit, the pair at ``max_length``; a ``passage_max_length`` cut is asked for, so it does not count). ``cut``
    lays the pairs out again with every limit one token larger, so it costs a second tokenization: only when asked.
    """

    def __init__(self, read: np.ndarray, wider: Callable[[], np.ndarray]) -> None:
        self.read = read
        self._wider = wider

    @functools.cached_property
    def cut(self) -> np.ndarray:
        return self._wider() > self.read


@dataclass(frozen=True)
class Engine:
    """One process's scoring machinery for one loaded model: kind hooks, their constants, a runtime."""

    kind: Kind
    prepared: Any
    runtime: Runtime
    pad_id: int
    config: Mapping[str, Any]  # config.json, which sizes the "auto" token budget
    _halved: bool = field(default=False, init=False)  # warned about an out-of-memory retry already
    # The tokenizing thread, and the process it belongs to (a forked child has the object but not the thread).
    _helper: tuple[int, ThreadPoolExecutor] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def score_chunks(
        self, chunks: Iterable[TextChunk], options: Options, plan: Plan, bar: tqdm
    ) -> Iterator[np.ndarray]:
        """Raw scores ``(plan.n_outputs, len(chunk))`` of each chunk, in order.

        ``chunks`` is advanced on the helper thread, one chunk ahead of the scores asked for. When the caller
        stops early (or scoring raises), the chunk being read ahead is finished before this returns, so the source
        is never touched after that: a source that blocks must therefore return in bounded time.
        """
        source = iter(chunks)
        helper = self._started_helper()
        pending = helper.submit(self._next, source, options)
        try:
            while (ready := pending.result()) is not None:
                pending = helper.submit(self._next, source, options)
                unique, features = ready
                yield self._score_features(features, options, plan, bar)[:, unique.inverse]
        finally:
            if not pending.cancel():
                pending.exception()  # wait for the read-ahead; its chunk is dropped, its error too

    def input_lengths(self, queries: list[str], passages: list[str], options: Options) -> InputLengths:
        """Tokens of each instructed pair as the kind lays it out for the model with ``options``."""
        read = self.kind.encode(self.prepared, queries, passages, options).lengths
        beyond = int(options.max_length) + 1  # one more token than any limit lets through: a cut pair grows
        wider = options.replace({"max_length": beyond, "query_max_length": beyond})
        return InputLengths(read, lambda: self.kind.encode(self.prepared, queries, passages, wider).lengths)

    def close(self) -> None:
        """End the helper thread (a later call starts a new one); also done when the engine is collected."""
        if self._helper is not None:
            self._helper[1].shutdown(wait=False)
            object.__setattr__(self, "_helper", None)

    def _started_helper(self) -> ThreadPoolExecutor:
        if self._helper is not None and self._helper[0] == os.getpid():
            return self._helper[1]
        helper = ThreadPoolExecutor(1, thread_name_prefix="autorerank-tokenize")
        weakref.finalize(self, helper.shutdown, wait=False)
        object.__setattr__(self, "_helper", (os.getpid(), helper))
        return helper

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
        previous: Launched | None = None
        for rows in plan_batches(features.lengths, max_pairs=options.batch_size, max_tokens=budget):
            # Launch this batch before reading the previous one's scores: reading waits for the device, which
            # then already has this batch queued instead of idling while the host collates and launches it.
            launched = _to_host(rows, self._score_rows(features, rows, plan))
            if self.runtime.device.type == "cpu":  # done: its activations are free, give them back
                release_free_memory()
            if previous is not None:
                previous.read_into(scores, bar)
            previous = launched
        if previous is not None:
            previous.read_into(scores, bar)
        return scores

    def _score_rows(self, features: Features, rows: np.ndarray, plan: Plan) -> torch.Tensor:
        """Scores ``(n_outputs, len(rows))`` of one batch, on the device (launched, maybe not finished); out of
        device memory, the batch is halved and retried (down to one pair), as FlagEmbedding does, with one
        warning per engine."""
        batch = self._collate(features, rows)
        try:
            return self.runtime.score(batch, plan)
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
        return torch.cat(
            [self._score_rows(features, rows[:half], plan), self._score_rows(features, rows[half:], plan)],
            dim=1,
        )

    def _collate(self, features: Features, rows: np.ndarray) -> Batch:
        """One padded batch on the runtime's device. To a CUDA device the copies do not wait for the batches
        launched before it to finish (``collate``'s own copies would)."""
        device = self.runtime.device
        side = self.kind.padding_side
        if device.type != "cuda":
            return collate(features, rows, pad_id=self.pad_id, side=side, device=device)
        batch = collate(features, rows, pad_id=self.pad_id, side=side, device=torch.device("cpu"))

        def moved(tensor: torch.Tensor) -> torch.Tensor:
            # From pinned memory a copy is queued on the stream; from pageable memory CUDA may wait for the
            # stream to empty first. PyTorch keeps the pinned block until the copy has read it.
            return tensor.pin_memory().to(device, non_blocking=True)

        return Batch(
            input_ids=moved(batch.input_ids),
            attention_mask=moved(batch.attention_mask),
            lengths=moved(batch.lengths),
            token_type_ids=None if batch.token_type_ids is None else moved(batch.token_type_ids),
            extras={name: moved(values) for name, values in batch.extras.items()},
        )


@dataclass(frozen=True)
class Launched:
    """A batch's scores on their way to the host."""

    rows: np.ndarray  # (B,) the batch's pairs in the chunk
    scores: torch.Tensor  # (n_outputs, B) float32 on the host, once `copied` has happened
    copied: torch.cuda.Event | None = None  # None: the scores are there already

    def read_into(self, scores: np.ndarray, bar: tqdm) -> None:
        """Put the batch's scores into the chunk's ``scores``, waiting for the device to finish them."""
        if self.copied is not None:
            self.copied.synchronize()
        scores[:, self.rows] = self.scores.numpy()
        bar.update(len(self.rows))


def _to_host(rows: np.ndarray, scores: torch.Tensor) -> Launched:
    """Start copying a launched batch's scores to the host. From a CUDA device the copy goes into pinned memory
    without waiting for the device, which may still be computing them (and later batches after them); from
    other devices it is done at once."""
    scores = scores.float()
    if scores.device.type != "cuda":
        return Launched(rows, scores.cpu())
    host = torch.empty(scores.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(scores, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(scores.device))
    return Launched(rows, host, copied)


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
