"""The multi-device worker pool is safe: concurrent callers, interrupts, dead parents, stopped workers, scripts.

Real worker processes on ``devices=["cpu", "cpu"]`` with the encoder fixture; scripts run in subprocesses.
"""

from __future__ import annotations

import _thread
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import cached_reranker, fixture_path

from autorerank import AutoReranker, WorkerError

ENC = "enc/bge-reranker-v2-m3"
ATOL = 2e-5  # workers run torch with more threads than the tests: summation order differs slightly
needs_proc = pytest.mark.skipif(
    not os.path.exists("/proc/self/stat"), reason="reads process states from /proc"
)


@pytest.fixture(scope="module")
def two_cpus() -> Iterator[Any]:
    with AutoReranker.from_finetuned(fixture_path(ENC), devices=["cpu", "cpu"]) as reranker:
        yield reranker


def distinct_pairs(tag: str, count: int) -> list[tuple[str, str]]:
    """Pairs no other caller uses, of varied lengths, so that a mixed-up reply cannot pass for the right one."""
    rng = random.Random(tag)
    words = ["panda", "bear", "bamboo", "forest", "paris", "france", "river", "city", "snow", "tea"]
    return [(f"{tag} question {i}", " ".join(rng.choices(words, k=rng.randint(1, 12)))) for i in range(count)]


def single_device(pairs: list[tuple[str, str]]) -> np.ndarray:
    return np.array(cached_reranker(ENC).compute_score(pairs))


def within(seconds: float, function: Callable[[], Any]) -> Any:
    """``function()``'s result (or exception), failing the test instead of hanging past ``seconds``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s: the call hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped has exited: it holds no memory and no files)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_until_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def run_script(path: Path, code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(path), fixture_path(ENC)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=path.parent,
    )


# ----------------------------------------------------------------------------- concurrent callers, interrupts
@pytest.mark.slow
def test_concurrent_callers_get_their_own_scores(two_cpus):
    threads, rounds = 8, 50
    own = {t: distinct_pairs(f"thread-{t}", 12) for t in range(threads)}
    expected = {t: single_device(pairs) for t, pairs in own.items()}
    failures: list[str] = []

    def caller(t: int) -> None:
        rng = random.Random(t)
        for round_ in range(rounds):
            picks = rng.choices(
                range(len(own[t])), k=rng.randint(1, 7)
            )  # repeats too, and fewer than devices
            scores = np.array(two_cpus.compute_score([own[t][i] for i in picks]))
            if scores.shape != (len(picks),) or not np.allclose(scores, expected[t][picks], atol=ATOL):
                failures.append(f"thread {t}, round {round_}: got {scores}, expected {expected[t][picks]}")

    workers = [threading.Thread(target=caller, args=(t,), daemon=True) for t in range(threads)]
    start = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(max(0.0, 120 - (time.monotonic() - start)))
    assert not any(worker.is_alive() for worker in workers), "a caller hangs"
    assert not failures, failures[:3]


def interrupt_now() -> None:
    """Ctrl-C as a signal: SIGINT to the main thread, which wakes it from any wait."""
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def ctrl_c_in_a_terminal(pids: list[int]) -> Callable[[], None]:
    """A terminal sends Ctrl-C's SIGINT to the whole foreground process group: the workers get it too."""

    def interrupt() -> None:
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        interrupt_now()

    return interrupt


def wait_for_interrupt(seconds: float) -> None:
    """Short sleeps: ``_thread.interrupt_main`` only sets a flag, which a long sleep would check too late."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def interrupt_in_flight(pool: Any, delay: float, interrupt: Callable[[], None]) -> threading.Thread:
    """Interrupt ``delay`` seconds after the pool sent its workers a job: the call is surely in flight."""

    def run() -> None:
        deadline = time.monotonic() + 30
        while not any(link.busy for link in pool._links) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(delay)
        interrupt()

    return threading.Thread(target=run, daemon=True)


@pytest.mark.slow
@needs_proc
def test_an_interrupted_call_never_leaks_into_the_next(two_cpus):
    pool = two_cpus._pool
    large = [(f"large question {i}", "a passage about pandas " * 40) for i in range(600)]  # ~1 s of work
    interrupts = [
        (0.0, _thread.interrupt_main),  # a notebook's interrupt button
        (0.05, interrupt_now),  # Ctrl-C delivered to this process
        (0.02, ctrl_c_in_a_terminal(pool.pids)),  # Ctrl-C in a terminal's REPL
    ]
    for attempt, (delay, interrupt) in enumerate(interrupts):
        finished = False
        interrupter = interrupt_in_flight(pool, delay, interrupt)
        with pytest.raises(KeyboardInterrupt):
            interrupter.start()
            two_cpus.compute_score(large)
            finished = True
            wait_for_interrupt(30)  # the interrupt must not land outside this block
        interrupter.join()
        assert not finished, "the large call ended before the interrupt: make it larger"
        small = distinct_pairs(f"after-{attempt}", 5)
        scores = within(60, lambda small=small: two_cpus.compute_score(small))
        np.testing.assert_allclose(scores, single_device(small), atol=ATOL)
    assert two_cpus._pool is pool and all(map(alive, pool.pids))  # the workers survived: no reload


# ----------------------------------------------------------------------------- workers that stop
@pytest.mark.slow
@needs_proc
def test_a_stopped_worker_raises_worker_error_naming_it(tmp_path):
    reranker = AutoReranker.from_finetuned(fixture_path(ENC), devices=["cpu", "cpu"], worker_timeout=2)
    stopped = reranker._pool.pids[1]
    os.kill(stopped, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(WorkerError, match=rf"1 on cpu \(pid {stopped}\).*worker_timeout=2"):
            within(30, lambda: reranker.compute_score(distinct_pairs("stopped", 4)))
        assert time.monotonic() - start < 15
        assert not wait_until_gone([stopped], 5), "the stopped worker was left behind"
        pairs = distinct_pairs("restarted", 3)  # the next call starts new workers
        np.testing.assert_allclose(reranker.compute_score(pairs), single_device(pairs), atol=ATOL)
    finally:
        if alive(stopped):
            os.kill(stopped, signal.SIGKILL)
        reranker.close()


def test_worker_timeout_is_checked():
    from autorerank import InvalidOptionError

    with pytest.raises(InvalidOptionError, match="worker_timeout"):
        AutoReranker.from_finetuned(fixture_path(ENC), devices=["cpu", "cpu"], worker_timeout=0)


# ----------------------------------------------------------------------------- scripts
PARENT = """
    import multiprocessing, sys
    from autorerank import AutoReranker

    if __name__ == "__main__":
        reranker = AutoReranker.from_finetuned(sys.argv[1], devices=["cpu", "cpu"])
        print(*[child.pid for child in multiprocessing.active_children()], flush=True)
        while True:  # keep the workers busy until killed
            reranker.compute_score([(f"question {i}", "a passage " * 50) for i in range(200)])
"""


@pytest.mark.slow
@needs_proc
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    (tmp_path / "parent.py").write_text(textwrap.dedent(PARENT), encoding="utf-8")
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "parent.py"), fixture_path(ENC)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    try:
        line = within(120, parent.stdout.readline)  # type: ignore[union-attr]
        pids = [int(pid) for pid in line.split()]
        assert len(pids) == 2, f"no worker pids: {line!r} {parent.stderr.read() if not line else ''}"  # type: ignore[union-attr]
        time.sleep(1.0)  # let them get busy
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert not wait_until_gone(pids, 5), "workers outlived their killed parent"
        parent.communicate(timeout=10)  # nobody holds the parent's stdout/stderr open any more
    finally:
        parent.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_script_without_a_main_guard_is_told_to_add_one(tmp_path):
    result = run_script(
        tmp_path / "unguarded.py",
        """
        import sys
        from autorerank import AutoReranker

        reranker = AutoReranker.from_finetuned(sys.argv[1], devices=["cpu", "cpu"])
        print(reranker.compute_score([("a", "b")]))
        """,
    )
    assert result.returncode != 0
    assert "WorkerError" in result.stderr and 'if __name__ == "__main__":' in result.stderr, result.stderr
    assert "unguarded.py" in result.stderr and "Line 5" in result.stderr
    assert "bootstrapping" not in result.stderr  # refused before any worker started


@pytest.mark.slow
def test_workers_that_fail_re_importing_the_script_name_the_guard(tmp_path):
    result = run_script(
        tmp_path / "half_guarded.py",
        """
        import sys
        from autorerank import AutoReranker

        if len(sys.argv) > 1:  # not a main guard: each worker re-imports the script and runs this again
            reranker = AutoReranker.from_finetuned(sys.argv[1], devices=["cpu", "cpu"])
        """,
    )
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "WorkerError" in message and "while starting" in message, result.stderr
    assert "half_guarded.py" in message and 'if __name__ == "__main__":' in message


@pytest.mark.slow
def test_a_script_using_several_devices_exits_cleanly(tmp_path):
    result = run_script(
        tmp_path / "guarded.py",
        """
        import sys
        from autorerank import AutoReranker

        if __name__ == "__main__":
            reranker = AutoReranker.from_finetuned(sys.argv[1], devices=["cpu", "cpu"])
            print(reranker.compute_score([("a", "b"), ("c", "d"), ("e", "f")]))
            # no close(): a global reranker's workers are stopped at exit
        """,
    )
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"\d\.\d+", result.stdout)) == 3, result.stdout
    assert "leaked" not in result.stderr and "resource_tracker" not in result.stderr, result.stderr


def test_an_empty_chunk_streams_as_on_one_device(two_cpus):
    chunks = [[("q", "a passage")], [], [("q", "another")]]
    shapes = [scores.shape for scores in two_cpus.iter_scores(chunks)]
    assert shapes == [(1, 1), (1, 0), (1, 1)]
