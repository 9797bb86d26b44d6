"""Cross-encoders (``encoder-only-base``): one relevance logit from a sequence-classification head."""

from __future__ import annotations

import inspect

import torch
from transformers import AutoModelForSequenceClassification

from ..batching import Batch, Features
from ..errors import ModelLoadError
from ..loading import dtype_kwargs, load_pretrained
from ..options import ScoringOptions
from ..ragged import Ragged
from ..registry import RerankerKind, register_kind
from ..reranker import Reranker
from ..tokenization import truncate_second

__all__ = ["EncoderReranker"]


@register_kind(RerankerKind.ENCODER_ONLY_BASE)
class EncoderReranker(Reranker):
    """Cross-encoder reranker (bge-reranker-base/large/v2-m3, jina, gte, bce); FlagEmbedding's ``FlagReranker``.

    Pairs are laid out with the tokenizer's own special tokens (``[CLS] q [SEP] p [SEP]`` or
    ``<s> q </s></s> p </s>``): the query is cut to ``query_max_length`` tokens, then the passage
    is cut so the whole pair fits ``max_length``.
    """

    padding_side = "right"

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
            query_ids.lengths + template.n_special, passage_ids, options.max_length, self.tokenizer.truncation_side
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
