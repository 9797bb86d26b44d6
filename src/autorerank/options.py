"""Scoring options: set at construction, overridable per ``compute_score`` call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from .errors import InvalidOptionError

__all__ = ["AUTO", "ScoringOptions", "as_layers"]

# max_batch_tokens="auto": each process sizes the budget for its own device and model (see batching.py).
AUTO = "auto"


@dataclass(frozen=True)
class ScoringOptions:
    """Everything that shapes how pairs are tokenized, batched and reported."""

    batch_size: int = 128
    max_batch_tokens: int | str | None = AUTO
    query_max_length: int | None = None
    max_length: int = 512
    passage_max_length: int | None = None
    normalize: bool = False
    prompt: str | None = None
    cutoff_layers: tuple[int, ...] | None = None
    compress_layers: tuple[int, ...] | None = None
    compress_ratio: int | None = None
    show_progress: bool | None = None

    def __post_init__(self) -> None:
        _check_positive("batch_size", self.batch_size)
        _check_positive("max_length", self.max_length)
        for name in ("query_max_length", "passage_max_length", "compress_ratio"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        if self.max_batch_tokens not in (None, AUTO):
            _check_positive("max_batch_tokens", self.max_batch_tokens, also="'auto' or None")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise InvalidOptionError(f"prompt must be a string or None, got {type(self.prompt).__name__}.")
        object.__setattr__(self, "cutoff_layers", as_layers("cutoff_layers", self.cutoff_layers))
        object.__setattr__(self, "compress_layers", as_layers("compress_layers", self.compress_layers))

    @property
    def query_limit(self) -> int:
        """Query token limit: ``query_max_length``, else three quarters of ``max_length`` (the reference rule)."""
        return self.query_max_length if self.query_max_length is not None else self.max_length * 3 // 4

    @property
    def passage_limit(self) -> int:
        """Passage token limit before pair truncation: ``max_length``, or ``passage_max_length`` if smaller."""
        if self.passage_max_length is None:
            return self.max_length
        return min(self.passage_max_length, self.max_length)

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    def updated(self, overrides: dict[str, Any]) -> ScoringOptions:
        """A copy with ``overrides`` applied; None means "keep the constructor's value", as in the reference."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({name: value for name, value in overrides.items() if value is not None})
        return ScoringOptions(**values)


def as_layers(name: str, value: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """Normalise a layer option: an int is one layer, a list keeps its order."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidOptionError(f"{name} must be an int or a list of ints, got a bool.")
    if isinstance(value, int):
        return (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidOptionError(f"{name} must be an int or a list of ints, got {type(value).__name__}.")
    layers = tuple(value)
    if not layers or not all(isinstance(layer, int) and not isinstance(layer, bool) for layer in layers):
        raise InvalidOptionError(f"{name} must be a non-empty list of ints, got {list(value)!r}.")
    return layers


def _check_positive(name: str, value: Any, also: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(
            f"{name} must be a positive int{', ' + also if also else ''}, got {value!r}."
        )
