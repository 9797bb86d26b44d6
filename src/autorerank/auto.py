"""``AutoReranker.from_finetuned``: pick the right reranker kind for a checkpoint.

Order: an explicit ``model_class``; then the known model names (full ``org/name`` or bare name,
and a ``checkpoint-N`` folder counts as its parent's name); then the checkpoint's own
``config.json``, so a fine-tune saved under any folder name still loads.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .errors import UnknownModelKindError
from .loading import normalize_model_path, read_json
from .registry import KNOWN_MODELS, RerankerKind, reranker_class
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

        ``model_class`` is one of ``encoder-only-base``, ``decoder-only-base``,
        ``decoder-only-layerwise``, ``decoder-only-lightweight`` (string or :class:`RerankerKind`).
        Remaining keyword arguments go to the kind's constructor; unknown ones raise ``TypeError``.
        """
        path = normalize_model_path(model_name_or_path)
        kind, reason = detect_kind(path, model_class, cache_dir=kwargs.get("cache_dir"))
        logger.info("Loading %s as %s (%s)", path, kind.value, reason)
        reranker = reranker_class(kind)(
            path, use_fp16=use_fp16, trust_remote_code=bool(trust_remote_code), **kwargs
        )
        reranker.detected_by = reason
        return reranker


def detect_kind(
    model_name_or_path: str, model_class: str | RerankerKind | None = None, *, cache_dir: str | None = None
) -> tuple[RerankerKind, str]:
    """The kind of a checkpoint, and how it was decided."""
    if model_class is not None:
        return RerankerKind.parse(model_class), "model_class argument"
    name = _model_name(model_name_or_path)
    for candidate, table in ((name, KNOWN_MODELS), (name.split("/")[-1], _KNOWN_BASENAMES)):
        if candidate in table:
            return table[candidate], f"known model name {candidate!r}"
    config = read_json(model_name_or_path, "config.json", cache_dir)
    kind = kind_from_config(config)
    if kind is None:
        kinds = ", ".join(repr(k.value) for k in RerankerKind)
        found = (
            f"architectures={config.get('architectures')}, model_type={config.get('model_type')!r}"
            if config
            else "no config.json"
        )
        raise UnknownModelKindError(
            f"Cannot tell which kind of reranker {model_name_or_path!r} is ({found}). "
            f"Pass it explicitly, e.g. AutoReranker.from_finetuned(path, model_class='encoder-only-base'); "
            f"kinds: {kinds}."
        )
    return (
        kind,
        f"config.json (architectures={config.get('architectures')}, model_type={config.get('model_type')!r})",
    )


def kind_from_config(config: dict[str, Any]) -> RerankerKind | None:
    """Read the kind off a checkpoint's config.json fields; None if they do not say."""
    architectures = " ".join(config.get("architectures") or [])
    model_type = config.get("model_type", "")
    if (
        model_type == "cost_wise_gemma"
        or "CostWise" in architectures
        or {"layer_sep", "start_layer"} <= config.keys()
    ):
        return RerankerKind.DECODER_ONLY_LIGHTWEIGHT
    if "LayerWise" in architectures or (model_type == "minicpm" and "start_layer" in config):
        return RerankerKind.DECODER_ONLY_LAYERWISE
    if architectures.endswith("ForSequenceClassification") or "ForSequenceClassification " in architectures:
        return RerankerKind.ENCODER_ONLY_BASE
    if "ForCausalLM" in architectures:
        return RerankerKind.DECODER_ONLY_BASE
    return None


def _model_name(model_name_or_path: str) -> str:
    """``org/name`` of a hub name or the last two components of a path, skipping ``checkpoint-N``."""
    parts = [part for part in model_name_or_path.replace("\\", "/").split("/") if part]
    if parts and parts[-1].startswith("checkpoint-"):
        parts = parts[:-1]
    return "/".join(parts[-2:])
