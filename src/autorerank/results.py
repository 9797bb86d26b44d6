"""Plain result records; field names match the rerank wire formats."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelInfo", "RerankResult"]


@dataclass(frozen=True)
class RerankResult:
    """One document's place in a reranking: its input position, score and text."""

    index: int
    relevance_score: float
    document: str


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded and how: shown by ``autorerank info``."""

    kind: str
    detected_by: str
    architecture: str
    num_parameters: int
    max_length: int
    dtype: str
    devices: tuple[str, ...]
    backend: str = "torch"
