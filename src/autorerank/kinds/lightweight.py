"""Lightweight LLM rerankers (``decoder-only-lightweight``): cost-wise Gemma2 with early exit and compression.

The input layout is the LLM one (:mod:`autorerank.kinds.prompts`) plus where each passage sits, which token
compression needs; the model is the native one of :mod:`autorerank.models.gemma2_lightweight`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ..batching import Batch, Features
from ..errors import InvalidOptionError
from ..options import COMPRESSION, LAYERS, PROMPT, Options
from ..registry import RerankerKind, register_kind
from ..reranker import Reranker
from .base import ModelSource, Plan
from .layerwise import check_layers
from .prompts import LLM_INSTRUCTIONS, PromptKind, PromptTokens, assemble_prompt

if TYPE_CHECKING:
    from ..models.gemma2_lightweight import LightweightGemma2Reranker

__all__ = ["LIGHTWEIGHT_PROMPT", "CompressionPlan", "LightweightKind", "LightweightLLMReranker"]

LIGHTWEIGHT_PROMPT = "Predict whether passage B contains an answer to query A."


@dataclass(frozen=True)
class CompressionPlan(Plan):
    """Where scores are read, and before which layers (empty when the ratio is 1) passages are pooled."""

    compress_layers: frozenset[int] = frozenset()
    compress_ratio: int = 1


class LightweightKind(PromptKind):
    """Gemma2 with a score head every ``layer_sep`` layers from ``start_layer``; passages can be mean-pooled in
    groups of ``compress_ratio`` tokens before ``compress_layers`` (query and prompt stay whole)."""

    name = RerankerKind.DECODER_ONLY_LIGHTWEIGHT.value
    features = frozenset({PROMPT, LAYERS, COMPRESSION})
    defaults: ClassVar[Mapping[str, Any]] = {
        **LLM_INSTRUCTIONS,
        "prompt": LIGHTWEIGHT_PROMPT,
        "compress_layers": (8,),  # FlagEmbedding's default; with its default ratio of 1 nothing is compressed
    }
    padding_side = "right"  # compression locates each passage from the start of the row
    detection_priority = 20

    def matches(self, config: Mapping[str, Any]) -> bool:
        architectures = " ".join(config.get("architectures") or [])
        return (
            config.get("model_type") == "cost_wise_gemma"
            or "CostWise" in architectures
            or {"layer_sep", "start_layer"} <= config.keys()
        )

    def load(self, source: ModelSource) -> torch.nn.Module:
        from ..models.gemma2_lightweight import load_lightweight_model

        return load_lightweight_model(source.path, dtype=source.dtype, cache_dir=source.cache_dir)

    def plan(self, config: Mapping[str, Any], options: Options) -> CompressionPlan:
        from ..models.gemma2_lightweight import CostWiseGemmaConfig, valid_cutoff_layers

        model_config = CostWiseGemmaConfig(**config)
        depth = model_config.num_hidden_layers
        layers: tuple[int, ...] = (depth,)
        if options.cutoff_layers is not None:
            rule = "start_layer + k * layer_sep"
            layers = check_layers(options.cutoff_layers, valid_cutoff_layers(model_config), rule)
        ratio = options.compress_ratio
        compress_at = self._compress_layers(options, depth)
        # Layer 0 is never compressed (the embeddings are not pooled), and layers at or past the deepest cutoff
        # never come, as in the reference.
        return CompressionPlan(
            layers=layers,
            compress_layers=frozenset(layer for layer in compress_at if 0 < layer < depth)
            if ratio > 1
            else frozenset(),
            compress_ratio=ratio,
        )

    def _compress_layers(self, options: Options, depth: int) -> tuple[int, ...]:
        """``compress_layers``, each a layer of this model (0 to depth - 1; 0: compress nothing). FlagEmbedding's
        default [8] is let through on a model of 8 layers or fewer while nothing is compressed (ratio 1)."""
        layers = tuple(options.compress_layers or ())
        bad = [layer for layer in layers if not 0 <= layer < depth]
        if not bad or (options.compress_ratio == 1 and layers == tuple(self.defaults["compress_layers"])):
            return layers
        raise InvalidOptionError(
            f"compress_layers {list(layers)} has layer(s) {bad} outside this model's layers: valid compress layers "
            f"are integers from 0 to {depth - 1} (it has {depth} layers; passage tokens are pooled before each "
            "layer given, and 0 pools none)."
        )

    def encode(
        self, prepared: PromptTokens, queries: list[str], passages: list[str], options: Options
    ) -> Features:
        """The LLM layout, plus where each passage sits: after ``query_lengths`` tokens, before ``prompt_lengths``."""
        parts = assemble_prompt(prepared, queries, passages, options)
        # The separator opens the body; a body cut shorter than it (only possible with a multi-token separator)
        # leaves an empty passage rather than a negative one.
        query_lengths = parts.head.lengths + np.minimum(parts.body.lengths, len(prepared.separator))
        prompt_lengths = np.full(len(queries), len(parts.tail), dtype=np.int64)
        return Features(
            parts.input_ids(), extras={"query_lengths": query_lengths, "prompt_lengths": prompt_lengths}
        )

    def score_batch(self, model: torch.nn.Module, batch: Batch, plan: Plan) -> torch.Tensor:
        assert isinstance(plan, CompressionPlan)
        lightweight: LightweightGemma2Reranker = model  # type: ignore[assignment]  # what load() returned
        return lightweight.layer_scores(
            batch.input_ids,
            batch.attention_mask,
            batch.extras["query_lengths"],
            batch.extras["prompt_lengths"],
            cutoff_layers=plan.layers,
            compress_layers=plan.compress_layers,
            compress_ratio=plan.compress_ratio,
        )  # (L, B)


class LightweightLLMReranker(Reranker):
    """bge-reranker-v2.5-gemma2-lightweight; FlagEmbedding's ``LightWeightFlagLLMReranker``.

    ``cutoff_layers`` must lie on the grid ``start_layer + k * layer_sep`` (anything else raises
    ``InvalidOptionError`` naming the valid layers; the reference silently dropped off-grid layers).
    ``compress_layers`` (default ``[8]``) and ``compress_ratio`` (1, 2, 4 or 8; default 1, no compression)
    mean-pool passage tokens before those layers. ``compress_layer=`` is a deprecated alias of
    ``compress_layers=``. The model always comes from autorerank's own code (``trust_remote_code`` has no effect).
    """

    positional = (
        "peft_path", "use_fp16", "use_bf16", "query_instruction_for_rerank", "query_instruction_format",
        "passage_instruction_for_rerank", "passage_instruction_format", "cache_dir", "trust_remote_code", "devices",
        "cutoff_layers", "compress_layers", "compress_ratio", "prompt", "batch_size", "query_max_length",
        "max_length", "normalize",
    )  # fmt: skip


register_kind(LightweightKind(), LightweightLLMReranker)
