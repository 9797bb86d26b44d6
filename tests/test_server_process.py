"""The server as a process: how tests start one, and the command line (`python -m autorerank.server`).

:class:`ServerProcess` starts a real server process on a free loopback port (``--port 0``; the port is read off its
``ready`` log line) and keeps its stderr, which the other server test modules check.
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

from autorerank.cli.parser import MODEL_FLAGS

pytest.importorskip("uvicorn", reason="the server tests need the server extra")

ENC = fixture_path("enc/bge-reranker-v2-m3")
STARTUP_SECONDS = 180  # importing torch and loading a model on a busy 2-core machine


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


def run_module(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autorerank.server", *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        env={**os.environ, **(env or {})},
    )


# ----------------------------------------------------------------------------- the command line
def test_without_a_model_it_serves_the_embedded_default_and_says_so():
    httpx = pytest.importorskip("httpx")
    server = ServerProcess(["-m", "autorerank.server", "--port", "0"])
    try:
        info = httpx.get(f"{server.url}/info", timeout=30).json()
        assert info["model"] == "autorerank-mini" and info["kind"] == "encoder-only-base"
        assert sum("embedded default model autorerank-mini" in line for line in server.lines) == 1
    finally:
        server.stop()


def test_a_flag_that_does_not_apply_to_the_model_is_refused_before_serving():
    result = run_module(ENC, "--port", "0", "--prompt", "Is it relevant?")
    assert result.returncode == 2
    assert "--prompt does not apply to encoder-only-base models" in result.stderr


def test_a_model_that_does_not_exist_is_an_error_naming_it(tmp_path):
    missing = str(tmp_path / "no-such-model")
    result = run_module(missing, "--port", "0")
    assert result.returncode == 2
    assert "no-such-model" in result.stderr


def test_serve_command_takes_every_model_flag_and_the_server_flags():
    import argparse

    from autorerank.server.cli import add_serve_command

    parser = argparse.ArgumentParser(prog="autorerank")
    serve = add_serve_command(parser.add_subparsers(dest="command"))
    flags = {flag for action in serve._actions for flag in action.option_strings}
    assert {str(row.flag) for row in MODEL_FLAGS} <= flags
    assert {
        "--host",
        "--port",
        "--api-key",
        "--max-documents",
        "--max-body-bytes",
        "--max-queued-pairs",
    } <= flags
    args = parser.parse_args(
        ["serve", "m", "--bf16", "--max-length", "256", "--device", "cpu", "--port", "9"]
    )
    assert (args.command, args.model, args.use_bf16, args.max_length, args.devices) == (
        "serve",
        "m",
        True,
        256,
        ["cpu"],
    )
    assert args.host == "127.0.0.1"  # loopback unless asked
    assert parser.parse_args(["serve"]).model is None  # MODEL is optional: run_serve explains it is required


def test_fp16_and_bf16_together_are_a_usage_error():
    result = run_module(ENC, "--fp16", "--bf16")
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


def test_help_does_not_import_the_web_stack():
    code = (
        "import sys; from autorerank.server.cli import build_parser; build_parser().format_help(); "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'torch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_the_server_starts_on_a_free_port_and_stops_on_sigterm():
    server = ServerProcess.command(ENC)
    try:
        import httpx

        assert httpx.get(server.url + "/health").json() == {"status": "ok"}
        ready = next(record for record in server.records() if record.get("event") == "ready")
        assert ready["kind"] == "encoder-only-base" and ready["url"].startswith("http://127.0.0.1:")
    finally:
        code = server.stop()
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    assert any(record.get("event") == "stopped" for record in server.records())
