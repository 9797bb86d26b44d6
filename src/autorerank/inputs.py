"""Checking what users pass to ``compute_score``/``rerank``, and applying instructions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidInputError, InvalidPairTypeError

__all__ = ["Instructions", "as_documents", "as_pairs"]


def as_pairs(sentence_pairs: Any) -> list[tuple[str, str]]:
    """Validate pairs and return them as a list; one bare ``(query, passage)`` pair is accepted too."""
    if sentence_pairs is None:
        raise InvalidPairTypeError("compute_score expects a list of (query, passage) pairs, got None.")
    if isinstance(sentence_pairs, (str, bytes)):
        raise InvalidPairTypeError(
            "compute_score expects a list of (query, passage) pairs, got a bare string; "
            "wrap it as [(query, passage)]."
        )
    if not isinstance(sentence_pairs, Sequence):
        sentence_pairs = list(sentence_pairs)
    if len(sentence_pairs) == 2 and all(isinstance(text, str) for text in sentence_pairs):
        return [(sentence_pairs[0], sentence_pairs[1])]  # one pair passed bare, as FlagEmbedding allows
    return [_checked_pair(index, pair) for index, pair in enumerate(sentence_pairs)]


def _checked_pair(index: int, pair: Any) -> tuple[str, str]:
    if isinstance(pair, (str, bytes)) or not isinstance(pair, (Sequence, np.ndarray)):
        raise InvalidPairTypeError(
            f"Pair {index} must be a (query, passage) tuple or list of two strings, got {type(pair).__name__} {pair!r:.80}."
        )
    if len(pair) != 2:
        raise InvalidInputError(
            f"Pair {index} must hold exactly two texts (query, passage), got {len(pair)}."
        )
    query, passage = pair
    for role, text in (("query", query), ("passage", passage)):
        if not isinstance(text, str):
            raise InvalidPairTypeError(
                f"Pair {index}: the {role} must be a str, got {type(text).__name__} {text!r:.80}."
            )
    return (str(query), str(passage))  # plain str also for numpy's str_ elements


def as_documents(query: Any, documents: Any) -> list[str]:
    """Validate ``rerank`` arguments: one query string and a list of document strings."""
    if not isinstance(query, str):
        raise InvalidPairTypeError(f"rerank expects the query as a str, got {type(query).__name__}.")
    if isinstance(documents, (str, bytes)) or documents is None:
        raise InvalidPairTypeError("rerank expects a list of document strings, got a bare string or None.")
    documents = list(documents)
    for index, document in enumerate(documents):
        if not isinstance(document, str):
            raise InvalidPairTypeError(f"Document {index} must be a str, got {type(document).__name__}.")
    return documents


@dataclass(frozen=True)
class Instructions:
    """Query and passage instructions, placed with their format strings (``"{}{}"`` by default).

    A literal backslash-n in a format string becomes a newline, as in FlagEmbedding.
    """

    query_instruction: str | None = None
    query_format: str = "{}{}"
    passage_instruction: str | None = None
    passage_format: str = "{}{}"

    def apply(self, pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
        queries = [pair[0] for pair in pairs]
        passages = [pair[1] for pair in pairs]
        return (
            _instructed(self.query_instruction, self.query_format, queries),
            _instructed(self.passage_instruction, self.passage_format, passages),
        )


def _instructed(instruction: str | None, template: str, texts: list[str]) -> list[str]:
    if instruction is None:
        return texts
    template = template.replace("\\n", "\n")
    if template == "{}{}":
        return [instruction + text for text in texts]
    return [template.format(instruction, text) for text in texts]
