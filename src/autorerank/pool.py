"""One worker process per device, for scoring on several GPUs (or CPUs) at once.

Each worker builds the same reranker pinned to its device (the parent holds no model), scores the contiguous
slice it is sent and answers with scores or its traceback. Safe to share and to interrupt, because:

- callers take turns, and every message carries its call, so replies to an abandoned call are dropped;
- only helper threads touch the pipes: a Ctrl-C cannot cut a message in half, a stopped worker cannot block;
- a worker that dies or sends no heartbeat for ``worker_timeout`` seconds raises WorkerError naming it;
- workers exit the moment their parent dies (SIGKILL included) and leave Ctrl-C to the caller;
- plain pipes, no multiprocessing queues: no semaphores for the resource tracker to call leaked at exit;
- a script that every worker's re-import would run again (no main guard) is refused with that fix.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import logging
import math
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import threading
import time
import tokenize
import weakref
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

import numpy as np

from .errors import WorkerError
from .options import Options
from .worker import (
    ALIVE,
    FAILED,
    READY,
    RESULT,
    STARTUP_CALL,
    STOP,
    Reply,
    WorkerSpec,
    is_cpu,
    serve,
)

__all__ = ["WorkerPool"]

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.5
_GRACE_SECONDS = 5.0  # how long an idle worker gets to exit by itself when the pool closes
# Loading torch's libraries holds the interpreter, heartbeat thread included, for seconds on a busy machine.
_STARTUP_SILENCE = 60.0


# ----------------------------------------------------------------------------- the parent's side
class WorkerPool:
    """Worker processes, one per device, each holding its own copy of the model.

    An interrupted call's work still runs to its end on the workers (a forward pass cannot be stopped from
    outside); the next call queues behind it and gets only its own replies.
    """

    def __init__(
        self,
        reranker_class: type,
        model_name_or_path: str,
        options: dict[str, Any],
        devices: list[str],
        timeout: float = 60.0,
    ) -> None:
        _refuse_unguarded_main(devices)
        self._timeout = float(timeout)
        self._poll = min(_POLL_SECONDS, self._timeout / 4)
        self._replies: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._calls = itertools.count(STARTUP_CALL + 1)
        self._closed_by = "close()"
        self._links: list[_Link] = []
        self._finalizer = weakref.finalize(self, _shut_down, self._links)
        reranker = f"{reranker_class.__module__}:{reranker_class.__qualname__}"
        heartbeat, threads = min(1.0, self._timeout / 5), _cpu_threads(devices)
        try:
            for rank, device in enumerate(devices):
                worker_options = {**options, "devices": [device], "show_progress": False}
                spec = WorkerSpec(reranker, model_name_or_path, worker_options, rank, heartbeat, threads)
                self._links.append(_Link(spec, device, self._replies))
            self._descriptions = self._collect(STARTUP_CALL, set(range(len(devices))), READY)
        except BaseException:
            self.close()
            raise

    def describe(self) -> Any:
        """The first worker's runtime description (every worker runs the same model)."""
        return self._descriptions[0]

    @property
    def pids(self) -> list[int]:
        """The workers' process ids, in device order."""
        return [link.pid for link in self._links]

    def score(self, queries: list[str], passages: list[str], options: Options) -> np.ndarray:
        """Scores ``(n_outputs, N)``: contiguous slices scored in parallel, concatenated in order."""
        options = options.replace({"show_progress": False})
        with self._lock:
            if self.closed:
                raise WorkerError(
                    f"This worker pool was closed by {self._closed_by}; call again for new workers."
                )
            call = next(self._calls)
            slices = _slices(len(queries), len(self._links))
            for link, (start, stop) in zip(self._links, slices):
                link.send(call, (call, queries[start:stop], passages[start:stop], options))
            try:
                results = self._collect(call, set(range(len(slices))), RESULT)
            except WorkerError as error:
                self._closed_by = f"an earlier failure ({str(error).splitlines()[0]})"
                self.close()  # a failed worker leaves the pool unusable; the next call starts a new one
                raise
        return np.concatenate([results[rank] for rank in sorted(results)], axis=1)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Stop the workers (a busy or unresponsive one is killed). Safe to call twice."""
        self._finalizer()

    def _collect(self, call: int, ranks: set[int], tag: str) -> dict[int, Any]:
        """One ``tag`` reply of ``call`` from each worker in ``ranks``; replies to other calls are dropped."""
        received: dict[int, Any] = {}
        while len(received) < len(ranks):
            try:
                reply = self._replies.get(timeout=self._poll)
            except queue.Empty:
                self._check_alive(ranks - received.keys())
                continue
            if reply.call != call:
                logger.debug("Dropping a reply to abandoned call %d from worker %d", reply.call, reply.rank)
                continue
            label = self._links[reply.rank].label
            if reply.tag == FAILED:
                raise WorkerError(f"Worker {label} failed:\n{reply.payload}")
            if reply.tag != tag or reply.rank not in ranks:
                raise WorkerError(f"Worker {label} sent an unexpected {reply.tag!r} message.")
            received[reply.rank] = reply.payload
        return received

    def _check_alive(self, waiting: set[int]) -> None:
        """Raise for a worker we wait on that died or fell silent; a dead worker's last replies are read first."""
        if self.closed:
            raise WorkerError(f"This worker pool was closed by {self._closed_by} while a call waited on it.")
        for rank in sorted(waiting):
            link = self._links[rank]
            if not link.process.is_alive():
                if link.receiver.is_alive():
                    link.receiver.join(timeout=self._poll)
                    if not link.receiver.is_alive():
                        return  # what it sent before dying is queued now: read it before reporting the death
                raise WorkerError(link.death())
            limit = self._timeout if link.answered_call is not None else max(self._timeout, _STARTUP_SILENCE)
            silent = time.monotonic() - link.last_heard
            if silent > limit:
                raise WorkerError(
                    f"Worker {link.label} has sent no heartbeat for {silent:.1f} s (worker_timeout="
                    f"{self._timeout:g}): it is stopped (SIGSTOP, a debugger) or frozen. It is ended and the pool "
                    "closed; the next call starts new workers. Pass a larger worker_timeout= if it was only slow."
                )


class _Link:
    """The parent's end of one worker: its process, and a sender and a receiver thread over its two pipes.

    Only these threads touch the pipes, so a Ctrl-C in the caller cannot cut a message in half and a busy or
    stopped worker cannot block the caller on a full pipe.
    """

    def __init__(self, spec: WorkerSpec, device: str, replies: queue.SimpleQueue[Reply]) -> None:
        context = mp.get_context("spawn")  # fork would copy the caller's threads and CUDA state
        job_reader, job_writer = context.Pipe(duplex=False)
        reply_reader, reply_writer = context.Pipe(duplex=False)
        name = f"autorerank-worker-{spec.rank}-{device}"
        self.process = context.Process(
            target=serve, args=(spec, job_reader, reply_writer), name=name, daemon=True
        )
        self.process.start()
        job_reader.close()  # the worker holds these ends; our copies would hide its death from us
        reply_writer.close()
        self.pid = int(self.process.pid or 0)
        self.label = f"{spec.rank} on {device} (pid {self.pid})"
        self.last_heard = time.monotonic()
        self.heard_from = False  # anything at all: the worker got past re-importing the main module
        self.sent_call = STARTUP_CALL
        self.answered_call: int | None = None
        self._outgoing: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.sender = threading.Thread(target=self._send_all, args=(job_writer,), daemon=True)
        self.receiver = threading.Thread(target=self._receive_all, args=(reply_reader, replies), daemon=True)
        self.sender.start()
        self.receiver.start()

    @property
    def busy(self) -> bool:
        return self.answered_call != self.sent_call

    def send(self, call: int, job: tuple[Any, ...]) -> None:
        """Queue a job; pickled here, so that a job that cannot be sent raises in the caller."""
        self.sent_call = call
        self._outgoing.put(pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL))

    def stop(self) -> None:
        self._outgoing.put(STOP)

    def death(self) -> str:
        """Why the worker is gone, in words, with the fix where there is one."""
        code = self.process.exitcode
        how = (
            f"was killed by {signal.Signals(-code).name}" if code and code < 0 else f"exited with code {code}"
        )
        if self.heard_from:
            phase = "while scoring" if self.answered_call is not None else "while loading the model"
            return f"Worker {self.label} {how} {phase}."
        message = f"Worker {self.label} {how} while starting, before it could report why (see its stderr)."
        main = _reimported_main()
        if main is not None:
            message += (
                f" Each worker re-imports your main script {main.__file__}: code in it that must run once "
                '(building the reranker, scoring) belongs under `if __name__ == "__main__":`.'
            )
        return message

    def _send_all(self, writer: Connection) -> None:
        with writer:
            while True:
                message = self._outgoing.get()
                try:
                    writer.send_bytes(message)
                except OSError:
                    return  # the worker is gone; the caller's liveness check reports it
                if message == STOP:
                    return

    def _receive_all(self, reader: Connection, replies: queue.SimpleQueue[Reply]) -> None:
        with reader:
            while True:
                try:
                    reply: Reply = reader.recv()
                except (EOFError, OSError):
                    return  # the worker exited
                self.last_heard = time.monotonic()
                self.heard_from = True
                if reply.tag != ALIVE:
                    self.answered_call = reply.call
                    replies.put(reply)


def _shut_down(links: list[_Link]) -> None:
    """Ask each worker to stop; one that is busy (its call abandoned), stopped or slow to exit is killed."""
    for link in links:
        link.stop()
    deadline = time.monotonic() + _GRACE_SECONDS
    for link in links:
        if not link.busy:
            link.process.join(max(0.0, deadline - time.monotonic()))
        if link.process.is_alive():
            link.process.kill()  # SIGKILL: it also ends a stopped process, which SIGTERM would not
            link.process.join(_GRACE_SECONDS)
        if link.process.is_alive():
            logger.warning("Worker %s did not exit after SIGKILL", link.label)


def _cpu_threads(devices: list[str]) -> int:
    """Torch threads per CPU worker: the caller's share, split. Several workers each taking every core
    oversubscribe the CPU, and idle OpenMP threads spinning on a busy machine slow scoring tenfold."""
    import torch

    return max(1, torch.get_num_threads() // max(1, sum(map(is_cpu, devices))))


def _slices(total: int, parts: int) -> list[tuple[int, int]]:
    """At most ``parts`` contiguous, non-empty ``(start, stop)`` slices of ``range(total)``."""
    size = max(1, math.ceil(total / parts))
    return [(start, min(start + size, total)) for start in range(0, total, size)]


# ----------------------------------------------------------------------------- scripts without a main guard
def _reimported_main() -> ModuleType | None:
    """The main module if spawned workers re-import it (the rule of ``multiprocessing.spawn``), else None."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if main is None or path is None or (name is not None and name.split(".")[-1] == "__main__"):
        return None  # interactive, -c, or a package's __main__: nothing is re-imported
    return None if os.path.splitext(os.path.basename(path))[0] == "ipython" else main


def _refuse_unguarded_main(devices: list[str]) -> None:
    """Refuse to start workers that would fail: built from the main script's unguarded top level, the pool
    would be built again by every worker re-importing that script (multiprocessing's "bootstrapping phase"
    RuntimeError, which only the workers' stderr would show)."""
    main = _reimported_main()
    if main is None:
        return
    frame = inspect.currentframe()
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals is vars(main)):
        frame = frame.f_back
    if frame is None or not _runs_on_import(frame.f_code.co_filename, frame.f_lineno):
        return
    raise WorkerError(
        f"devices={devices!r} starts one worker process per device, and each re-imports your main script "
        f"{main.__file__}. Line {frame.f_lineno} builds this reranker at the script's top level, so every worker "
        'would build it again. Put the script\'s code under `if __name__ == "__main__":` (or in a function '
        "called from there)."
    )


def _runs_on_import(path: str, line: int) -> bool:
    """Whether the top-level statement holding ``line`` runs whenever the file is imported (is not an ``if``)."""
    try:
        with tokenize.open(path) as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return False  # cannot tell: let the workers try
    for node in tree.body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            return not isinstance(node, ast.If)
    return False
