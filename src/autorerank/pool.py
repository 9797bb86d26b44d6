"""One worker process per device, for scoring on several GPUs (or CPUs) at once.

Each worker builds the same reranker pinned to its device, scores the contiguous chunk it is sent,
and sends back scores or its traceback. The caller never waits on a dead worker: it polls the
workers' liveness while collecting results, and raises :class:`WorkerError` instead of hanging.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import queue
import traceback
from typing import Any

import numpy as np

from .errors import WorkerError
from .options import ScoringOptions

__all__ = ["WorkerPool"]

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.5
_READY = "ready"
_RESULT = "result"
_FAILED = "failed"


class WorkerPool:
    """Worker processes, one per device, each holding its own copy of the model."""

    def __init__(self, reranker_class: type, args: tuple, kwargs: dict[str, Any], devices: list[str]) -> None:
        context = mp.get_context("spawn")
        self._results = context.Queue()
        self._inboxes = [context.Queue() for _ in devices]
        self._workers = [
            context.Process(
                target=_serve,
                args=(
                    reranker_class,
                    args,
                    {**kwargs, "devices": [device], "show_progress": False},
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
            self._collect({rank: _READY for rank in range(len(self._workers))})
        except WorkerError:
            self.close()
            raise

    def score(self, queries: list[str], passages: list[str], options: ScoringOptions) -> np.ndarray:
        """Scores ``(n_outputs, N)``: contiguous chunks scored in parallel, concatenated in order."""
        options = ScoringOptions(**{**options.__dict__, "show_progress": False})
        size = math.ceil(len(queries) / len(self._workers))
        jobs = {}
        for rank, start in enumerate(range(0, len(queries), size)):
            self._inboxes[rank].put((queries[start : start + size], passages[start : start + size], options))
            jobs[rank] = _RESULT
        try:
            results = self._collect(jobs)
        except WorkerError:
            self.close()  # other workers' late answers must not leak into the next call
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

    def _collect(self, expected: dict[int, str]) -> dict[int, Any]:
        """Wait for one message of the expected tag from each listed worker, watching for deaths."""
        received: dict[int, Any] = {}
        while len(received) < len(expected):
            try:
                rank, tag, payload = self._results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                self._check_alive(expected, received)
                continue
            if tag == _FAILED:
                raise WorkerError(f"Worker {self._workers[rank].name} failed:\n{payload}")
            received[rank] = payload
        return received

    def _check_alive(self, expected: dict[int, str], received: dict[int, Any]) -> None:
        for rank in expected:
            worker = self._workers[rank]
            if rank not in received and not worker.is_alive():
                raise WorkerError(
                    f"Worker {worker.name} died (exit code {worker.exitcode}) before answering."
                )


def _serve(
    reranker_class: type, args: tuple, kwargs: dict[str, Any], inbox: Any, results: Any, rank: int
) -> None:
    """Worker main loop. Any failure is reported to the caller with its traceback, never swallowed."""
    try:
        reranker = reranker_class(*args, **kwargs)
    except Exception:  # noqa: BLE001 - reported to the caller, who raises it
        results.put((rank, _FAILED, traceback.format_exc()))
        return
    results.put((rank, _READY, None))
    while (job := inbox.get()) is not None:
        queries, passages, options = job
        try:
            results.put((rank, _RESULT, reranker.score_texts(queries, passages, options)))
        except Exception:  # noqa: BLE001 - reported to the caller, who raises it
            results.put((rank, _FAILED, traceback.format_exc()))
