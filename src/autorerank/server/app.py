"""The HTTP routes: every dialect over one :class:`Service` (one reranker, one queue, one model worker).

Per scoring request, on the event loop: the key, the body size, JSON, the dialect's fields, the document limit;
then on a thread: token counts and the dialect's truncation rule; then the queue, and the model worker's answer
(or the client's disconnect, which drops the request before it is scored). Each request leaves one JSON line on
the ``autorerank.server.access`` logger and its counts in the Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..errors import InvalidOptionError
from ..optional import require
from .batcher import Batcher, Job
from .dialects import COHERE_V1, COHERE_V2, TEI, VLLM, Dialect
from .errors import ApiError, MalformedRequest, PayloadTooLarge, Unauthorized
from .fields import Fields
from .metrics import Metrics
from .settings import PASSES_PER_CALL, ServerSettings
from .tokens import Prepared, TokenCounter

__all__ = ["ROUTES", "Service", "create_app", "log_event"]

access_log = logging.getLogger("autorerank.server.access")  # one JSON object per request
event_log = logging.getLogger("autorerank.server.events")  # one JSON object per server event (ready, stopped)

# Scoring routes and their dialects.
ROUTES: dict[str, Dialect[Any]] = {
    "/v1/rerank": COHERE_V1,
    "/v2/rerank": COHERE_V2,
    "/rerank": TEI,
    "/score": VLLM,
    "/v1/score": VLLM,
}
_OTHER_ROUTES = ("/health", "/info", "/metrics")
_RECORD = "autorerank.record"  # where a request's counts wait for its log line, in the ASGI scope


@dataclass
class _Record:
    documents: int = 0
    tokens: int = 0
    error: str | None = None


class _ClientGone(Exception):
    """The client disconnected before its scores were ready."""


class Service:
    """One reranker served over HTTP: its queue and worker, token counter, metrics and settings."""

    def __init__(self, reranker: Any, settings: ServerSettings) -> None:
        if reranker.scores_per_pair() != 1:
            raise InvalidOptionError(
                "the server gives one score per pair: pass a single --cutoff-layers (or none, for the last layer)"
            )
        self.reranker = reranker
        self.settings = settings
        self.metrics = Metrics()
        self.counter = TokenCounter(reranker)
        self.batcher = Batcher(
            reranker.iter_scores,
            max_queued_pairs=settings.max_queued_pairs,
            batch_tokens=settings.batch_tokens or call_tokens(reranker),
            metrics=self.metrics,
        )
        self._key = settings.api_key.encode() if settings.api_key else None
        info = reranker.info
        self.description = {
            "model": settings.model_name,
            "model_path": str(reranker.model_name_or_path),
            "kind": info.kind,
            "detected_by": info.detected_by,
            "architecture": info.architecture,
            "num_parameters": info.num_parameters,
            "max_length": info.max_length,
            "dtype": info.dtype,
            "device": info.devices[0] if len(info.devices) == 1 else list(info.devices),
            "backend": info.backend,
            "version": __version__,
            "max_documents": settings.max_documents,
            "batch_tokens": self.batcher.batch_tokens,
        }

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        anyio = require("anyio", "server", "autorerank serve")
        await anyio.to_thread.run_sync(self._warm_up)
        self.batcher.start()
        try:
            yield
        finally:  # uvicorn gets here after the requests in flight have been answered
            await anyio.to_thread.run_sync(self.batcher.stop)
            log_event(event="stopped", served=self.batcher.served)

    def _warm_up(self) -> None:
        """Score one pair before listening, so the first client does not pay for lazy initialisation."""
        self.reranker.compute_layer_scores([("warm up", "warm up")], normalize=False, show_progress=False)

    # ----------------------------------------------------------------- routes
    async def score(self, request: Any, dialect: Dialect[Any]) -> Any:
        responses = require("starlette.responses", "server", "autorerank serve")
        record: _Record = request.scope.setdefault(_RECORD, _Record())
        try:
            self._authorize(request)
            parsed = dialect.parse(Fields(await self._read_json(request)))
            scoring = parsed.scoring
            record.documents = len(scoring.passages)
            if record.documents > self.settings.max_documents:
                raise PayloadTooLarge(
                    f"`{scoring.field}` has {record.documents} texts, more than this server takes in one request "
                    f"({self.settings.max_documents}, --max-documents): split it",
                    field=scoring.field,
                )
            raw: list[float] = []
            if scoring.passages:
                anyio = require("anyio", "server", "autorerank serve")
                prepared = await anyio.to_thread.run_sync(self.counter.prepare, scoring)
                record.tokens = prepared.tokens
                raw = await self._scores(request, prepared)
            body = dialect.render(parsed, raw, record.tokens, self.settings.model_name)
            return responses.JSONResponse(body)
        except _ClientGone:
            record.error = "client disconnected"
            return responses.Response(status_code=499)  # nginx's code for it; nobody is there to read it
        except ApiError as error:
            record.error = error.message
            return responses.JSONResponse(
                dialect.error_body(error), status_code=error.status, headers=error.headers
            )

    async def health(self, request: Any) -> Any:
        responses = require("starlette.responses", "server", "autorerank serve")
        if self.batcher.alive:
            return responses.JSONResponse({"status": "ok"})
        return responses.JSONResponse({"status": "unavailable"}, status_code=503)

    async def info(self, request: Any) -> Any:
        responses = require("starlette.responses", "server", "autorerank serve")
        return self._guarded(request, lambda: responses.JSONResponse(self.description))

    async def metrics_text(self, request: Any) -> Any:
        responses = require("starlette.responses", "server", "autorerank serve")

        def answer() -> Any:
            body, content_type = self.metrics.render()
            return responses.Response(body, media_type=content_type)

        return self._guarded(request, answer)

    def _guarded(self, request: Any, answer: Callable[[], Any]) -> Any:
        try:
            self._authorize(request)
        except ApiError as error:
            responses = require("starlette.responses", "server", "autorerank serve")
            body = {"error": error.message, "error_type": error.error_type, "message": error.message}
            return responses.JSONResponse(body, status_code=error.status, headers=error.headers)
        return answer()

    # ----------------------------------------------------------------- steps of a scoring request
    def _authorize(self, request: Any) -> None:
        if self._key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest takes as long for a wrong key as for a right one, so timing does not leak the key
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._key):
            raise Unauthorized(
                "a valid API key is required: send the header 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def _read_json(self, request: Any) -> object:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body has {declared} bytes, more than {limit} (--max-body-bytes)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body has more than {limit} bytes (--max-body-bytes)")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            raise MalformedRequest(f"the body is not valid JSON: {error}") from None
        except RecursionError:
            raise MalformedRequest("the body is not JSON a request can hold: it nests too deeply") from None

    async def _scores(self, request: Any, prepared: Prepared) -> list[float]:
        """Queue the request and wait for its scores, or for its client to leave (then it is dropped)."""
        job = Job(prepared, asyncio.get_running_loop().create_future())
        self.batcher.submit(job)
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            await asyncio.wait((job.future, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not job.future.done():
            job.gone = True
            job.future.cancel()
            raise _ClientGone
        return job.future.result()


def call_tokens(reranker: Any) -> int:
    """Tokens per model call when ``batch_tokens`` is not given: PASSES_PER_CALL forward passes of the model's
    ``max_batch_tokens`` (its "auto" value for its device: 16384 on a GPU), for each device."""
    import torch

    from ..batching import LARGE_BATCH_TOKENS, default_batch_tokens
    from ..options import AUTO

    per_pass = reranker.options.max_batch_tokens
    if per_pass == AUTO:
        per_pass = default_batch_tokens(torch.device(reranker.devices[0]), reranker.config)
    return PASSES_PER_CALL * int(per_pass or LARGE_BATCH_TOKENS) * len(reranker.devices)


def log_event(**fields: Any) -> None:
    event_log.info(json.dumps(fields, ensure_ascii=False))


async def _disconnected(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Returns when the client disconnects (the body has been read, so only that message can come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _AccessLog:
    """ASGI middleware: one JSON line per request on ``autorerank.server.access``, and the request metrics."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        route = scope["path"] if scope["path"] in ROUTES or scope["path"] in _OTHER_ROUTES else "other"
        record = scope.setdefault(_RECORD, _Record())
        metrics = self.service.metrics
        scoring = route in ROUTES
        if scoring:
            metrics.in_flight.inc()

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - started
            if scoring:
                metrics.in_flight.dec()
            metrics.requests.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(seconds)
            line = {
                "route": route if route != "other" else scope["path"][:200],
                "method": scope["method"],
                "status": status,
                "documents": record.documents,
                "tokens": record.tokens,
                "latency_ms": round(seconds * 1000, 3),
            }
            if record.error is not None:
                line["error"] = record.error
            access_log.info(json.dumps(line, ensure_ascii=False))


def create_app(reranker: Any, settings: ServerSettings | None = None) -> Any:
    """The ASGI application serving ``reranker`` (a loaded :class:`~autorerank.Reranker`).

    Run it with any ASGI server; :func:`autorerank.server.serve` runs it on uvicorn. The model worker starts
    with the application's lifespan and stops after the requests in flight are answered.
    """
    applications = require("starlette.applications", "server", "autorerank serve")
    routing = require("starlette.routing", "server", "autorerank serve")
    service = Service(reranker, settings or ServerSettings())

    def scoring_route(path: str, dialect: Dialect[Any]) -> Any:
        async def endpoint(request: Any) -> Any:
            return await service.score(request, dialect)

        return routing.Route(path, endpoint, methods=["POST"])

    routes = [scoring_route(path, dialect) for path, dialect in ROUTES.items()]
    routes += [
        routing.Route("/health", service.health, methods=["GET"]),
        routing.Route("/info", service.info, methods=["GET"]),
        routing.Route("/metrics", service.metrics_text, methods=["GET"]),
    ]
    app = applications.Starlette(routes=routes, lifespan=service.lifespan)
    app.add_middleware(_AccessLog, service=service)
    app.state.service = service
    return app
