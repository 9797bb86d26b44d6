"""Reranker kinds by name: the kind objects, the classes users hold, and the model names we know.

A kind module registers itself with :func:`register_kind`; detection (:mod:`autorerank.auto`) asks the
registered kinds about a checkpoint's ``config.json`` first and uses :data:`KNOWN_MODELS` only as a hint.
"""

from __future__ import annotations

import importlib
from enum import Enum
from typing import TYPE_CHECKING

from .errors import UnknownModelKindError

if TYPE_CHECKING:
    from .kinds.base import Kind
    from .reranker import Reranker

__all__ = [
    "KNOWN_MODELS",
    "RerankerKind",
    "kind_named",
    "register_kind",
    "registered_kinds",
    "reranker_class",
]


class RerankerKind(str, Enum):
    """The kinds of reranker, named as FlagEmbedding names its ``model_class`` values."""

    ENCODER_ONLY_BASE = "encoder-only-base"
    DECODER_ONLY_BASE = "decoder-only-base"
    DECODER_ONLY_LAYERWISE = "decoder-only-layerwise"
    DECODER_ONLY_LIGHTWEIGHT = "decoder-only-lightweight"
    DECODER_ONLY_YES_NO = "decoder-only-yes-no"

    @classmethod
    def parse(cls, value: str | RerankerKind) -> str:
        """A kind name from an enum member, its value, FlagEmbedding's enum of the same values, or the name of
        any registered kind."""
        raw = getattr(value, "value", value)
        if isinstance(raw, str) and raw in _registered_names():
            return raw
        choices = ", ".join(repr(name) for name in _registered_names())
        raise UnknownModelKindError(f"Unknown model_class {value!r}; expected one of {choices}.")


# Published reranker names (matched on "org/name" and on the bare name) -> kind. A name decides where config.json
# does not say, or where it names a kind that the name's kind refines (``Kind.refines``).
KNOWN_MODELS: dict[str, str] = {
    "BAAI/bge-reranker-base": RerankerKind.ENCODER_ONLY_BASE.value,
    "BAAI/bge-reranker-large": RerankerKind.ENCODER_ONLY_BASE.value,
    "BAAI/bge-reranker-v2-m3": RerankerKind.ENCODER_ONLY_BASE.value,
    "BAAI/bge-reranker-v2-gemma": RerankerKind.DECODER_ONLY_BASE.value,
    "BAAI/bge-reranker-v2-minicpm-layerwise": RerankerKind.DECODER_ONLY_LAYERWISE.value,
    "BAAI/bge-reranker-v2.5-gemma2-lightweight": RerankerKind.DECODER_ONLY_LIGHTWEIGHT.value,
    "jinaai/jina-reranker-v2-base-multilingual": RerankerKind.ENCODER_ONLY_BASE.value,
    "jinaai/jina-reranker-v1-turbo-en": RerankerKind.ENCODER_ONLY_BASE.value,
    "Alibaba-NLP/gte-multilingual-reranker-base": RerankerKind.ENCODER_ONLY_BASE.value,
    "maidalun1020/bce-reranker-base_v1": RerankerKind.ENCODER_ONLY_BASE.value,
    "Qwen/Qwen3-Reranker-0.6B": RerankerKind.DECODER_ONLY_YES_NO.value,
    "Qwen/Qwen3-Reranker-4B": RerankerKind.DECODER_ONLY_YES_NO.value,
    "Qwen/Qwen3-Reranker-8B": RerankerKind.DECODER_ONLY_YES_NO.value,
    "tomaarsen/Qwen3-Reranker-0.6B-seq-cls": RerankerKind.DECODER_ONLY_YES_NO.value,
    "tomaarsen/Qwen3-Reranker-4B-seq-cls": RerankerKind.DECODER_ONLY_YES_NO.value,
    "tomaarsen/Qwen3-Reranker-8B-seq-cls": RerankerKind.DECODER_ONLY_YES_NO.value,
}

_KINDS: dict[str, Kind] = {}
_CLASSES: dict[str, type[Reranker]] = {}


def register_kind(kind: Kind, reranker_class: type[Reranker] | None = None) -> Kind:
    """Make ``kind`` available under ``kind.name``, held by users as ``reranker_class`` (default: a plain
    :class:`~autorerank.reranker.Reranker` subclass). Later registrations are asked first in detection."""
    if reranker_class is None:
        from .reranker import Reranker

        reranker_class = type(f"Reranker[{kind.name}]", (Reranker,), {"kind": kind.name})
    reranker_class.kind = kind.name
    _KINDS[kind.name] = kind
    _CLASSES[kind.name] = reranker_class
    return kind


def unregister_kind(name: str) -> None:
    """Remove a kind (tests register fakes and clean up)."""
    _KINDS.pop(name, None)
    _CLASSES.pop(name, None)


_BUILTIN_KIND_MODULES = ("encoder", "llm", "layerwise", "lightweight", "yes_no")


def _load_builtin_kinds() -> None:
    for module in _BUILTIN_KIND_MODULES:  # each registers itself; imported modules are cached
        importlib.import_module(f"{__package__}.kinds.{module}")


def _registered_names() -> list[str]:
    _load_builtin_kinds()
    return list(_KINDS)


def registered_kinds() -> list[Kind]:
    """Every kind, most specific first (detection asks them in this order)."""
    _load_builtin_kinds()
    return sorted(_KINDS.values(), key=lambda kind: -kind.detection_priority)


def kind_named(name: str) -> Kind:
    _load_builtin_kinds()
    try:
        return _KINDS[name]
    except KeyError:
        raise UnknownModelKindError(f"No implementation is registered for kind {name!r}.") from None


def reranker_class(name: str) -> type[Reranker]:
    """The class users hold for kind ``name``."""
    kind_named(name)
    return _CLASSES[name]
