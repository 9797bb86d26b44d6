"""Checking what users pass to ``compute_score``/``rerank``, and applying instructions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidInputError, InvalidPairTypeError

__all__ = ["Instructions", "as_documents", "as_pairs", "check_encodable"]

_PAIRS = "compute_score expects a list of (query, passage) pairs"
_DOCUMENTS = "rerank expects a list of document strings"


def as_pairs(sentence_pairs: Any) -> list[tuple[str, str]]:
    """Validate pairs and return them as a list; one bare ``(query, passage)`` pair is accepted too."""
    if isinstance(sentence_pairs, (str, bytes)):
        raise InvalidPairTypeError(f"{_PAIRS}, got a bare string; wrap it as [(query, passage)].")
    sentence_pairs = _ordered(
        sentence_pairs, _PAIRS, "[(query, passage), ...]", "; for a dict of query -> passage, list(d.items())"
    )
    if len(sentence_pairs) == 2 and all(isinstance(text, str) for text in sentence_pairs):
        sentence_pairs = [sentence_pairs]  # one pair passed bare, as FlagEmbedding allows
    pairs = [_checked_pair(index, pair) for index, pair in enumerate(sentence_pairs)]
    for index, (query, passage) in enumerate(pairs):
        check_encodable(query, f"Pair {index}: the query")
        check_encodable(passage, f"Pair {index}: the passage")
    return pairs


def _ordered(items: Any, expected: str, example: str, mapping_hint: str = "") -> Sequence[Any] | np.ndarray:
    """``items`` as a sequence, refusing what is not an ordered collection: scores come back in input order."""
    if items is None:
        raise InvalidPairTypeError(f"{expected}, got None.")
    if isinstance(items, Mapping):
        raise InvalidPairTypeError(
            f"{expected}, got a {type(items).__name__}, which would be read as its keys. "
            f"Pass a list such as {example}{mapping_hint}."
        )
    if isinstance(items, AbstractSet):
        raise InvalidPairTypeError(
            f"{expected}, got a {type(items).__name__}, whose order is arbitrary (it can change from one run to "
            f"the next), so scores could not be matched to inputs. Pass a list such as {example}, e.g. sorted(...)."
        )
    if isinstance(items, (Sequence, np.ndarray)):
        return items
    if not isinstance(items, Iterable):
        raise InvalidPairTypeError(f"{expected}, got {type(items).__name__} {items!r:.80}; pass {example}.")
    return list(items)


def check_encodable(text: str, where: str) -> None:
    """Refuse a text the tokenizer cannot take: a lone surrogate (half of a UTF-16 pair) has no UTF-8 form.

    ASCII texts (checked in constant time) cannot hold one; others are encoded once, in C.
    """
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{where} cannot be encoded as UTF-8: it holds a lone surrogate {text[exc.start]!r} at character "
            f"{exc.start} (half of a UTF-16 pair, as left by decoding with errors='surrogateescape' or a broken "
            "\\u escape in JSON). Repair the text, or drop the character with "
            "text.encode('utf-8', 'replace').decode('utf-8')."
        ) from None


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
    check_encodable(query, "The query")
    if isinstance(documents, (str, bytes)):
        raise InvalidPairTypeError(f"{_DOCUMENTS}, got a bare string; wrap it as [document].")
    documents = list(_ordered(documents, _DOCUMENTS, '["first document", "second document"]'))
    for index, document in enumerate(documents):
        if not isinstance(document, str):
            raise InvalidPairTypeError(f"Document {index} must be a str, got {type(document).__name__}.")
        check_encodable(document, f"Document {index}")
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
