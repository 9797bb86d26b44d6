"""``AutoReranker.from_finetuned``: pick the right reranker kind for a checkpoint.

Order: an explicit ``model_class``; then the checkpoint's files other than config.json, asked of every kind
(``Kind.recognise``: a sentence-transformers CrossEncoder folder); then the checkpoint's own ``config.json``, asked
of every registered kind (most specific first), where a known model name of a kind that refines config.json's
verdict wins (``Kind.refines``: a Qwen3-Reranker is a causal LM to config.json); then, only when config.json does
not say, the known model names (full ``org/name`` or bare name; a ``checkpoint-N`` folder counts as its parent's
name). The rule that decided is recorded in ``reranker.detected_by``. The name ``autorerank-mini`` (when no folder
has that name) is the embedded default model (:mod:`autorerank.default_model`), built in the cache on first use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from .default_model import describe, embedded_checkpoint, is_embedded
from .errors import UnknownModelKindError
from .kinds.base import ModelSource
from .loading import normalize_model_path, read_json
from .registry import KNOWN_MODELS, RerankerKind, kind_named, registered_kinds, reranker_class
from .reranker import Reranker

__all__ = ["AutoReranker", "detect_kind"]

logger = logging.getLogger(__name__)

_KNOWN_BASENAMES = {name.split("/")[-1]: kind for name, kind in KNOWN_MODELS.items()}


class AutoReranker:
    """Factory for rerankers; FlagEmbedding's ``FlagAutoReranker`` under another name."""

    def __init__(self) -> None:
        raise TypeError("Use AutoReranker.from_finetuned(model_name_or_path, ...) to load a reranker.")

    @classmethod
    def from_finetuned(
        cls,
        model_name_or_path: str | os.PathLike[str],
        model_class: str | RerankerKind | None = None,
        use_fp16: bool = False,
        trust_remote_code: bool | None = None,
        **kwargs: Any,
    ) -> Reranker:
        """Load a reranker of the right kind, with the same arguments and meaning as FlagEmbedding.

        ``model_class`` is a kind name (``encoder-only-base``, ``decoder-only-base``, ``decoder-only-layerwise``,
        ``decoder-only-lightweight``, ``decoder-only-yes-no``) or a :class:`RerankerKind`. Remaining keyword
        arguments are the options of :mod:`autorerank.options`; unknown ones raise ``TypeError``.
        """
        path = normalize_model_path(model_name_or_path)
        embedded = is_embedded(path)
        if embedded:  # autorerank-mini: the shipped adapter merged into the installed backbone, built once
            path = str(embedded_checkpoint(path))
        kind, reason = detect_kind(path, model_class, cache_dir=kwargs.get("cache_dir"))
        if embedded:
            reason = f"{describe()}, built in {path}; {reason}"
        logger.info("Loading %s as %s (%s)", path, kind, reason)
        reranker = reranker_class(kind)(
            path, use_fp16=use_fp16, trust_remote_code=bool(trust_remote_code), **kwargs
        )
        reranker.detected_by = reason
        return reranker


def detect_kind(
    model_name_or_path: str, model_class: str | RerankerKind | None = None, *, cache_dir: str | None = None
) -> tuple[str, str]:
    """The kind name of a checkpoint, and the rule that decided it."""
    if model_class is not None:
        return RerankerKind.parse(model_class), "model_class argument"
    source = ModelSource(model_name_or_path, cache_dir=cache_dir)
    for kind in registered_kinds():
        rule = kind.recognise(source)
        if rule is not None:
            return kind.name, rule
    config = read_json(model_name_or_path, "config.json", cache_dir)
    by_config = kind_from_config(config)
    by_name = _known_name(model_name_or_path)
    if by_config is not None:
        if by_name is not None and by_config in kind_named(by_name[0]).refines:
            return by_name[0], f"known model name {by_name[1]!r}, refining config.json ({_describe(config)})"
        return by_config, f"config.json ({_describe(config)})"
    if by_name is not None:
        return by_name[0], f"known model name {by_name[1]!r} (config.json does not say)"
    kinds = ", ".join(repr(kind.name) for kind in registered_kinds())
    found = _describe(config) if config else "no config.json"
    raise UnknownModelKindError(
        f"Cannot tell which kind of reranker {model_name_or_path!r} is ({found}). "
        f"Pass it explicitly, e.g. AutoReranker.from_finetuned(path, model_class='encoder-only-base'); "
        f"kinds: {kinds}."
    )


def kind_from_config(config: Mapping[str, Any]) -> str | None:
    """The first registered kind (most specific first) whose rule matches config.json; None if none does."""
    return next((kind.name for kind in registered_kinds() if kind.matches(config)), None)


def _known_name(model_name_or_path: str) -> tuple[str, str] | None:
    """The kind of a known model name, and the name as matched (``org/name`` or the bare name)."""
    name = _model_name(model_name_or_path)
    for candidate, table in ((name, KNOWN_MODELS), (name.split("/")[-1], _KNOWN_BASENAMES)):
        if candidate in table:
            return table[candidate], candidate
    return None


def _describe(config: Mapping[str, Any]) -> str:
    return f"architectures={config.get('architectures')}, model_type={config.get('model_type')!r}"


def _model_name(model_name_or_path: str) -> str:
    """``org/name`` of a hub name or the last two components of a path, skipping ``checkpoint-N``."""
    parts = [part for part in model_name_or_path.replace("\\", "/").split("/") if part]
    if parts and parts[-1].startswith("checkpoint-"):
        parts = parts[:-1]
    return "/".join(parts[-2:])
