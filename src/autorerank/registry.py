"""Reranker kinds, the classes that implement them, and the model names we know.

Name tables are only a hint for detection (see :mod:`autorerank.auto`): a checkpoint's
``config.json`` decides when its name is unknown.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from .errors import UnknownModelKindError

if TYPE_CHECKING:
    from .reranker import Reranker

__all__ = ["KNOWN_MODELS", "RerankerKind", "register_kind", "reranker_class"]


class RerankerKind(str, Enum):
    """The four kinds of reranker, named as FlagEmbedding names its ``model_class`` values."""

    ENCODER_ONLY_BASE = "encoder-only-base"
    DECODER_ONLY_BASE = "decoder-only-base"
    DECODER_ONLY_LAYERWISE = "decoder-only-layerwise"
    DECODER_ONLY_LIGHTWEIGHT = "decoder-only-lightweight"

    @classmethod
    def parse(cls, value: str | RerankerKind) -> RerankerKind:
        """Accept an enum member, its value, or FlagEmbedding's enum of the same values."""
        raw = getattr(value, "value", value)
        try:
            return cls(raw)
        except ValueError:
            choices = ", ".join(repr(kind.value) for kind in cls)
            raise UnknownModelKindError(
                f"Unknown model_class {value!r}; expected one of {choices}."
            ) from None


# Published reranker names (matched on "org/name" and on the bare name) -> kind.
KNOWN_MODELS: dict[str, RerankerKind] = {
    "BAAI/bge-reranker-base": RerankerKind.ENCODER_ONLY_BASE,
    "BAAI/bge-reranker-large": RerankerKind.ENCODER_ONLY_BASE,
    "BAAI/bge-reranker-v2-m3": RerankerKind.ENCODER_ONLY_BASE,
    "BAAI/bge-reranker-v2-gemma": RerankerKind.DECODER_ONLY_BASE,
    "BAAI/bge-reranker-v2-minicpm-layerwise": RerankerKind.DECODER_ONLY_LAYERWISE,
    "BAAI/bge-reranker-v2.5-gemma2-lightweight": RerankerKind.DECODER_ONLY_LIGHTWEIGHT,
    "jinaai/jina-reranker-v2-base-multilingual": RerankerKind.ENCODER_ONLY_BASE,
    "jinaai/jina-reranker-v1-turbo-en": RerankerKind.ENCODER_ONLY_BASE,
    "Alibaba-NLP/gte-multilingual-reranker-base": RerankerKind.ENCODER_ONLY_BASE,
    "maidalun1020/bce-reranker-base_v1": RerankerKind.ENCODER_ONLY_BASE,
}

_CLASSES: dict[RerankerKind, type[Reranker]] = {}


def register_kind(kind: RerankerKind):
    """Class decorator: make ``cls`` the implementation of ``kind``."""

    def decorate(cls: type[Reranker]) -> type[Reranker]:
        cls.kind = kind
        _CLASSES[kind] = cls
        return cls

    return decorate


def reranker_class(kind: RerankerKind) -> type[Reranker]:
    """The class implementing ``kind`` (importing the kind modules on first use)."""
    from . import kinds  # noqa: F401  (registers every kind)

    try:
        return _CLASSES[kind]
    except KeyError:
        raise UnknownModelKindError(f"No implementation is registered for kind {kind.value!r}.") from None
