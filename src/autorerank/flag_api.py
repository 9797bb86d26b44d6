"""FlagEmbedding's module-level reranker names, and a transformers view of the tokenizer, for code written for
FlagEmbedding. (The methods and attributes FlagEmbedding's rerankers have are on
:class:`~autorerank.reranker.Reranker` itself.)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .tokenization import TextTokenizer

__all__ = ["RerankerConfig", "flat_scores", "hf_tokenizer"]  # and, built on first use, the two mappings


def flat_scores(scores: np.ndarray) -> np.ndarray:
    """``(1, N)`` -> ``(N,)``; several layers stay ``(L, N)``."""
    return scores[0] if scores.shape[0] == 1 else scores


def hf_tokenizer(tokenizer: TextTokenizer, settings: dict[str, Any], padding_side: str = "right") -> Any:
    """A transformers fast tokenizer over the same ``tokenizer.json`` (so its ids are the reranker's), for code
    that calls ``reranker.tokenizer(...)`` as it would a Hugging Face tokenizer: padded on the kind's side (the
    LLM kinds read the last position) and as long as ``tokenizer_config.json`` says, as FlagEmbedding's is."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    specials = {}
    for name in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        token = settings.get(name)
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str):
            specials[name] = token
    limit = settings.get("model_max_length")
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer.backend.to_str()),
        truncation_side=tokenizer.truncation_side,
        padding_side=padding_side,
        **({"model_max_length": limit} if isinstance(limit, int) else {}),
        **specials,
    )


@dataclass
class RerankerConfig:
    """FlagEmbedding's record for a known model name."""

    model_class: type
    trust_remote_code: bool = False


def _class_mapping() -> OrderedDict[Any, type]:
    from .registry import RerankerKind, reranker_class

    return OrderedDict((kind, reranker_class(kind.value)) for kind in RerankerKind)


def _auto_mapping() -> OrderedDict[str, RerankerConfig]:
    from .registry import KNOWN_MODELS, reranker_class

    return OrderedDict(
        (name.split("/")[-1], RerankerConfig(reranker_class(kind))) for name, kind in KNOWN_MODELS.items()
    )


def __getattr__(name: str) -> Any:
    """The mappings import every kind, so they are built on first use."""
    builders = {"RERANKER_CLASS_MAPPING": _class_mapping, "AUTO_RERANKER_MAPPING": _auto_mapping}
    if name not in builders:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = builders[name]()
    globals()[name] = value
    return value
