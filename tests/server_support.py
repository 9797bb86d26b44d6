"""What the server tests share: how they start a real server process and read it, and the request they send.

:class:`ServerProcess` starts a real server process on a free loopback port (``--port 0``; the port is read off its
``ready`` log line) and keeps its stderr, which the tests check. The ``enc_server`` and ``enc_client`` fixtures
(conftest.py) start one over the encoder fixture with :data:`KEY` per test module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from conftest import fixture_path

ENC = fixture_path("enc/bge-reranker-v2-m3")
STARTUP_SECONDS = 180  # importing torch and loading a model on a busy 2-core machine

KEY = "sk-test-5e1b7c"  # given through AUTORERANK_API_KEY, the way the README recommends
ATOL = 2e-5
QUERY = "what is a giant panda?"
DOCUMENTS = [
    "The giant panda is a bear species endemic to China.",
    "Paris is the capital of France.",
    "Pandas eat bamboo almost exclusively.",
    "The stock market fell sharply on Monday.",
    "A red panda is not closely related to the giant panda.",
]


class ServerProcess:
    """A server process; ``url`` once it is ready, its stderr lines in ``lines``."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(STARTUP_SECONDS) or not self.url:
            self.process.kill()
            raise RuntimeError("the server did not start:\n" + "\n".join(self.lines))

    @classmethod
    def command(cls, model: str, *flags: str, env: dict[str, str] | None = None) -> ServerProcess:
        """``python -m autorerank.server MODEL --port 0 FLAGS...``"""
        return cls(["-m", "autorerank.server", model, "--port", "0", *flags], env)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if '"event": "ready"' in line:
                self.url = json.loads(line)["url"]
                self._ready.set()
        self._ready.set()  # the process ended

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines so far."""
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def access_records(self) -> list[dict[str, Any]]:
        return [record for record in self.records() if "route" in record]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_for(condition: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus exposition, read with prometheus_client's own parser (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                return float(sample.value)
    return 0.0


def pairs(query: str, documents: list[str]) -> list[tuple[str, str]]:
    return [(query, document) for document in documents]


def assert_ranked(results, key, expected):
    """Results best first, one per document, each with its document's expected score."""
    scores = [result[key] for result in results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(result["index"] for result in results) == list(range(len(expected)))
    for result in results:
        assert result[key] == pytest.approx(expected[result["index"]], abs=ATOL), result
