"""One module per reranker kind; :mod:`autorerank.registry` imports (and so registers) them on first use."""

from __future__ import annotations

__all__: list[str] = []
