"""Lightweight LLM rerankers (``decoder-only-lightweight``): cost-wise Gemma2 with early exit and compression.

Pairs are laid out exactly as for :class:`~autorerank.kinds.llm.LLMReranker` (that class tokenizes); this kind
only adds each pair's query and prompt spans, which token compression needs, and scores with the native model of
:mod:`autorerank.models.gemma2_lightweight`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from ..batching import Batch, Features
from ..models.gemma2_lightweight import ScoringPlan, load_lightweight_model, plan_scoring
from ..options import ScoringOptions
from ..registry import RerankerKind, register_kind
from .llm import LLMReranker

__all__ = ["LightweightLLMReranker"]

LIGHTWEIGHT_PROMPT = "Predict whether passage B contains an answer to query A."

# FlagEmbedding's defaults: compress before layer 8, but a ratio of 1 means no compression at all.
DEFAULT_COMPRESS_LAYERS = (8,)
DEFAULT_COMPRESS_RATIO = 1


@register_kind(RerankerKind.DECODER_ONLY_LIGHTWEIGHT)
class LightweightLLMReranker(LLMReranker):
    """bge-reranker-v2.5-gemma2-lightweight; FlagEmbedding's ``LightWeightFlagLLMReranker``.

    Options (constructor defaults, overridable per ``compute_score`` call):

    * ``cutoff_layers``: layers to read scores after, on the grid ``start_layer + k * layer_sep`` (anything else
      raises ``InvalidOptionError``, a ``ValueError``, naming the valid layers; the reference silently dropped
      off-grid layers when some were valid). Default: the last layer. One layer gives a flat list; several give one
      list per layer, in the order given. Layers after the deepest cutoff are never run.
    * ``compress_layers`` (default ``[8]``) and ``compress_ratio`` (1, 2, 4 or 8; default 1, no compression):
      mean-pool passage tokens in groups of ``compress_ratio`` before those layers. ``compress_layer=`` is a
      deprecated alias of ``compress_layers=`` (same scores, plus a ``DeprecationWarning``).
    * ``prompt``: defaults to this kind's own prompt, ``"Predict whether passage B contains an answer to query A."``.

    Precision: FlagEmbedding warns that fp16 is forced when neither ``use_fp16`` nor ``use_bf16`` is set, yet
    its code still loads fp32 weights; autorerank stays in fp32 unless ``use_fp16``/``use_bf16`` asks otherwise,
    and warns about nothing. The model is always built from autorerank's own code, so ``trust_remote_code`` has
    no effect here.
    """

    padding_side = "right"  # compression locates each passage from the start of the row
    kind_options = frozenset({"prompt", "cutoff_layers", "compress_layers", "compress_ratio"})
    deprecated_aliases: ClassVar[Mapping[str, str]] = {"compress_layer": "compress_layers"}
    default_prompt: ClassVar[str] = LIGHTWEIGHT_PROMPT

    def __init__(
        self,
        model_name_or_path: str,
        *,
        cutoff_layers: int | list[int] | None = None,
        compress_layers: int | list[int] | None = None,
        compress_ratio: int = DEFAULT_COMPRESS_RATIO,
        **options: Any,
    ) -> None:
        super().__init__(
            model_name_or_path,
            cutoff_layers=cutoff_layers,
            compress_layers=compress_layers,
            compress_ratio=compress_ratio,
            **options,
        )

    def _load_model(self, *, cache_dir: str | None, trust_remote_code: bool) -> torch.nn.Module:
        self._prepare_prompt_tokens()
        return load_lightweight_model(self.model_name_or_path, dtype=self.dtype, cache_dir=cache_dir)

    def _plan(self, options: ScoringOptions) -> ScoringPlan:
        return plan_scoring(
            self.model.config,
            options.cutoff_layers,
            options.compress_layers if options.compress_layers is not None else DEFAULT_COMPRESS_LAYERS,
            options.compress_ratio if options.compress_ratio is not None else DEFAULT_COMPRESS_RATIO,
        )

    def _validate_options(self, options: ScoringOptions) -> None:
        self._plan(options)

    def _n_outputs(self, options: ScoringOptions) -> int:
        return len(self._plan(options).cutoff_layers)

    def _encode(self, queries: list[str], passages: list[str], options: ScoringOptions) -> Features:
        """The LLM layout, plus where each passage sits: after ``query_lengths`` tokens, before ``prompt_lengths``."""
        parts = self._prompt_parts(queries, passages, options)
        # The separator opens the body; a body cut shorter than it (only possible with a multi-token separator)
        # leaves an empty passage rather than a negative one.
        query_lengths = parts.head.lengths + np.minimum(parts.body.lengths, len(self._separator))
        prompt_lengths = np.full(len(queries), len(parts.tail), dtype=np.int64)
        return Features(
            parts.input_ids(), extras={"query_lengths": query_lengths, "prompt_lengths": prompt_lengths}
        )

    def _score_batch(self, batch: Batch, options: ScoringOptions) -> torch.Tensor:
        plan = self._plan(options)
        return self.model.layer_scores(
            batch.input_ids,
            batch.attention_mask,
            batch.extras["query_lengths"],
            batch.extras["prompt_lengths"],
            cutoff_layers=plan.cutoff_layers,
            compress_layers=plan.compress_layers,
            compress_ratio=plan.compress_ratio,
        )  # (n_cutoffs, B)
