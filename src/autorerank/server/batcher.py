"""The cross-request queue and the one model worker that drains it.

The library is not safe for concurrent callers on one device, and it is fastest when it gets many pairs at once
(it removes repeats, sorts by length and fills forward passes up to a token budget). So every request goes into
one bounded queue, and one thread, the only caller of the model, feeds it to the library's streaming scorer
(``reranker.iter_scores``) as chunks: each chunk is the requests waiting at the time, up to ``batch_tokens``, so
32 clients sending 5 documents each become a few full forward passes, not 32 small ones.

The scorer reads chunk N+1 off this queue and tokenizes it on its helper thread while the model scores chunk N.
When to take chunk N+1 is the one decision here: taken at once, it holds only the requests that came in while
chunk N-1 was scored, and the clients chunk N-1 answered would wait for N+2; taken when the model is idle, its
tokenizing would not overlap. So it is taken when the model is :data:`TAKE_AT` of the way through chunk N (by
the recent speed), or at once when ``batch_tokens`` are waiting; if nothing is waiting then, it is taken when the
model is done with N (a chunk of one early arrival would leave the others for N+2).

A request whose client has gone is dropped when its chunk is taken (a chunk read ahead is scored whole, and the
answers of clients that left meanwhile go nowhere); a full queue refuses new requests (429) rather than growing;
an exception from the model fails the requests of the chunk it was scoring (500), the chunk read ahead goes back
to the head of the queue, and the worker goes on. Results go back to the event loop with
``call_soon_threadsafe``, one wake-up per chunk; nothing here blocks it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ApiError, NotServing, Overloaded, as_api_error
from .metrics import Metrics
from .tokens import Prepared

__all__ = ["GIVE_UP", "TAKE_AT", "Batcher", "Job"]

logger = logging.getLogger(__name__)

# reranker.iter_scores: chunks of pairs and per-call options -> each chunk's (scores_per_pair, len(chunk)) array.
ScoreStream = Callable[..., Iterator[np.ndarray]]
Options = tuple[tuple[str, Any], ...]  # a request's per-call library options (Prepared.options)

# The share of the model's expected time on a chunk after which the next chunk is taken off the queue: late
# enough that the clients answered by the chunk before have sent their next requests, early enough to tokenize
# the chunk before the model is free.
TAKE_AT = 0.5
# Waiting for the model to finish a chunk gives up after this many times its expected time (it may have failed: the
# scorer then waits for the chunk being read ahead before it reports the error).
GIVE_UP = 2.0


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


def settle(results: list[tuple[Job, list[float] | ApiError]]) -> None:
    """Hand each job its result, with one wake-up of each event loop involved (not one per job)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[float]], Any]]] = {}
    for job, result in results:
        by_loop.setdefault(job.loop, []).append((job.future, result))
    for loop, answers in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_all, answers)
        except RuntimeError:  # the loop has closed: the server is gone, and so are the clients
            pass


def _set_all(answers: list[tuple[asyncio.Future[list[float]], list[float] | ApiError]]) -> None:
    for future, result in answers:
        if future.done():  # cancelled: the client went away while its chunk was scored
            continue
        if isinstance(result, ApiError):
            future.set_exception(result)
        else:
            future.set_result(result)


class Batcher:
    """A bounded queue of :class:`Job` and the thread that scores it; ``start`` it, ``submit`` jobs, ``stop`` it."""

    def __init__(
        self, stream: ScoreStream, *, max_queued_pairs: int, batch_tokens: int, metrics: Metrics
    ) -> None:
        self._stream = stream
        self._max_queued_pairs = max_queued_pairs
        self.batch_tokens = batch_tokens
        self._metrics = metrics
        self._queue: deque[Job] = deque()
        self._queued_pairs = 0
        self._queued_tokens = 0
        self._ready = threading.Condition()  # guards everything below; notified on every change a wait reads
        self._stopping = False
        self._seconds_per_token = 0.0  # the model's recent speed: when to take the next chunk, Retry-After
        # The open stream (0: none; a stream the worker is done with takes nothing more), its chunks taken and
        # answered, when the model started on the latest chunk (when the stream asked for the one after it)
        # and that chunk's tokens.
        self._streams = self._open = 0
        self._taken = self._answered = 0
        self._started = 0.0
        self._started_tokens = 0
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
            self._ready.notify_all()
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
                wait = max(1, math.ceil(self._queued_tokens * self._seconds_per_token))
                raise Overloaded(
                    f"the queue is full ({self._queued_pairs} pairs waiting, at most {self._max_queued_pairs}): "
                    f"retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
            self._queue.append(job)
            self._count(job, +1)
            self._ready.notify_all()

    def _count(self, job: Job, sign: int) -> None:
        self._queued_pairs += sign * job.pairs
        self._queued_tokens += sign * job.prepared.tokens
        self._metrics.queue_pairs.set(self._queued_pairs)
        self._metrics.queue_requests.set(len(self._queue))

    # ----------------------------------------------------------------- the worker thread
    def _run(self) -> None:
        while (options := self._next_options()) is not None:
            self._score_stream(options)

    def _next_options(self) -> Options | None:
        """The options of the first queued job, once there is one; None once stopping with nothing queued."""
        with self._ready:
            while not self._queue and not self._stopping:
                self._ready.wait()
            return self._queue[0].prepared.options if self._queue else None

    def _score_stream(self, options: Options) -> None:
        """Score chunks of jobs with ``options`` until the queue has none (or its head wants other options)."""
        chunks: deque[list[Job]] = deque()  # jobs of the chunks taken and not answered yet, in order
        with self._ready:
            self._streams += 1
            self._open = stream = self._streams
            self._taken = self._answered = 0
        scores = self._stream(self._chunks(stream, options, chunks), normalize=False, **dict(options))
        try:
            for layers in scores:  # (1, pairs of the chunk): the server gives one score per pair
                self._answer(chunks.popleft(), layers[0])
        except Exception as error:  # the worker must outlive a failing chunk; its requests get the error
            self._close(scores)
            failed = self._failed(chunks, options)
            logger.exception(
                "the model failed on a chunk of %d requests (%d pairs)",
                len(failed),
                sum(job.pairs for job in failed),
            )
            self._metrics.model_errors.inc()
            answer = as_api_error(error)
            settle([(job, answer) for job in failed])
        finally:
            self._close(scores)

    def _close(self, scores: Iterator[np.ndarray]) -> None:
        """End the stream: its source takes nothing more, and once this returns it is not read again."""
        with self._ready:
            self._open = 0
            self._ready.notify_all()
        close = getattr(scores, "close", None)
        if close is not None:
            close()

    def _failed(self, chunks: deque[list[Job]], options: Options) -> list[Job]:
        """The jobs of the chunk an error came from; the chunks read ahead of it go back to the queue's head."""
        with self._ready:
            # No chunk taken: the stream failed on the options, so the jobs that carry them get the error.
            failed = chunks.popleft() if chunks else self._take(options)
            for jobs in reversed(chunks):
                for job in reversed(jobs):
                    self._queue.appendleft(job)
                    self._count(job, +1)
        return failed

    def _chunks(
        self, stream: int, options: Options, chunks: deque[list[Job]]
    ) -> Iterator[list[tuple[str, str]]]:
        """The stream's chunks of pairs, taken off the queue; runs on the scorer's helper thread."""
        while jobs := self._next_chunk(stream, options, chunks):
            yield [pair for job in jobs for pair in zip(job.prepared.queries, job.prepared.passages)]

    def _next_chunk(self, stream: int, options: Options, chunks: deque[list[Job]]) -> list[Job]:
        """Wait (bounded) while the model is busy with the last chunk and the queue fills, then take a chunk."""
        with self._ready:
            if self._open != stream:
                return []
            self._started = time.perf_counter()  # the model starts on the last chunk taken, if any, now
            if self._taken:
                expected = self._started_tokens * self._seconds_per_token
                self._wait_while_busy(stream, self._started + TAKE_AT * expected)
                if not self._queue:  # nobody came back yet: take what is there when the model is done
                    self._wait_while_busy(stream, self._started + GIVE_UP * expected)
            if self._open != stream:
                return []
            jobs = self._take(options)
            if jobs:
                self._taken += 1
                self._started_tokens = sum(job.prepared.tokens for job in jobs)
                chunks.append(jobs)
            return jobs

    def _wait_while_busy(self, stream: int, until: float) -> None:
        """Wait until ``until`` while the model scores the stream's last chunk and no full chunk is queued."""
        while (
            self._open == stream
            and not self._stopping
            and self._answered < self._taken
            and self._queued_tokens < self.batch_tokens
            and (left := until - time.perf_counter()) > 0
        ):
            self._ready.wait(left)

    def _take(self, options: Options) -> list[Job]:
        """Jobs with ``options`` off the queue's head, up to ``batch_tokens`` (at least one); gone ones dropped."""
        jobs: list[Job] = []
        tokens = dropped = 0
        while self._queue:
            job = self._queue[0]
            if not job.gone and (
                job.prepared.options != options or (jobs and tokens + job.prepared.tokens > self.batch_tokens)
            ):
                break
            self._queue.popleft()
            self._count(job, -1)
            if job.gone:
                dropped += 1
            else:
                jobs.append(job)
                tokens += job.prepared.tokens
        if dropped:
            self._metrics.dropped.inc(dropped)
        return jobs

    def _answer(self, jobs: list[Job], raw: np.ndarray) -> None:
        """Settle a scored chunk's jobs, and note the model's speed on it."""
        tokens = sum(job.prepared.tokens for job in jobs)
        with self._ready:
            self._answered += 1
            elapsed = time.perf_counter() - self._started
            if elapsed > 0 and tokens:
                speed = elapsed / tokens
                self._seconds_per_token = (
                    0.8 * self._seconds_per_token + 0.2 * speed if self._seconds_per_token else speed
                )
            self._ready.notify_all()
        scores: list[float] = raw.tolist()
        results: list[tuple[Job, list[float] | ApiError]] = []
        start = 0
        for job in jobs:
            results.append((job, scores[start : start + job.pairs]))
            start += job.pairs
        settle(results)
        self.served += len(jobs)
        self._metrics.batch_pairs.observe(len(scores))
        self._metrics.batch_requests.observe(len(jobs))
        self._metrics.pairs.inc(len(scores))
        self._metrics.tokens.inc(tokens)
