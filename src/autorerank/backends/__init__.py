"""Runtimes other than PyTorch that can hold a loaded model's weights.

Each backend takes the torch model the kind loaded and returns a module with the same call
signature, so the scoring path never branches on the backend. Backends import their packages
lazily, through :func:`autorerank.optional.require`.
"""

from __future__ import annotations

__all__: list[str] = []
