"""The LLM reranker input layout, shared by every decoder kind as plain functions.

FlagEmbedding's LLM rerankers feed ``[bos] A: query \\n B: passage \\n prompt`` (instructions applied before)
and read the answer at the last position. The query is cut to ``query_max_length`` tokens and the passage so
that the pair fits ``max_length`` (separator and prompt not counted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..batching import Features
from ..options import PROMPT, Options, passage_limit, query_limit
from ..ragged import Ragged
from ..tokenization import TextTokenizer, truncate_second
from .base import InputSize, Kind

__all__ = [
    "LLM_INSTRUCTIONS",
    "PromptKind",
    "PromptParts",
    "PromptTokens",
    "assemble_prompt",
    "prompt_input_size",
    "prompt_tokens",
]

# FlagEmbedding's LLM rerankers put these before query and passage (None removes them).
LLM_INSTRUCTIONS: Mapping[str, Any] = {
    "query_instruction_for_rerank": "A: ",
    "passage_instruction_for_rerank": "B: ",
}


@dataclass(frozen=True)
class PromptTokens:
    """The constant tokens of the layout, and the id of the answer token."""

    tokenizer: TextTokenizer
    bos: tuple[int, ...]  # empty when bos is the pad token (as in the reference)
    separator: tuple[int, ...]
    answer_id: int  # "Yes"


@dataclass(frozen=True)
class PromptParts:
    """One tokenized input per pair, in three parts: ``head`` = [bos] + query; ``body`` = separator + passage
    (cut to fit); ``tail`` = separator + prompt (the same for every pair)."""

    head: Ragged
    body: Ragged
    tail: tuple[int, ...]

    def input_ids(self) -> Ragged:
        return Ragged.concat([self.head, self.body, Ragged.constant(self.tail, len(self.head))])


def prompt_tokens(tokenizer: TextTokenizer, answer: str = "Yes") -> PromptTokens:
    use_bos = tokenizer.bos_id is not None and tokenizer.bos_id != tokenizer.pad_id
    return PromptTokens(
        tokenizer=tokenizer,
        bos=(tokenizer.bos_id,) if use_bos and tokenizer.bos_id is not None else (),
        separator=tuple(tokenizer.ids("\n")),
        answer_id=tokenizer.ids(answer)[0],
    )


class PromptKind(Kind):
    """The ``prepare`` and ``encode`` hooks of kinds that read the LLM prompt layout unchanged."""

    features: ClassVar[frozenset[str]] = frozenset({PROMPT})
    padding_side: ClassVar[str] = "left"  # the answer is read at the last position

    def prepare(self, tokenizer: TextTokenizer, model: torch.nn.Module) -> PromptTokens:
        return prompt_tokens(tokenizer)

    def encode(
        self, prepared: PromptTokens, queries: list[str], passages: list[str], options: Options
    ) -> Features:
        return Features(assemble_prompt(prepared, queries, passages, options).input_ids())

    def input_size(self, tokenizer: TextTokenizer, options: Options) -> InputSize:
        return prompt_input_size(prompt_tokens(tokenizer), options)


def assemble_prompt(
    tokens: PromptTokens, queries: list[str], passages: list[str], options: Options
) -> PromptParts:
    """Tokenize and lay out pairs as FlagEmbedding's LLM rerankers do."""
    tokenizer, n = tokens.tokenizer, len(queries)
    prompt = tuple(tokenizer.ids(options.prompt))
    head = Ragged.concat([Ragged.constant(tokens.bos, n), tokenizer.encode(queries, query_limit(options))])
    body = Ragged.concat(
        [Ragged.constant(tokens.separator, n), tokenizer.encode(passages, passage_limit(options))]
    )
    budget = options.max_length + len(tokens.separator) + len(prompt)
    body = truncate_second(head.lengths, body, budget, tokenizer.truncation_side)
    return PromptParts(head, body, tokens.separator + prompt)


def prompt_input_size(tokens: PromptTokens, options: Options) -> InputSize:
    """The longest input :func:`assemble_prompt` can make: the separator and the prompt count twice, once in the
    budget the passage is cut to and once in the tail after it."""
    extra = len(tokens.separator) + len(tokens.tokenizer.ids(options.prompt))
    return InputSize(
        first=len(tokens.bos) + query_limit(options),
        second=len(tokens.separator) + passage_limit(options),
        budget=int(options.max_length) + extra,
        tail=extra,
        note=f"max_length + 2 x {extra} separator and prompt tokens, as in FlagEmbedding's layout",
    )
