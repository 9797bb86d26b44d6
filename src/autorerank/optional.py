"""The one gate for optional dependencies: import them where used, name the extra when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an error telling which ``autorerank[extra]`` to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the '{module}' package: pip install 'autorerank[{extra}]'"
        ) from exc
