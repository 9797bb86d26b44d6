"""The wire formats: Cohere (and Jina, which posts to Cohere's route), TEI and vLLM.

Each dialect reads its request into a :class:`Scoring` (the pairs, and how long ones are cut) and writes the
model's raw scores back in its own response format. Field names and defaults follow each project's API reference:
Cohere's rerank v1/v2 (``relevance_score`` in (0, 1), results best first), text-embeddings-inference's
``/rerank`` OpenAPI (a bare array, ``raw_scores`` false by default), vLLM's ``ScoreRequest``/``ScoreResponse``
(scores in input order; ``use_activation``, true by default, is the sigmoid of one-label rerankers).
Everything else a client sends is ignored. The sigmoid is the library's own (:func:`finish_scores`), so a
normalized score equals ``compute_score(pairs, normalize=True)`` bit for bit.
"""

from __future__ import annotations

import math
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from ..pipeline import finish_scores
from .errors import ApiError, InvalidField
from .fields import Fields

__all__ = ["COHERE_V1", "COHERE_V2", "TEI", "VLLM", "Dialect", "Parsed", "Scoring"]


@dataclass(frozen=True)
class Scoring:
    """What one request asks of the model, whatever its dialect."""

    queries: list[str]  # one per pair: a rerank request repeats its query
    passages: list[str]
    field: str  # what the dialect calls the passages, for messages: "documents", "texts", "text_2"
    passage_max_length: int | None = None  # Cohere's max_tokens_per_doc
    truncate: bool = True  # False: a pair longer than the model's max_length is refused (413), not cut
    truncate_left: bool = False  # cut a long passage's beginning instead of its end (TEI's "Left")


@dataclass(frozen=True)
class Parsed:
    scoring: Scoring


P = TypeVar("P", bound=Parsed)


class Dialect(ABC, Generic[P]):
    """One wire format: read a request body, write a response, write an error."""

    @abstractmethod
    def parse(self, fields: Fields) -> P:
        """The request, checked; raises :class:`InvalidField` naming the field."""

    @abstractmethod
    def render(self, parsed: P, raw: list[float], tokens: int, model: str) -> Any:
        """The response body for raw scores (one per pair, in request order)."""

    def error_body(self, error: ApiError) -> dict[str, Any]:
        body: dict[str, Any] = {
            "error": error.message,
            "error_type": error.error_type,
            "message": error.message,
        }
        if error.field is not None:
            body["field"] = error.field
        return body


def sigmoid(raw: list[float]) -> list[float]:
    values: list[float] = finish_scores(np.asarray(raw, dtype=np.float64), True).tolist()
    return values


def best_first(scores: list[float]) -> list[int]:
    """Indices by descending score; equal scores keep request order."""
    return sorted(range(len(scores)), key=lambda index: -scores[index])


# ----------------------------------------------------------------------------- Cohere v1/v2, Jina
@dataclass(frozen=True)
class RerankRequest(Parsed):
    documents: list[str]
    top_n: int | None
    return_documents: bool


class Cohere(Dialect[RerankRequest]):
    """``POST /v1/rerank``, ``POST /v2/rerank``: Cohere's API, which Jina's client also speaks.

    The response carries Cohere's ``id``, ``results`` and ``meta``, and Jina's ``model`` and
    ``usage.total_tokens``; each client reads its own fields and ignores the rest.
    """

    def __init__(self, version: str) -> None:
        self.version = version

    def parse(self, fields: Fields) -> RerankRequest:
        query = fields.string("query")
        documents = fields.documents("documents")
        scoring = Scoring(
            [query] * len(documents),
            documents,
            "documents",
            passage_max_length=fields.integer("max_tokens_per_doc"),
        )
        return RerankRequest(
            scoring, documents, fields.integer("top_n"), bool(fields.boolean("return_documents", False))
        )

    def render(self, parsed: RerankRequest, raw: list[float], tokens: int, model: str) -> Any:
        scores = sigmoid(raw)
        results = []
        for index in best_first(scores)[: parsed.top_n]:
            result: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
            if parsed.return_documents:
                result["document"] = {"text": parsed.documents[index]}
            results.append(result)
        return {
            "id": str(uuid.uuid4()),
            "results": results,
            "meta": {
                "api_version": {"version": self.version},
                "billed_units": {"search_units": math.ceil(len(raw) / 100)},  # Cohere: one per 100 documents
                "tokens": {"input_tokens": tokens, "output_tokens": 0},
            },
            "model": model,
            "usage": {"total_tokens": tokens},
        }

    def error_body(self, error: ApiError) -> dict[str, Any]:
        body: dict[str, Any] = {"message": error.message}  # what Cohere's API answers, and its SDK reads
        if error.field is not None:
            body["field"] = error.field
        return body


# ----------------------------------------------------------------------------- text-embeddings-inference
@dataclass(frozen=True)
class TeiRequest(Parsed):
    texts: list[str]
    raw_scores: bool
    return_text: bool


class Tei(Dialect[TeiRequest]):
    """``POST /rerank``: Hugging Face text-embeddings-inference. ``truncate`` left out or null cuts long pairs
    (TEI's auto-truncate); ``false`` refuses them with 413, as TEI does."""

    def parse(self, fields: Fields) -> TeiRequest:
        query = fields.string("query")
        texts = fields.strings("texts")
        scoring = Scoring(
            [query] * len(texts),
            texts,
            "texts",
            truncate=fields.boolean("truncate", None) is not False,
            truncate_left=fields.choice("truncation_direction", ("left", "right"), "right") == "left",
        )
        return TeiRequest(
            scoring,
            texts,
            bool(fields.boolean("raw_scores", False)),
            bool(fields.boolean("return_text", False)),
        )

    def render(self, parsed: TeiRequest, raw: list[float], tokens: int, model: str) -> Any:
        scores = raw if parsed.raw_scores else sigmoid(raw)
        ranks = []
        for index in best_first(scores):
            rank: dict[str, Any] = {"index": index, "score": scores[index]}
            if parsed.return_text:
                rank["text"] = parsed.texts[index]
            ranks.append(rank)
        return ranks


# ----------------------------------------------------------------------------- vLLM
@dataclass(frozen=True)
class ScoreRequest(Parsed):
    activation: bool


class Vllm(Dialect[ScoreRequest]):
    """``POST /score``, ``POST /v1/score``: vLLM's score API. One ``text_1`` is scored against every ``text_2``;
    two lists of one length are paired item by item. ``use_activation`` (older vLLM: ``activation``,
    ``softmax``) false returns raw scores."""

    def parse(self, fields: Fields) -> ScoreRequest:
        first = fields.string_or_strings("text_1")
        second = fields.string_or_strings("text_2")
        if len(first) == 1:
            first = first * len(second)
        elif len(first) != len(second):
            raise InvalidField(
                f"`text_1` has {len(first)} texts and `text_2` {len(second)}: send one text_1 to score against "
                "every text_2, or as many as text_2 to pair them in order",
                field="text_1",
            )
        activation = True
        for name in ("use_activation", "activation", "softmax"):
            given = fields.boolean(name, None)
            if given is not None:
                activation = given
                break
        return ScoreRequest(Scoring(first, second, "text_2"), activation)

    def render(self, parsed: ScoreRequest, raw: list[float], tokens: int, model: str) -> Any:
        scores = sigmoid(raw) if parsed.activation else raw
        return {
            "id": f"score-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": model,
            "data": [
                {"index": index, "object": "score", "score": score} for index, score in enumerate(scores)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }

    def error_body(self, error: ApiError) -> dict[str, Any]:
        return {  # vLLM's (OpenAI's) error shape
            "object": "error",
            "message": error.message,
            "type": error.error_type,
            "param": error.field,
            "code": error.status,
        }


COHERE_V1 = Cohere("1")
COHERE_V2 = Cohere("2")
TEI = Tei()
VLLM = Vllm()
