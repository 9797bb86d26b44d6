"""Cross-encoders (``encoder-only-base``): one relevance logit from a sequence-classification head."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..batching import Batch, Features
from ..compat import dtype_kwargs
from ..errors import ModelLoadError
from ..loading import load_pretrained, read_json, read_safetensors
from ..options import Options, passage_limit, query_limit
from ..ragged import Ragged
from ..registry import RerankerKind, register_kind
from ..reranker import Reranker
from ..tokenization import PairTemplate, TextTokenizer, truncate_second
from .base import InputSize, Kind, ModelSource, Plan, ScoreModule

__all__ = ["EncoderKind", "EncoderReranker"]


@dataclass(frozen=True)
class PairLayout:
    """Where a cross-encoder's special tokens go, and whether it reads token type ids."""

    tokenizer: TextTokenizer
    template: PairTemplate
    token_types: bool


class EncoderKind(Kind):
    """``[CLS] q [SEP] p [SEP]`` (or ``<s> q </s></s> p </s>``) through a one-label classification head."""

    name = RerankerKind.ENCODER_ONLY_BASE.value
    backends = ("torch", "onnx", "openvino")

    def matches(self, config: Mapping[str, Any]) -> bool:
        return any(name.endswith("ForSequenceClassification") for name in config.get("architectures") or [])

    def load(self, source: ModelSource) -> torch.nn.Module:
        if source.scoring_only:
            lean = _lean_classifier(source)
            if lean is not None:
                return lean
        from transformers import AutoModelForSequenceClassification

        model: Any = load_pretrained(
            AutoModelForSequenceClassification,
            source.path,
            kind=self.name,
            cache_dir=source.cache_dir,
            trust_remote_code=source.trust_remote_code,
            **dtype_kwargs(source.dtype),
        )
        labels = model.config.num_labels
        if labels != 1:
            raise ModelLoadError(
                f"{source.path!r} has a {labels}-label classification head; "
                "a cross-encoder reranker has exactly one relevance label."
            )
        return model

    def prepare(self, tokenizer: TextTokenizer, model: torch.nn.Module) -> PairLayout:
        takes_types = "token_type_ids" in inspect.signature(model.forward).parameters
        return PairLayout(tokenizer, tokenizer.pair_template(), takes_types)

    def input_size(self, tokenizer: TextTokenizer, options: Options) -> InputSize:
        """``max_length`` counts the special tokens, as ``encode`` cuts the passage (FlagEmbedding's rule)."""
        specials = tokenizer.pair_template().n_special
        return InputSize(
            first=query_limit(options) + specials,
            second=passage_limit(options),
            budget=int(options.max_length),
            note=f"its {specials} special tokens included",
        )

    def encode(
        self, prepared: PairLayout, queries: list[str], passages: list[str], options: Options
    ) -> Features:
        tokenizer, template, n = prepared.tokenizer, prepared.template, len(queries)
        query_ids = tokenizer.encode(queries, query_limit(options))
        passage_ids = tokenizer.encode(passages, passage_limit(options))
        passage_ids = truncate_second(
            query_ids.lengths + template.n_special, passage_ids, options.max_length, tokenizer.truncation_side
        )
        input_ids = Ragged.concat(
            [
                Ragged.constant(template.prefix, n),
                query_ids,
                Ragged.constant(template.middle, n),
                passage_ids,
                Ragged.constant(template.suffix, n),
            ]
        )
        if not prepared.token_types:
            return Features(input_ids)
        token_type_ids = Ragged.concat(
            [
                Ragged.constant(template.prefix_types, n),
                Ragged.filled(query_ids.lengths, template.first_type),
                Ragged.constant(template.middle_types, n),
                Ragged.filled(passage_ids.lengths, template.second_type),
                Ragged.constant(template.suffix_types, n),
            ]
        )
        return Features(input_ids, token_type_ids)

    def score_batch(self, model: torch.nn.Module, batch: Batch, plan: Plan) -> torch.Tensor:
        return model(**batch.model_inputs()).logits.view(1, -1)  # (1, B)

    def torch_module(self, model: torch.nn.Module, prepared: Any) -> torch.nn.Module:
        from ..models.bert_classifier import fast_bert_classifier

        return fast_bert_classifier(model) or model

    def export_module(self, model: torch.nn.Module, prepared: PairLayout) -> ScoreModule:
        return _Logit(model, prepared.token_types)


def _lean_classifier(source: ModelSource) -> torch.nn.Module | None:
    """The BERT-family classifier built from the checkpoint without transformers' modelling code (whose import
    is most of a command's cold start), or None where transformers loads it."""
    from ..models.bert_classifier import read_bert_classifier

    config = read_json(source.path, "config.json", source.cache_dir)
    model = read_bert_classifier(
        config, lambda: read_safetensors(source.path, source.dtype, source.cache_dir)
    )
    return model.eval() if model is not None else None


class _Logit(ScoreModule):
    """The classifier's one logit per row."""

    def __init__(self, model: torch.nn.Module, token_types: bool) -> None:
        super().__init__(
            model, ("input_ids", "attention_mask") + (("token_type_ids",) if token_types else ())
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.model(**inputs).logits[:, 0]  # (B,)


class EncoderReranker(Reranker):
    """Cross-encoder reranker (bge-reranker-base/large/v2-m3, jina, gte, bce); FlagEmbedding's ``FlagReranker``.

    The query is cut to ``query_max_length`` tokens, then the passage so that the whole pair fits
    ``max_length``. ``backend`` picks the runtime once, at load: ``"torch"`` (BERT-family models run the lean
    forward of :mod:`autorerank.models.bert_classifier`), ``"openvino"`` or ``"onnx"`` (CPU, float32 weights in;
    ``quantize="int8"`` for int8).
    """

    positional = (
        "use_fp16", "query_instruction_for_rerank", "query_instruction_format", "passage_instruction_for_rerank",
        "passage_instruction_format", "trust_remote_code", "cache_dir", "devices", "batch_size", "query_max_length",
        "max_length", "normalize",
    )  # fmt: skip


register_kind(EncoderKind(), EncoderReranker)
