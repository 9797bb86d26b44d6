"""Layer-wise LLM rerankers (``decoder-only-layerwise``): bge-reranker-v2-minicpm-layerwise.

The input layout is the LLM one (:mod:`autorerank.kinds.prompts`); the model is the native MiniCPM of
:mod:`autorerank.models.minicpm_layerwise`, read after each requested cutoff layer by that layer's own head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..batching import Batch
from ..errors import InvalidOptionError, ModelLoadError
from ..options import LAYERS, PROMPT, Options
from ..registry import RerankerKind, register_kind
from ..reranker import Reranker
from .base import ModelSource, Plan
from .llm import BASE_PROMPT
from .prompts import LLM_INSTRUCTIONS, PromptKind

if TYPE_CHECKING:
    from ..models.minicpm_layerwise import MiniCPMLayerwiseModel

__all__ = ["LayerWiseKind", "LayerWiseLLMReranker", "check_layers"]


def check_layers(requested: Sequence[int], valid: Sequence[int], rule: str) -> tuple[int, ...]:
    """``requested`` in the order given, repeats kept; any layer outside ``valid`` rejects the whole request
    (the reference silently dropped it, which changed the output's shape behind the caller's back)."""
    bad = [layer for layer in requested if layer not in valid]
    if bad:
        raise InvalidOptionError(
            f"cutoff_layers {list(requested)} has invalid cutoff layer(s) {bad}; valid cutoff layers for this "
            f"model are {list(valid)} ({rule})."
        )
    return tuple(requested)


class LayerWiseKind(PromptKind):
    """MiniCPM with one score head per layer from ``start_layer`` on; layers after the deepest cutoff never run."""

    name = RerankerKind.DECODER_ONLY_LAYERWISE.value
    features = frozenset({PROMPT, LAYERS})
    defaults: ClassVar[Mapping[str, Any]] = {**LLM_INSTRUCTIONS, "prompt": BASE_PROMPT}
    detection_priority = 10

    def matches(self, config: Mapping[str, Any]) -> bool:
        architectures = " ".join(config.get("architectures") or [])
        return "LayerWise" in architectures or (
            config.get("model_type") == "minicpm" and "start_layer" in config
        )

    def check_checkpoint(self, source: ModelSource, config: Mapping[str, Any]) -> None:
        if not self.matches(config):
            raise ModelLoadError(
                f"{source.path!r} is not a MiniCPM layerwise reranker: its config.json has model_type "
                f"{config.get('model_type')!r} and {'a' if 'start_layer' in config else 'no'} start_layer, where "
                "model_type 'minicpm' with a start_layer is expected. Pass the right model_class= or drop it."
            )

    def load(self, source: ModelSource) -> torch.nn.Module:
        from ..models.minicpm_layerwise import load_layerwise_model

        return load_layerwise_model(source.path, dtype=source.dtype, cache_dir=source.cache_dir)

    def plan(self, config: Mapping[str, Any], options: Options) -> Plan:
        from ..models.minicpm_layerwise import MiniCPMLayerwiseConfig, valid_cutoff_layers

        valid = valid_cutoff_layers(MiniCPMLayerwiseConfig(**config))
        if options.cutoff_layers is None:
            return Plan(layers=(valid[-1],))
        rule = f"integers from {valid[0]} to {valid[-1]}"
        return Plan(layers=check_layers(options.cutoff_layers, valid, rule))

    def score_batch(self, model: torch.nn.Module, batch: Batch, plan: Plan) -> torch.Tensor:
        layerwise: MiniCPMLayerwiseModel = model  # type: ignore[assignment]  # what load() returned
        return layerwise.layer_scores(batch.input_ids, batch.attention_mask, plan.layers)  # (L, B)


class LayerWiseLLMReranker(Reranker):
    """bge-reranker-v2-minicpm-layerwise; FlagEmbedding's ``LayerWiseFlagLLMReranker``.

    ``cutoff_layers``: the layers to read scores after, each scored by its own head (the reference paired heads
    with layers by position, which mixed them up for an unsorted request). ``None`` means the last layer. A
    layer outside ``start_layer .. num_hidden_layers`` raises ``InvalidOptionError`` naming the valid layers.

    Precision: autorerank stays in fp32 unless ``use_fp16``/``use_bf16`` asks otherwise (FlagEmbedding warns
    that fp16 is forced, which is wrong on the CPU). The model always comes from autorerank's own code, so
    ``trust_remote_code`` has no effect here.
    """

    positional = (
        "peft_path", "use_fp16", "use_bf16", "query_instruction_for_rerank", "query_instruction_format",
        "passage_instruction_for_rerank", "passage_instruction_format", "cache_dir", "trust_remote_code", "devices",
        "cutoff_layers", "prompt", "batch_size", "query_max_length", "max_length", "normalize",
    )  # fmt: skip


register_kind(LayerWiseKind(), LayerWiseLLMReranker)
