"""The rerank HTTP server: the wire formats existing clients speak, over one queue and one model worker.

::

    request ── key, body size, JSON ── dialect (dialects.py): Cohere v1/v2 and Jina, TEI, vLLM ── fields checked
        └─ thread: token counts, truncation rule (tokens.py) ── bounded queue (batcher.py; full: 429)
    model worker thread: one reranker.iter_scores stream; each chunk is the requests waiting, up to a token
        budget, taken and tokenized while the model scores the chunk before
        └─ scores back to each request ── dialect renders them ── one JSON log line, metrics (metrics.py)

``create_app(reranker, settings)`` builds the ASGI application (Starlette); ``serve(reranker, settings)`` runs it on
uvicorn; ``autorerank serve MODEL`` / ``python -m autorerank.server MODEL`` do both from the command line
(cli.py). Needs the ``server`` extra: ``pip install 'autorerank[server]'``. Names are imported on first use, so the
command line can build its parser without Starlette.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ServerSettings": "settings",
    "create_app": "app",
    "serve": "runner",
}

__all__ = ["ServerSettings", "create_app", "serve"]

if TYPE_CHECKING:
    from .app import create_app
    from .runner import serve
    from .settings import ServerSettings


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'autorerank.server' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
