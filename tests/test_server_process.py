"""The server as a process: the command line (`python -m autorerank.server`), start and stop.

How tests start a server process (:class:`~server_support.ServerProcess`) is in server_support.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from server_support import ENC, STARTUP_SECONDS, ServerProcess

from autorerank.cli.parser import MODEL_FLAGS

pytest.importorskip("uvicorn", reason="the server tests need the server extra")


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


def test_a_port_in_use_is_one_error_line_before_the_model_loads():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_module(ENC, "--port", str(port))
    assert result.returncode == 2
    assert (
        f"autorerank serve: error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    )
    assert '"event": "ready"' not in result.stderr and "Traceback" not in result.stderr


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
    assert code == 0  # a clean stop (uvicorn raises SIGTERM again once stopped; the command turns it into 0)
    assert any(record.get("event") == "stopped" for record in server.records())
