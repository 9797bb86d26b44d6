"""One worker process per device, for scoring on several GPUs (or CPUs) at once.

Each worker builds the same reranker pinned to its device (the parent holds no model), scores the contiguous
slice it is sent and answers with scores or its traceback. Every message carries the call it belongs to, so
a reply to an abandoned call (interrupted, or failed on another worker) is recognised and dropped; concurrent
callers take turns. The caller never waits on a dead worker: it polls the workers' liveness while collecting.
"""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing as mp
import queue
import threading
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import WorkerError
from .options import Options

__all__ = ["WorkerPool"]

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.5
_READY = "ready"
_RESULT = "result"
_FAILED = "failed"
_STARTUP_CALL = 0


@dataclass(frozen=True)
class _Reply:
    rank: int
    call: int
    tag: str
    payload: Any


class WorkerPool:
    """Worker processes, one per device, each holding its own copy of the model."""

    def __init__(
        self, reranker_class: type, model_name_or_path: str, options: dict[str, Any], devices: list[str]
    ) -> None:
        context = mp.get_context("spawn")
        self._results = context.Queue()
        self._inboxes = [context.Queue() for _ in devices]
        self._calls = itertools.count(_STARTUP_CALL + 1)
        self._lock = threading.Lock()
        self._workers = [
            context.Process(
                target=_serve,
                args=(
                    reranker_class,
                    model_name_or_path,
                    {**options, "devices": [device], "show_progress": False},
                    inbox,
                    self._results,
                    rank,
                ),
                daemon=True,
                name=f"autorerank-{device}",
            )
            for rank, (device, inbox) in enumerate(zip(devices, self._inboxes))
        ]
        for worker in self._workers:
            worker.start()
        try:
            self._descriptions = self._collect(_STARTUP_CALL, set(range(len(self._workers))), _READY)
        except BaseException:
            self.close()
            raise

    def describe(self) -> Any:
        """The first worker's runtime description (every worker runs the same model)."""
        return self._descriptions[0]

    def score(self, queries: list[str], passages: list[str], options: Options) -> np.ndarray:
        """Scores ``(n_outputs, N)``: contiguous slices scored in parallel, concatenated in order."""
        options = options.replace({"show_progress": False})
        size = math.ceil(len(queries) / len(self._workers))
        with self._lock:
            call = next(self._calls)
            ranks = set()
            for rank, start in enumerate(range(0, len(queries), size)):
                self._inboxes[rank].put(
                    (call, queries[start : start + size], passages[start : start + size], options)
                )
                ranks.add(rank)
            try:
                results = self._collect(call, ranks, _RESULT)
            except WorkerError:
                self.close()  # a crashed worker leaves the pool unusable; the next call starts a new one
                raise
        return np.concatenate([results[rank] for rank in sorted(results)], axis=1)

    @property
    def closed(self) -> bool:
        return not self._workers

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for worker in self._workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5)
        self._workers = []

    def _collect(self, call: int, ranks: set[int], tag: str) -> dict[int, Any]:
        """One ``tag`` reply of ``call`` from each worker in ``ranks``; replies to other calls are dropped."""
        received: dict[int, Any] = {}
        while len(received) < len(ranks):
            try:
                reply: _Reply = self._results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                self._check_alive(ranks - received.keys())
                continue
            if reply.call != call:
                logger.debug("Dropping a reply to abandoned call %d from worker %d", reply.call, reply.rank)
                continue
            if reply.tag == _FAILED:
                raise WorkerError(f"Worker {self._workers[reply.rank].name} failed:\n{reply.payload}")
            if reply.tag != tag or reply.rank not in ranks:
                raise WorkerError(f"Worker {reply.rank} sent an unexpected {reply.tag!r} message.")
            received[reply.rank] = reply.payload
        return received

    def _check_alive(self, waiting: set[int]) -> None:
        for rank in waiting:
            worker = self._workers[rank]
            if not worker.is_alive():
                raise WorkerError(
                    f"Worker {worker.name} died (exit code {worker.exitcode}) before answering."
                )


def _serve(
    reranker_class: type,
    model_name_or_path: str,
    options: dict[str, Any],
    inbox: Any,
    results: Any,
    rank: int,
) -> None:
    """Worker main loop. Any failure is reported to the caller with its traceback, never swallowed."""
    try:
        reranker = reranker_class(model_name_or_path, **options)
        description = reranker.runtime.describe()
    except Exception:  # noqa: BLE001 - reported to the caller, who raises it
        results.put(_Reply(rank, _STARTUP_CALL, _FAILED, traceback.format_exc()))
        return
    results.put(_Reply(rank, _STARTUP_CALL, _READY, description))
    while (job := inbox.get()) is not None:
        call, queries, passages, call_options = job
        try:
            results.put(
                _Reply(rank, call, _RESULT, reranker._score_instructed(queries, passages, call_options))
            )
        except Exception:  # noqa: BLE001 - reported to the caller, who raises it
            results.put(_Reply(rank, call, _FAILED, traceback.format_exc()))
