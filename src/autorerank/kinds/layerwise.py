"""Layer-wise LLM rerankers (``decoder-only-layerwise``): bge-reranker-v2-minicpm-layerwise.

Pairs are laid out exactly as for :class:`~autorerank.kinds.llm.LLMReranker` (that class tokenizes); this kind
only loads the native MiniCPM model of :mod:`autorerank.models.minicpm_layerwise` and reads one score per
requested cutoff layer from it.
"""

from __future__ import annotations

from typing import Any

import torch

from ..batching import Batch
from ..models.minicpm_layerwise import check_cutoff_layers, load_layerwise_model
from ..options import ScoringOptions
from ..registry import RerankerKind, register_kind
from .llm import LLMReranker

__all__ = ["LayerWiseLLMReranker"]


@register_kind(RerankerKind.DECODER_ONLY_LAYERWISE)
class LayerWiseLLMReranker(LLMReranker):
    """bge-reranker-v2-minicpm-layerwise; FlagEmbedding's ``LayerWiseFlagLLMReranker``.

    Options (constructor defaults, overridable per ``compute_score`` call):

    * ``cutoff_layers``: the layers to read scores after, each scored by its own head. ``None`` (default) means
      the last layer; an int or a one-element list gives a flat list of scores; several layers give one list per
      layer, in the order given (the reference paired heads with layers by position, which mixed them up for an
      unsorted request). A layer outside ``start_layer .. num_hidden_layers`` raises ``InvalidOptionError`` (a
      ``ValueError``) naming the valid layers, where the reference silently dropped it and changed the output's
      shape. Layers after the deepest cutoff are never run.
    * ``prompt``: defaults to the LLM reranker's prompt; ``query_instruction_for_rerank`` (``"A: "``) and
      ``passage_instruction_for_rerank`` (``"B: "``) as in the reference.

    Precision: FlagEmbedding warns that fp16 is forced when neither ``use_fp16`` nor ``use_bf16`` is set, which is
    wrong on the CPU (fp16 is refused there) and surprising elsewhere; autorerank stays in fp32 unless
    ``use_fp16``/``use_bf16`` asks otherwise, and warns about nothing. The model always comes from autorerank's own
    code, so ``trust_remote_code`` has no effect here.
    """

    kind_options = frozenset({"prompt", "cutoff_layers"})

    def __init__(
        self, model_name_or_path: str, *, cutoff_layers: int | list[int] | None = None, **options: Any
    ) -> None:
        super().__init__(model_name_or_path, cutoff_layers=cutoff_layers, **options)

    def _load_model(self, *, cache_dir: str | None, trust_remote_code: bool) -> torch.nn.Module:
        self._prepare_prompt_tokens()
        return load_layerwise_model(self.model_name_or_path, dtype=self.dtype, cache_dir=cache_dir)

    def _cutoff_layers(self, options: ScoringOptions) -> tuple[int, ...]:
        if options.cutoff_layers is None:
            return (self.model.config.num_hidden_layers,)
        return options.cutoff_layers

    def _validate_options(self, options: ScoringOptions) -> None:
        check_cutoff_layers(self._cutoff_layers(options), self.model.valid_cutoff_layers)

    def _n_outputs(self, options: ScoringOptions) -> int:
        return len(self._cutoff_layers(options))

    def _score_batch(self, batch: Batch, options: ScoringOptions) -> torch.Tensor:
        return self.model.layer_scores(
            batch.input_ids, batch.attention_mask, self._cutoff_layers(options)
        )  # (n_cutoffs, B)
