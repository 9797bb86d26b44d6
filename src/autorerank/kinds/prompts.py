"""The LLM reranker input layout, shared by every decoder kind as plain functions.

FlagEmbedding's LLM rerankers feed ``[bos] A: query \\n B: passage \\n prompt`` (instructions applied before)
and read the answer at the last position. The query is cut to ``query_max_length`` tokens and the passage so
that the pair fits ``max_length`` (separator and prompt not counted).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import Options, passage_limit, query_limit
from ..ragged import Ragged
from ..tokenization import TextTokenizer, truncate_second

__all__ = ["PromptParts", "PromptTokens", "assemble_prompt", "prompt_tokens"]


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
