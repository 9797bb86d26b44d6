"""The cross-request queue and the one model worker that drains it.

The library is not safe for concurrent callers on one device, and it is fastest when it gets many pairs at once
(it removes repeats, sorts by length and fills forward passes up to a token budget). So every request goes into
one bounded queue, and one thread, the only caller of the model, takes as many waiting requests as fit
``batch_tokens`` and scores all their pairs in one call of ``reranker.compute_layer_scores``: 32 clients sending 5
documents each become a few full forward passes, not 32 small ones. A request whose client has gone is dropped
before that call; a full queue refuses new requests (429) rather than growing; an exception from the model fails
the requests of that call (500) and the worker goes on with the next.

Results go back to the event loop with ``call_soon_threadsafe``; nothing here blocks it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, NotServing, Overloaded, as_api_error
from .metrics import Metrics
from .tokens import Prepared

__all__ = ["Batcher", "Job"]

logger = logging.getLogger(__name__)

# reranker.compute_layer_scores: pairs and per-call options -> one list of scores per layer.
ScoreFunction = Callable[..., list[list[float]]]


@dataclass(eq=False)
class Job:
    """One request in the queue. ``gone`` is set on the event loop when its client disconnects."""

    prepared: Prepared
    future: asyncio.Future[list[float]]
    gone: bool = False
    loop: asyncio.AbstractEventLoop = field(init=False)

    def __post_init__(self) -> None:
        self.loop = self.future.get_loop()

    @property
    def pairs(self) -> int:
        return len(self.prepared.queries)

    def settle(self, result: list[float] | ApiError) -> None:
        """Hand the result (scores, or the error to answer with) to the request's event loop."""
        try:
            self.loop.call_soon_threadsafe(_set, self.future, result)
        except RuntimeError:  # the loop has closed: the server is gone, and so is the client
            pass


def _set(future: asyncio.Future[list[float]], result: list[float] | ApiError) -> None:
    if future.done():  # cancelled: the client went away while its batch was scored
        return
    if isinstance(result, ApiError):
        future.set_exception(result)
    else:
        future.set_result(result)


class Batcher:
    """A bounded queue of :class:`Job` and the thread that scores it; ``start`` it, ``submit`` jobs, ``stop`` it."""

    def __init__(
        self, score: ScoreFunction, *, max_queued_pairs: int, batch_tokens: int, metrics: Metrics
    ) -> None:
        self._score = score
        self._max_queued_pairs = max_queued_pairs
        self.batch_tokens = batch_tokens
        self._metrics = metrics
        self._queue: deque[Job] = deque()
        self._queued_pairs = 0
        self._ready = threading.Condition()
        self._stopping = False
        self._pairs_per_second = 0.0  # recent model speed, for Retry-After
        self.served = 0  # requests scored
        self._thread = threading.Thread(target=self._run, name="autorerank-model", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Score what is queued, then end the worker; returns when it has ended."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join()

    def submit(self, job: Job) -> None:
        """Queue a job, or raise :class:`Overloaded` (429) when its pairs do not fit the queue.

        A job larger than the whole queue is taken when the queue is empty (``max_documents`` bounds it instead).
        """
        with self._ready:
            if not self.alive:
                raise NotServing("the server is shutting down: send the request to another replica or retry")
            if self._queue and self._queued_pairs + job.pairs > self._max_queued_pairs:
                wait = self._seconds_to_drain()
                raise Overloaded(
                    f"the queue is full ({self._queued_pairs} pairs waiting, at most {self._max_queued_pairs}): "
                    f"retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
            self._queue.append(job)
            self._queued_pairs += job.pairs
            self._show_queue()
            self._ready.notify()

    def _seconds_to_drain(self) -> int:
        if self._pairs_per_second <= 0:
            return 1
        return max(1, math.ceil(self._queued_pairs / self._pairs_per_second))

    def _show_queue(self) -> None:
        self._metrics.queue_pairs.set(self._queued_pairs)
        self._metrics.queue_requests.set(len(self._queue))

    # ----------------------------------------------------------------- the worker thread
    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            self._process(jobs)

    def _take(self) -> list[Job] | None:
        """The next jobs that fit the token budget (at least one); None once stopping with nothing queued."""
        with self._ready:
            while not self._queue and not self._stopping:
                self._ready.wait()
            if not self._queue:
                return None
            jobs, tokens = [self._queue.popleft()], 0
            tokens = jobs[0].prepared.tokens
            while self._queue and tokens + self._queue[0].prepared.tokens <= self.batch_tokens:
                jobs.append(self._queue.popleft())
                tokens += jobs[-1].prepared.tokens
            self._queued_pairs -= sum(job.pairs for job in jobs)
            self._show_queue()
        return jobs

    def _process(self, jobs: list[Job]) -> None:
        live = [job for job in jobs if not job.gone]
        if len(live) < len(jobs):
            self._metrics.dropped.inc(len(jobs) - len(live))
        groups: dict[tuple[tuple[str, Any], ...], list[Job]] = {}
        for job in live:
            groups.setdefault(job.prepared.options, []).append(job)
        for options, group in groups.items():
            self._score_group(group, dict(options))

    def _score_group(self, group: list[Job], options: dict[str, Any]) -> None:
        pairs = [pair for job in group for pair in zip(job.prepared.queries, job.prepared.passages)]
        started = time.perf_counter()
        try:
            layers = self._score(pairs, normalize=False, show_progress=False, **options)
        except Exception as error:  # the worker must outlive a failing batch; its requests get the error
            logger.exception("the model failed on a batch of %d requests (%d pairs)", len(group), len(pairs))
            self._metrics.model_errors.inc()
            answer = as_api_error(error)
            for job in group:
                job.settle(answer)
            return
        elapsed = time.perf_counter() - started
        if elapsed > 0:
            rate = len(pairs) / elapsed
            self._pairs_per_second = (
                rate if not self._pairs_per_second else 0.8 * self._pairs_per_second + 0.2 * rate
            )
        self._metrics.batch_pairs.observe(len(pairs))
        self._metrics.batch_requests.observe(len(group))
        self.served += len(group)
        self._metrics.pairs.inc(len(pairs))
        self._metrics.tokens.inc(sum(job.prepared.tokens for job in group))
        scores, start = layers[0], 0
        for job in group:
            job.settle(scores[start : start + job.pairs])
            start += job.pairs
