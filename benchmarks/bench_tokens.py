"""Unpadded token counts of benchmark pairs, as the reference assembles them, for the FLOP count.

Counts come from the model's tokenizer.json through the `tokenizers` library. Checkpoints often ship a
tokenizer.json with truncation and padding switched on (the MiniLM one truncates and pads to 128), so both are
switched off before counting.
"""

from __future__ import annotations

from pathlib import Path

from bench_specs import (
    LLM_PASSAGE_INSTRUCTION,
    LLM_PROMPT,
    LLM_QUERY_INSTRUCTION,
    LLM_SEPARATOR,
    MAX_LENGTH,
    QUERY_MAX_LENGTH,
    ModelSpec,
)
from tokenizers import Tokenizer


def _plain_tokenizer(path: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _lengths(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    return [len(encoding.ids) for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]


def encoder_lengths(tokenizer_json: Path, pairs: list[tuple[str, str]]) -> list[int]:
    """[CLS] query [SEP] passage [SEP]: query capped at 3/4 of max_length, the total at max_length."""
    tokenizer = _plain_tokenizer(tokenizer_json)
    queries = _lengths(tokenizer, [query for query, _ in pairs])
    passages = _lengths(tokenizer, [passage for _, passage in pairs])
    return [min(MAX_LENGTH, min(q, QUERY_MAX_LENGTH) + p + 3) for q, p in zip(queries, passages)]


def llm_lengths(tokenizer_json: Path, pairs: list[tuple[str, str]]) -> list[int]:
    """<bos> "A: "query "\\n" "B: "passage, capped, then "\\n" prompt: the decoder-only-base layout."""
    tokenizer = _plain_tokenizer(tokenizer_json)
    queries = _lengths(tokenizer, [LLM_QUERY_INSTRUCTION + query for query, _ in pairs])
    passages = _lengths(tokenizer, [LLM_PASSAGE_INSTRUCTION + passage for _, passage in pairs])
    separator, prompt = _lengths(tokenizer, [LLM_SEPARATOR, LLM_PROMPT])
    tail = separator + prompt
    body_cap = MAX_LENGTH + tail
    return [
        min(body_cap, 1 + min(q, QUERY_MAX_LENGTH) + separator + min(p, MAX_LENGTH)) + tail
        for q, p in zip(queries, passages)
    ]


def token_lengths(spec: ModelSpec, model_dir: Path, pairs: list[tuple[str, str]]) -> list[int]:
    """Unpadded input length of every pair for this model."""
    tokenizer_json = model_dir / "tokenizer.json"
    if spec.kind == "llm":
        return llm_lengths(tokenizer_json, pairs)
    return encoder_lengths(tokenizer_json, pairs)
