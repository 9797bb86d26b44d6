"""autorerank: fast, exact reranker inference with FlagEmbedding-compatible scores.

>>> from autorerank import AutoReranker
>>> reranker = AutoReranker.from_finetuned("BAAI/bge-reranker-v2-m3")
>>> reranker.compute_score([("what is a panda?", "The giant panda is a bear.")])

Names are imported on first use, so ``import autorerank`` (and the CLI's ``--help``) does not
pay for torch and transformers until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute). FlagEmbedding's names are aliases, so switching is a one-line import change.
_EXPORTS: dict[str, tuple[str, str]] = {
    "AutoReranker": ("auto", "AutoReranker"),
    "AbsReranker": ("reranker", "Reranker"),
    "RerankerModelClass": ("registry", "RerankerKind"),
    "RERANKER_CLASS_MAPPING": ("flag_api", "RERANKER_CLASS_MAPPING"),
    "AUTO_RERANKER_MAPPING": ("flag_api", "AUTO_RERANKER_MAPPING"),
    "Reranker": ("reranker", "Reranker"),
    "RerankerKind": ("registry", "RerankerKind"),
    "EncoderReranker": ("kinds.encoder", "EncoderReranker"),
    "LLMReranker": ("kinds.llm", "LLMReranker"),
    "LayerWiseLLMReranker": ("kinds.layerwise", "LayerWiseLLMReranker"),
    "LightweightLLMReranker": ("kinds.lightweight", "LightweightLLMReranker"),
    "RerankResult": ("results", "RerankResult"),
    "ModelInfo": ("results", "ModelInfo"),
    "FlagAutoReranker": ("auto", "AutoReranker"),
    "FlagReranker": ("kinds.encoder", "EncoderReranker"),
    "FlagLLMReranker": ("kinds.llm", "LLMReranker"),
    "LayerWiseFlagLLMReranker": ("kinds.layerwise", "LayerWiseLLMReranker"),
    "LightWeightFlagLLMReranker": ("kinds.lightweight", "LightweightLLMReranker"),
    "AutoRerankError": ("errors", "AutoRerankError"),
    "InvalidInputError": ("errors", "InvalidInputError"),
    "InvalidPairTypeError": ("errors", "InvalidPairTypeError"),
    "InputFileError": ("errors", "InputFileError"),
    "InvalidOptionError": ("errors", "InvalidOptionError"),
    "UnknownOptionError": ("errors", "UnknownOptionError"),
    "UnknownModelKindError": ("errors", "UnknownModelKindError"),
    "ModelLoadError": ("errors", "ModelLoadError"),
    "MissingDependencyError": ("errors", "MissingDependencyError"),
    "WorkerError": ("errors", "WorkerError"),
}

__all__ = [
    "AUTO_RERANKER_MAPPING",
    "RERANKER_CLASS_MAPPING",
    "AbsReranker",
    "AutoRerankError",
    "AutoReranker",
    "EncoderReranker",
    "FlagAutoReranker",
    "FlagLLMReranker",
    "FlagReranker",
    "InputFileError",
    "InvalidInputError",
    "InvalidOptionError",
    "InvalidPairTypeError",
    "LLMReranker",
    "LayerWiseFlagLLMReranker",
    "LayerWiseLLMReranker",
    "LightWeightFlagLLMReranker",
    "LightweightLLMReranker",
    "MissingDependencyError",
    "ModelInfo",
    "ModelLoadError",
    "RerankResult",
    "Reranker",
    "RerankerKind",
    "RerankerModelClass",
    "UnknownModelKindError",
    "UnknownOptionError",
    "WorkerError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'autorerank' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from .auto import AutoReranker
    from .auto import AutoReranker as FlagAutoReranker
    from .errors import (
        AutoRerankError,
        InputFileError,
        InvalidInputError,
        InvalidOptionError,
        InvalidPairTypeError,
        MissingDependencyError,
        ModelLoadError,
        UnknownModelKindError,
        UnknownOptionError,
        WorkerError,
    )
    from .flag_api import AUTO_RERANKER_MAPPING, RERANKER_CLASS_MAPPING
    from .kinds.encoder import EncoderReranker
    from .kinds.encoder import EncoderReranker as FlagReranker
    from .kinds.layerwise import LayerWiseLLMReranker
    from .kinds.layerwise import LayerWiseLLMReranker as LayerWiseFlagLLMReranker
    from .kinds.lightweight import LightweightLLMReranker
    from .kinds.lightweight import LightweightLLMReranker as LightWeightFlagLLMReranker
    from .kinds.llm import LLMReranker
    from .kinds.llm import LLMReranker as FlagLLMReranker
    from .registry import RerankerKind
    from .registry import RerankerKind as RerankerModelClass
    from .reranker import Reranker
    from .reranker import Reranker as AbsReranker
    from .results import ModelInfo, RerankResult
