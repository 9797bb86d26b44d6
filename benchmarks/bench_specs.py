"""The three benchmark models, described once: the builder reads these shapes and the FLOP count uses them.

Shapes are chosen to match models people rerank with:
- `minilm`: the real all-MiniLM-L6-v2 encoder (6 layers, 384 hidden) as a one-label BERT cross-encoder, the shape
  of cross-encoder/ms-marco-MiniLM-L-6-v2;
- `xlmr-base`: XLM-RoBERTa at bge-reranker-base's dimensions (12 layers, 768 hidden, 250002-token embedding table);
- `llm`: a Gemma-architecture decoder (the architecture of bge-reranker-v2-gemma) scaled to ~270M parameters,
  with multi-query attention like Gemma-2B and a 32000-token vocabulary;
- `layerwise`: bge-reranker-v2-minicpm-layerwise's architecture (MiniCPM with one score head per layer from
  `start_layer`, muP-style embedding and residual scaling) scaled to ~226M parameters;
- `lightweight`: bge-reranker-v2.5-gemma2-lightweight's architecture (cost-wise Gemma2: grouped-query attention,
  logit soft-capping, one score head every `layer_sep` layers from `start_layer`) scaled to ~284M parameters.
The three decoders share the `llm` model's 32000-token BPE tokenizer (the real models' vocabularies, 122k and 256k,
would only enlarge the embedding tables, which cost lookups, not matmuls).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Bumped whenever a builder changes what it writes, so cached models are rebuilt.
BUILD_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """Shape and identity of one benchmark model."""

    name: str
    kind: str  # "encoder" (one-label sequence classifier) or "llm" (causal LM scored on the "Yes" logit)
    family: str  # "bert", "xlm-roberta" or "gemma"
    model_class: str  # FlagEmbedding / autorerank reranker kind used to score it
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    gated_mlp: bool
    seed: int
    start_layer: int = 0  # layer kinds: the first layer with a score head
    layer_sep: int = 1  # layer kinds: layers between score heads

    def fingerprint(self) -> str:
        """A short hash of everything that determines the built weights, used to invalidate the cache."""
        blob = json.dumps({"spec": asdict(self), "build_version": BUILD_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


SPECS: dict[str, ModelSpec] = {
    "minilm": ModelSpec(
        name="minilm",
        kind="encoder",
        family="bert",
        model_class="encoder-only-base",
        layers=6,
        hidden=384,
        intermediate=1536,
        heads=12,
        kv_heads=12,
        head_dim=32,
        vocab_size=30522,
        gated_mlp=False,
        seed=1234,
    ),
    "xlmr-base": ModelSpec(
        name="xlmr-base",
        kind="encoder",
        family="xlm-roberta",
        model_class="encoder-only-base",
        layers=12,
        hidden=768,
        intermediate=3072,
        heads=12,
        kv_heads=12,
        head_dim=64,
        vocab_size=250002,
        gated_mlp=False,
        seed=1234,
    ),
    "llm": ModelSpec(
        name="llm",
        kind="llm",
        family="gemma",
        model_class="decoder-only-base",
        layers=16,
        hidden=1024,
        intermediate=4096,
        heads=8,
        kv_heads=1,
        head_dim=128,
        vocab_size=32000,
        gated_mlp=True,
        seed=1234,
    ),
    "layerwise": ModelSpec(
        name="layerwise",
        kind="llm",
        family="minicpm",
        model_class="decoder-only-layerwise",
        layers=16,
        hidden=1024,
        intermediate=2560,
        heads=16,
        kv_heads=16,
        head_dim=64,
        vocab_size=32000,
        gated_mlp=True,
        seed=1234,
        start_layer=8,
    ),
    "lightweight": ModelSpec(
        name="lightweight",
        kind="llm",
        family="gemma2",
        model_class="decoder-only-lightweight",
        layers=16,
        hidden=1024,
        intermediate=4096,
        heads=8,
        kv_heads=4,
        head_dim=128,
        vocab_size=32000,
        gated_mlp=True,
        seed=1234,
        start_layer=8,
        layer_sep=4,
    ),
}

MAX_LENGTH = 512
# FlagEmbedding's default query budget: three quarters of max_length.
QUERY_MAX_LENGTH = MAX_LENGTH * 3 // 4
# FlagLLMReranker's defaults for the decoder-only-base kind.
LLM_QUERY_INSTRUCTION = "A: "
LLM_PASSAGE_INSTRUCTION = "B: "
LLM_SEPARATOR = "\n"
LLM_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)
