"""The ``serve`` command: ``autorerank serve [MODEL]`` and ``python -m autorerank.server [MODEL]``.

:func:`add_serve_command` adds the subcommand to a parser (the ``autorerank`` CLI calls it) with the server's
flags and every model flag of the other commands (from the option table); :func:`run_serve` runs it and returns
the exit status: 0 after a clean stop (SIGTERM), 2 for bad usage (no model, a flag that does not apply, a missing
extra), 130 after Ctrl-C. Nothing heavy is imported until the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from ..cli import warning_printer
from ..cli.commands import load_model
from ..cli.parser import add_model_flags
from ..default_model import DEFAULT_MODEL as EMBEDDED_MODEL
from ..errors import AutoRerankError
from ..options import positive_int_text
from .settings import PASSES_PER_CALL, ServerSettings

__all__ = ["API_KEY_ENV", "DEFAULT_MODEL", "add_serve_command", "build_parser", "main", "run_serve"]

# The model served when MODEL is left out.
DEFAULT_MODEL: str = EMBEDDED_MODEL
API_KEY_ENV = "AUTORERANK_API_KEY"
_DEFAULTS = ServerSettings()
_DESCRIPTION = (
    "Serve a reranker over HTTP in the wire formats existing clients speak: Cohere (POST /v1/rerank, /v2/rerank; "
    "Jina's client too), Hugging Face text-embeddings-inference (POST /rerank) and vLLM (POST /score, /v1/score); "
    "plus GET /health, /info and /metrics (Prometheus). Concurrent requests are scored together in token-budget "
    "batches by one model worker. Logs one JSON line per request on stderr. Stop with SIGTERM or Ctrl-C: requests "
    "in flight are answered first."
)


def add_serve_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to an ``add_subparsers()`` object; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="serve a model over HTTP (Cohere, Jina, TEI and vLLM APIs)", description=_DESCRIPTION
    )
    add_arguments(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m autorerank.server``."""
    parser = argparse.ArgumentParser(prog="python -m autorerank.server", description=_DESCRIPTION)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help=f"a checkpoint directory or a Hugging Face model name (default: the embedded {EMBEDDED_MODEL})",
    )
    server = parser.add_argument_group("server options")
    server.add_argument("--host", default=_DEFAULTS.host, help="address to listen on (default: %(default)s)")
    server.add_argument(
        "--port",
        type=int,
        default=_DEFAULTS.port,
        help="port to listen on; 0 picks a free one (default: %(default)s)",
    )
    server.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' on every route but /health (default: ${API_KEY_ENV}; prefer "
        "the variable, which other users of the machine cannot read in the process list)",
    )
    server.add_argument(
        "--served-model-name",
        default=None,
        metavar="NAME",
        help="the model name responses report (default: MODEL as given)",
    )
    limits: list[tuple[str, str, str]] = [
        ("--max-documents", "max_documents", "most documents in one request; more is refused with 413"),
        ("--max-body-bytes", "max_body_bytes", "largest request body; larger is refused with 413"),
        ("--max-queued-pairs", "max_queued_pairs", "most pairs waiting for the model; past it requests get 429"),
    ]  # fmt: skip
    for flag, name, text in limits:
        server.add_argument(
            flag,
            type=positive_int_text,
            default=getattr(_DEFAULTS, name),
            help=f"{text} (default: %(default)s)",
        )
    server.add_argument(
        "--batch-tokens",
        type=positive_int_text,
        default=None,
        help="most tokens the model worker takes from the queue for one chunk, which the library scores in "
        f"forward passes under --max-batch-tokens (default: {PASSES_PER_CALL} such passes: 131072 tokens on a GPU)",
    )
    add_model_flags(parser)


def run_serve(args: argparse.Namespace) -> int:
    """Load the model and serve it until stopped; the exit status."""
    model = args.model or DEFAULT_MODEL
    if not args.model:
        print(
            f"autorerank serve: no MODEL given: serving the embedded default model {model}", file=sys.stderr
        )
    with warnings.catch_warnings():
        warnings.showwarning = warning_printer("autorerank serve")
        try:
            settings = _settings(args, model)
            _check_extra()
            _check_address(settings.host, settings.port)
            args.model = model
            reranker = load_model(args)
        except (AutoRerankError, OSError, ValueError) as error:
            return _fail(str(error))
        try:
            if args.normalize:
                warnings.warn(
                    "--normalize changes no score the server returns: each API decides (relevance_score is "
                    "normalized, TEI's raw_scores and vLLM's use_activation choose)",
                    stacklevel=1,
                )
            from .runner import serve

            previous = signal.signal(signal.SIGTERM, _stop)
            try:
                serve(reranker, settings)
            finally:
                signal.signal(signal.SIGTERM, previous)
        except _Stopped:
            return 0
        except KeyboardInterrupt:
            return 130
        except (AutoRerankError, ValueError) as error:  # e.g. several --cutoff-layers
            return _fail(str(error))
        finally:
            reranker.close()
    return 0


class _Stopped(Exception):
    """SIGTERM, once the server has answered the requests in flight (uvicorn raises it again after stopping)."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m autorerank.server``: parse ``argv`` (default ``sys.argv[1:]``) and serve."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_request:  # --help, or a usage error argparse already printed
        return int(exit_request.code or 0)
    return run_serve(args)


def _settings(args: argparse.Namespace, model: str) -> ServerSettings:
    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    return ServerSettings(
        host=args.host,
        port=args.port,
        api_key=key or None,
        model_name=args.served_model_name or model,
        max_documents=args.max_documents,
        max_body_bytes=args.max_body_bytes,
        max_queued_pairs=args.max_queued_pairs,
        batch_tokens=args.batch_tokens,
    )


def _check_extra() -> None:
    """Fail before loading the model (which takes a while) when the server extra is missing."""
    from ..optional import require

    for module in ("starlette", "uvicorn", "prometheus_client"):
        require(module, "server", "autorerank serve")


def _check_address(host: str, port: int) -> None:
    """Fail before loading the model when the server could not listen: a port in use, a host that does not resolve
    or is not this machine's (uvicorn would say so only once the model is loaded, and not as one error line)."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as error:
        raise ValueError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def _fail(message: str) -> int:
    print(f"autorerank serve: error: {message}", file=sys.stderr)
    return 2

