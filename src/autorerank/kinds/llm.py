"""LLM rerankers (``decoder-only-base``): the logit of "Yes" after a relevance prompt.

The layer-wise and lightweight kinds extend this class: they share its prompt assembly
and change only the model and how one batch is scored.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from transformers import AutoModelForCausalLM

from ..batching import Batch, Features
from ..loading import dtype_kwargs, load_pretrained
from ..options import ScoringOptions
from ..ragged import Ragged
from ..registry import RerankerKind, register_kind
from ..reranker import Reranker
from ..tokenization import truncate_second

__all__ = ["LLMReranker", "PromptParts"]

BASE_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query "
    "by providing a prediction of either 'Yes' or 'No'."
)


class PromptParts:
    """A tokenized LLM reranking input, in three parts per pair.

    ``head``: [bos] + query; ``body``: separator + passage (truncated to fit); ``tail``: separator + prompt.
    """

    def __init__(self, head: Ragged, body: Ragged, tail: list[int]) -> None:
        self.head, self.body, self.tail = head, body, tail

    def input_ids(self) -> Ragged:
        return Ragged.concat([self.head, self.body, Ragged.constant(self.tail, len(self.head))])


@register_kind(RerankerKind.DECODER_ONLY_BASE)
class LLMReranker(Reranker):
    """LLM reranker (bge-reranker-v2-gemma and other causal LMs); FlagEmbedding's ``FlagLLMReranker``.

    Each pair becomes ``[bos] A: query \\n B: passage \\n prompt`` and the score is the "Yes" logit at
    the last position. Only that one logit is computed: the language-model head runs on the last
    hidden state and only for the "Yes" row, not over the whole vocabulary at every position.
    ``use_dataloader`` and ``num_workers`` are accepted for compatibility and have no effect:
    tokenization already runs in batched Rust calls overlapped with the model.
    """

    padding_side = "left"
    kind_options = frozenset({"prompt"})
    ignored_call_options = frozenset({"use_dataloader", "num_workers"})
    default_prompt: ClassVar[str] = BASE_PROMPT

    def __init__(
        self,
        model_name_or_path: str,
        *,
        prompt: str | None = None,
        query_instruction_for_rerank: str | None = "A: ",
        passage_instruction_for_rerank: str | None = "B: ",
        **options: Any,
    ) -> None:
        super().__init__(
            model_name_or_path,
            query_instruction_for_rerank=query_instruction_for_rerank,
            passage_instruction_for_rerank=passage_instruction_for_rerank,
            prompt=prompt,
            **options,
        )

    def _load_model(self, *, cache_dir: str | None, trust_remote_code: bool) -> torch.nn.Module:
        self._prepare_prompt_tokens()
        return load_pretrained(
            AutoModelForCausalLM,
            self.model_name_or_path,
            kind=self.kind.value,
            cache_dir=cache_dir,
            trust_remote_code=trust_remote_code,
            **dtype_kwargs(self.dtype),
        )

    def _prepare_prompt_tokens(self) -> None:
        tokenizer = self.tokenizer
        self._yes_id = tokenizer.ids("Yes")[0]
        self._separator = tokenizer.ids("\n")
        use_bos = tokenizer.bos_id is not None and tokenizer.bos_id != tokenizer.pad_id
        self._bos = [tokenizer.bos_id] if use_bos else []

    def _prompt_parts(self, queries: list[str], passages: list[str], options: ScoringOptions) -> PromptParts:
        """Tokenize and lay out pairs as FlagEmbedding's LLM rerankers do."""
        n = len(queries)
        prompt = self.tokenizer.ids(options.prompt if options.prompt is not None else self.default_prompt)
        head = Ragged.concat(
            [Ragged.constant(self._bos, n), self.tokenizer.encode(queries, options.query_limit)]
        )
        body = Ragged.concat(
            [Ragged.constant(self._separator, n), self.tokenizer.encode(passages, options.passage_limit)]
        )
        budget = options.max_length + len(self._separator) + len(prompt)
        body = truncate_second(head.lengths, body, budget, self.tokenizer.truncation_side)
        return PromptParts(head, body, self._separator + prompt)

    def _encode(self, queries: list[str], passages: list[str], options: ScoringOptions) -> Features:
        return Features(self._prompt_parts(queries, passages, options).input_ids())

    def _score_batch(self, batch: Batch, options: ScoringOptions) -> torch.Tensor:
        decoder = self.model.get_decoder()
        hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        last = hidden.last_hidden_state[:, -1]  # (B, H): inputs are left-padded
        return self._yes_logit(last)[None]  # (1, B)

    def _yes_logit(self, hidden: torch.Tensor) -> torch.Tensor:
        """The "Yes" row of the language-model head, with the model's final logit soft-capping if any."""
        head = self.model.get_output_embeddings()
        logit = hidden @ head.weight[self._yes_id]  # (B,)
        if getattr(head, "bias", None) is not None:
            logit = logit + head.bias[self._yes_id]
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logit = torch.tanh(logit / cap) * cap
        return logit
