"""A worker process of :mod:`autorerank.pool`: builds one single-device reranker and scores what it is sent.

Kept apart from the parent's side because it is the code a fresh interpreter runs: it imports torch and the
model only after its heartbeat is running, answers every job with scores or a traceback, ignores Ctrl-C (the
caller's to handle) and exits the moment its parent dies.
"""

from __future__ import annotations

import functools
import importlib
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["Reply", "WorkerSpec", "is_cpu", "serve"]

READY, RESULT, FAILED, ALIVE = "ready", "result", "failed", "alive"  # what a reply is; alive: heartbeat
STARTUP_CALL, NO_CALL = 0, -1  # the calls of startup replies and of heartbeats
STOP = b""  # the message that ends a worker (jobs are never empty)
ORPHANED = 70  # the exit code of a worker whose parent died


@dataclass(frozen=True)
class Reply:
    rank: int
    call: int
    tag: str
    payload: Any


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker builds. The class travels by name, so the heartbeat starts before torch is imported."""

    reranker: str  # "module:qualname"
    model_name_or_path: str
    options: dict[str, Any]
    rank: int
    heartbeat_seconds: float
    cpu_threads: int  # CPU workers share the caller's torch threads instead of each taking them all


def is_cpu(device: str) -> bool:
    return device.split(":")[0] == "cpu"


# ----------------------------------------------------------------------------- the worker's side
def serve(spec: WorkerSpec, jobs: Connection, replies: Connection) -> None:
    """Worker main loop. Any failure is reported to the caller with its traceback, never swallowed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle: it abandons the call
    send = _sender(replies, spec.rank)
    threading.Thread(target=_heartbeat, args=(send, spec.heartbeat_seconds), daemon=True).start()
    _quiet_tqdm_lock()
    try:
        if is_cpu(spec.options["devices"][0]):
            import torch

            torch.set_num_threads(spec.cpu_threads)
        reranker = _build(spec)
        description = reranker.runtime.describe()
    except Exception:  # noqa: BLE001 - reported to the caller, who raises it
        send(STARTUP_CALL, FAILED, traceback.format_exc())
        _exit_now(1)
    send(STARTUP_CALL, READY, description)
    while (message := _next_job(jobs)) != STOP:
        call, queries, passages, options = pickle.loads(message)
        try:
            send(call, RESULT, reranker._score_instructed(queries, passages, options))
        except Exception:  # noqa: BLE001 - reported to the caller, who raises it
            send(call, FAILED, traceback.format_exc())
    _exit_now(0)


def _quiet_tqdm_lock() -> None:
    """A thread lock for tqdm. By default tqdm's first bar creates a multiprocessing lock, a named semaphore
    that the resource tracker reports as leaked ("leaked semaphore objects") when a worker ends without
    multiprocessing's cleanup, as it does here. A worker's bars are hidden and its threads are all local."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def _exit_now(code: int) -> None:
    """End the worker without tearing down torch (seconds, for nothing: the process is going away anyway)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # closed, or a pipe whose reader is gone
            pass
    os._exit(code)


def _next_job(jobs: Connection) -> bytes:
    try:
        return jobs.recv_bytes()
    except EOFError:  # the parent is gone
        return STOP


def _build(spec: WorkerSpec) -> Any:
    module, _, qualname = spec.reranker.partition(":")
    reranker_class: Any = functools.reduce(getattr, qualname.split("."), importlib.import_module(module))
    return reranker_class(spec.model_name_or_path, **spec.options)


def _sender(replies: Connection, rank: int) -> Callable[[int, str, Any], None]:
    """Send a reply to the parent; the main and heartbeat threads take turns, one whole message at a time."""
    lock = threading.Lock()

    def send(call: int, tag: str, payload: Any) -> None:
        with lock:
            replies.send(Reply(rank, call, tag, payload))

    return send


def _heartbeat(send: Callable[[int, str, Any], None], seconds: float) -> None:
    """Tell the parent this worker lives; end the worker the moment the parent dies.

    The parent's sentinel becomes readable when it exits, however it exits (SIGKILL included), so a worker
    never lingers holding its device's memory and the parent's stdout/stderr.
    """
    parent = mp.parent_process()
    assert parent is not None, "a worker is always a child process"
    while not wait([parent.sentinel], timeout=seconds):
        try:
            send(NO_CALL, ALIVE, None)
        except OSError:  # the parent closed its end: it is exiting
            break
    _exit_now(ORPHANED)  # nobody is left to answer
