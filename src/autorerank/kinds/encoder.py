"""Cross-encoders (``encoder-only-base``): one relevance logit from a sequence-classification head."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from ..batching import Batch, Features
from ..errors import InvalidOptionError, ModelLoadError
from ..loading import dtype_kwargs, load_pretrained
from ..models.bert_classifier import fast_bert_classifier
from ..options import ScoringOptions
from ..ragged import Ragged
from ..registry import RerankerKind, register_kind
from ..reranker import Reranker
from ..tokenization import truncate_second

__all__ = ["BACKENDS", "EncoderReranker"]

# Runtimes a cross-encoder can run on; all but torch take float32 weights on the CPU (int8 with quantize="int8").
BACKENDS = ("torch", "onnx", "openvino")


@register_kind(RerankerKind.ENCODER_ONLY_BASE)
class EncoderReranker(Reranker):
    """Cross-encoder reranker (bge-reranker-base/large/v2-m3, jina, gte, bce); FlagEmbedding's ``FlagReranker``.

    Pairs are laid out with the tokenizer's own special tokens (``[CLS] q [SEP] p [SEP]`` or
    ``<s> q </s></s> p </s>``): the query is cut to ``query_max_length`` tokens, then the passage
    is cut so the whole pair fits ``max_length``.

    ``backend`` picks the runtime once, at load: ``"torch"`` (BERT-family models run the lean forward of
    :mod:`autorerank.models.bert_classifier`), ``"openvino"`` or ``"onnx"`` (CPU, float32 weights in).
    ``quantize="int8"`` needs one of the latter two; ``onnx_dir`` is where ``"onnx"`` caches its exports.
    """

    padding_side = "right"

    def __init__(
        self,
        model_name_or_path: str,
        *,
        backend: str = "torch",
        quantize: str | None = None,
        onnx_dir: str | None = None,
        **options: Any,
    ) -> None:
        if backend not in BACKENDS:
            raise InvalidOptionError(
                f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}."
            )
        if quantize not in (None, "int8"):
            raise InvalidOptionError(f"quantize must be None or 'int8', got {quantize!r}.")
        if quantize is not None and backend == "torch":
            raise InvalidOptionError(
                "quantize='int8' needs backend='openvino' (most accurate) or backend='onnx'."
            )
        if onnx_dir is not None and backend != "onnx":
            raise InvalidOptionError(
                "onnx_dir is where backend='onnx' keeps its exports; it needs backend='onnx'."
            )
        self.backend, self._quantize, self._onnx_dir = backend, quantize, onnx_dir
        super().__init__(model_name_or_path, **options)

    def _runtime_model(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.backend == "onnx":
            from ..backends.onnx import load_onnx_model

            return load_onnx_model(
                model,
                self.model_name_or_path,
                quantize=self._quantize,
                onnx_dir=self._onnx_dir,
                devices=self.devices,
            )
        if self.backend == "openvino":
            from ..backends.openvino import load_openvino_model

            return load_openvino_model(model, quantize=self._quantize, devices=self.devices)
        return fast_bert_classifier(model) or model

    def _load_model(self, *, cache_dir: str | None, trust_remote_code: bool) -> torch.nn.Module:
        model = load_pretrained(
            AutoModelForSequenceClassification,
            self.model_name_or_path,
            kind=self.kind.value,
            cache_dir=cache_dir,
            trust_remote_code=trust_remote_code,
            **dtype_kwargs(self.dtype),
        )
        if model.config.num_labels != 1:
            raise ModelLoadError(
                f"{self.model_name_or_path!r} has a {model.config.num_labels}-label classification head; "
                "a cross-encoder reranker has exactly one relevance label."
            )
        self._template = self.tokenizer.pair_template()
        self._takes_token_types = "token_type_ids" in inspect.signature(model.forward).parameters
        return model

    def _encode(self, queries: list[str], passages: list[str], options: ScoringOptions) -> Features:
        template, n = self._template, len(queries)
        query_ids = self.tokenizer.encode(queries, options.query_limit)
        passage_ids = self.tokenizer.encode(passages, options.passage_limit)
        passage_ids = truncate_second(
            query_ids.lengths + template.n_special,
            passage_ids,
            options.max_length,
            self.tokenizer.truncation_side,
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
        token_type_ids = None
        if self._takes_token_types:
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

    def _score_batch(self, batch: Batch, options: ScoringOptions) -> torch.Tensor:
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if batch.token_type_ids is not None:
            inputs["token_type_ids"] = batch.token_type_ids
        return self.model(**inputs).logits.view(1, -1)  # (1, B)
