"""Running the application on uvicorn: JSON log lines on stderr, graceful stop on SIGTERM."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from ..optional import require
from .app import create_app, log_event
from .settings import ServerSettings

__all__ = ["configure_logging", "serve"]

_LOGGER = "autorerank.server"
_RAW = frozenset({"autorerank.server.access", "autorerank.server.events"})


class _JsonLines(logging.Formatter):
    """Each record as one JSON object; the access and event logs' messages already are one."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name in _RAW:
            return message
        line: dict[str, Any] = {"event": "log", "level": record.levelname.lower(), "message": message}
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging() -> None:
    """Send the server's logs to stderr as JSON lines (once per process)."""
    logger = logging.getLogger(_LOGGER)
    if any(getattr(handler, "_autorerank", False) for handler in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    handler._autorerank = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def serve(reranker: Any, settings: ServerSettings | None = None) -> None:
    """Serve ``reranker`` over HTTP until SIGTERM or SIGINT; requests in flight are answered before it returns.

    Logs a ``{"event": "ready", "url": ...}`` line once listening (with the real port when ``port`` is 0).
    """
    uvicorn = require("uvicorn", "server", "autorerank serve")
    chosen = settings or ServerSettings()
    configure_logging()
    app = create_app(reranker, chosen)

    class Server(uvicorn.Server):  # type: ignore[name-defined]
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.should_exit or not getattr(self, "servers", None):
                return
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            log_event(event="ready", url=f"http://{shown}:{port}", model=chosen.model_name, **_described(app))

    config = uvicorn.Config(
        app,
        host=chosen.host,
        port=chosen.port,
        log_level="warning",  # uvicorn's own lines are not JSON; ours say the same things
        access_log=False,  # the access middleware logs each request as JSON
        lifespan="on",
        timeout_graceful_shutdown=None,  # SIGTERM: finish every request in flight, however long
    )
    Server(config).run()


def _described(app: Any) -> dict[str, Any]:
    description = app.state.service.description
    return {name: description[name] for name in ("kind", "backend", "device", "dtype", "max_length")}
