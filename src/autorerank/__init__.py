"""autorerank: fast, exact reranker inference with FlagEmbedding-compatible scores.

>>> from autorerank import AutoReranker
>>> reranker = AutoReranker.from_finetuned("BAAI/bge-reranker-v2-m3")
>>> reranker.compute_score([("what is a panda?", "The giant panda is a bear.")])
"""

from __future__ import annotations

from .auto import AutoReranker
from .errors import (
    AutoRerankError,
    InvalidInputError,
    InvalidOptionError,
    InvalidPairTypeError,
    MissingDependencyError,
    ModelLoadError,
    UnknownModelKindError,
    WorkerError,
)
from .kinds.encoder import EncoderReranker
from .kinds.layerwise import LayerWiseLLMReranker
from .kinds.lightweight import LightweightLLMReranker
from .kinds.llm import LLMReranker
from .registry import RerankerKind
from .reranker import Reranker
from .results import ModelInfo, RerankResult

# FlagEmbedding's names, so that switching is a one-line import change.
FlagAutoReranker = AutoReranker
FlagReranker = EncoderReranker
FlagLLMReranker = LLMReranker
LayerWiseFlagLLMReranker = LayerWiseLLMReranker
LightWeightFlagLLMReranker = LightweightLLMReranker

__version__ = "0.1.0"

__all__ = [
    "AutoReranker",
    "Reranker",
    "RerankerKind",
    "EncoderReranker",
    "LLMReranker",
    "LayerWiseLLMReranker",
    "LightweightLLMReranker",
    "RerankResult",
    "ModelInfo",
    "FlagAutoReranker",
    "FlagReranker",
    "FlagLLMReranker",
    "LayerWiseFlagLLMReranker",
    "LightWeightFlagLLMReranker",
    "AutoRerankError",
    "InvalidInputError",
    "InvalidPairTypeError",
    "InvalidOptionError",
    "UnknownModelKindError",
    "ModelLoadError",
    "MissingDependencyError",
    "WorkerError",
    "__version__",
]
