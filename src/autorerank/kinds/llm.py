"""LLM rerankers (``decoder-only-base``): the logit of "Yes" after a relevance prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from ..batching import Batch
from ..compat import dtype_kwargs
from ..loading import load_pretrained
from ..registry import RerankerKind, register_kind
from ..reranker import Reranker
from .base import CausalScoreModule, ModelSource, Plan, ScoreModule
from .prompts import LLM_INSTRUCTIONS, PromptKind, PromptTokens

__all__ = ["BASE_PROMPT", "LLMKind", "LLMReranker", "answer_logit"]

BASE_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query "
    "by providing a prediction of either 'Yes' or 'No'."
)


class LLMKind(PromptKind):
    """``[bos] A: query \\n B: passage \\n prompt`` through a causal LM; the score is the "Yes" logit at the end.

    Only that one logit is computed: the language-model head runs on the last hidden state and only for the
    "Yes" row, not over the whole vocabulary at every position.
    """

    name = RerankerKind.DECODER_ONLY_BASE.value
    defaults: ClassVar[Mapping[str, Any]] = {**LLM_INSTRUCTIONS, "prompt": BASE_PROMPT}
    backends = ("torch", "openvino")

    def matches(self, config: Mapping[str, Any]) -> bool:
        return any(name.endswith("ForCausalLM") for name in config.get("architectures") or [])

    def load(self, source: ModelSource) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        return load_pretrained(
            AutoModelForCausalLM,
            source.path,
            kind=self.name,
            cache_dir=source.cache_dir,
            trust_remote_code=source.trust_remote_code,
            **dtype_kwargs(source.dtype),
        )

    def score_batch(self, model: torch.nn.Module, batch: Batch, plan: Plan) -> torch.Tensor:
        return model(batch.input_ids, batch.attention_mask)[None]  # (1, B)

    def torch_module(self, model: torch.nn.Module, prepared: PromptTokens) -> torch.nn.Module:
        return AnswerLogit(model, prepared.answer_id, shared_starts=True)

    def export_module(self, model: torch.nn.Module, prepared: PromptTokens) -> ScoreModule:
        return AnswerLogit(model, prepared.answer_id, shared_starts=False)


class AnswerLogit(CausalScoreModule):
    """A causal LM cut down to one logit: the answer token's at the last position of a left-padded batch."""

    def __init__(self, model: torch.nn.Module, answer_id: int, *, shared_starts: bool) -> None:
        super().__init__(model, shared_starts=shared_starts)
        self.answer_id = answer_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return answer_logit(self.model, self.last_hidden(input_ids, attention_mask), self.answer_id)  # (B,)


def answer_logit(model: Any, hidden: torch.Tensor, token_id: int) -> torch.Tensor:
    """One row of the language-model head on ``hidden`` (B, H) -> (B,), with the model's final soft-capping."""
    head = model.get_output_embeddings()
    logit = hidden @ head.weight[token_id]  # (B,)
    if getattr(head, "bias", None) is not None:
        logit = logit + head.bias[token_id]
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logit = torch.tanh(logit / cap) * cap
    return logit


class LLMReranker(Reranker):
    """LLM reranker (bge-reranker-v2-gemma and other causal LMs); FlagEmbedding's ``FlagLLMReranker``.

    ``use_dataloader`` and ``num_workers`` are accepted for compatibility and have no effect: tokenization
    already runs in batched Rust calls overlapped with the model.
    """

    positional = (
        "peft_path", "use_fp16", "use_bf16", "query_instruction_for_rerank", "query_instruction_format",
        "passage_instruction_for_rerank", "passage_instruction_format", "cache_dir", "trust_remote_code", "devices",
        "prompt", "batch_size", "query_max_length", "max_length", "normalize",
    )  # fmt: skip


register_kind(LLMKind(), LLMReranker)
