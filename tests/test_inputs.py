"""Bad input gets a clear error naming the problem; odd but valid input is scored."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cached_reranker

from autorerank import InvalidInputError, InvalidOptionError, InvalidPairTypeError

ENC = "enc/bge-reranker-v2-m3"


@pytest.fixture(scope="module")
def reranker():
    return cached_reranker(ENC)


@pytest.mark.parametrize(
    "pairs, error, message",
    [
        (None, TypeError, "got None"),
        ("what is a panda?", TypeError, "bare string"),
        ([("q", "p"), "just a string"], TypeError, "Pair 1"),
        ([("q", "p"), ("q", None)], TypeError, "Pair 1: the passage must be a str, got NoneType"),
        ([(3, "p")], TypeError, "Pair 0: the query must be a str, got int"),
        ([("q", "p"), ("q", "p", "extra")], ValueError, "Pair 1 must hold exactly two texts"),
        ([("q", "p"), 42], TypeError, "Pair 1"),
    ],
)
def test_bad_pairs_raise_errors_naming_the_pair(reranker, pairs, error, message):
    with pytest.raises(error, match=message) as caught:
        reranker.compute_score(pairs)
    assert isinstance(caught.value, InvalidInputError)


@pytest.mark.parametrize(
    "pairs, message",
    [
        (
            {"what is a panda?": "The giant panda is a bear."},
            "got a dict, which would be read as its keys.*d.items",
        ),
        ({("q", "p"), ("q", "another")}, "got a set, whose order is arbitrary"),
        (frozenset({("q", "p")}), "got a frozenset, whose order is arbitrary"),
        ({"q": "p"}.items(), "got a dict_items, whose order is arbitrary"),
        (5, "got int 5; pass \\[\\(query, passage\\), ...\\]"),
        (3.5, "got float 3.5"),
        (object(), "got object"),
    ],
)
def test_unordered_and_non_iterable_pairs_are_refused(reranker, pairs, message):
    """A dict's two keys used to be scored as one pair, and a set in an order that changes between runs."""
    with pytest.raises(
        InvalidPairTypeError, match=f"compute_score expects a list of \\(query, passage\\) pairs, {message}"
    ):
        reranker.compute_score(pairs)


@pytest.mark.parametrize(
    "documents, message",
    [
        ({"a": 1, "b": 2}, "got a dict"),
        ({"a", "b"}, "got a set, whose order is arbitrary"),
        (7, "got int 7"),
        (None, "got None"),
        ("one document", "got a bare string"),
    ],
)
def test_unordered_and_non_iterable_documents_are_refused(reranker, documents, message):
    with pytest.raises(InvalidPairTypeError, match=f"rerank expects a list of document strings, {message}"):
        reranker.rerank("q", documents)


@pytest.mark.parametrize(
    "pairs, message",
    [
        (
            [("q", "p"), ("q\ud800", "p")],
            "Pair 1: the query cannot be encoded as UTF-8: .*'\\\\ud800' at character 1",
        ),
        ([("q", "a passage \udfff")], "Pair 0: the passage cannot be encoded as UTF-8"),
        (("é\udc80", "p"), "Pair 0: the query cannot be encoded as UTF-8"),
        (np.array([("q", "p"), ("q", "p\ud83d")]), "Pair 1: the passage"),
    ],
)
def test_lone_surrogates_are_refused_naming_the_pair_and_role(reranker, pairs, message):
    """They used to reach the tokenizer and raise a bare TypeError (TextEncodeInput must be Union[...])."""
    with pytest.raises(InvalidInputError, match=message) as caught:
        reranker.compute_score(pairs)
    assert "encode('utf-8', 'replace')" in str(caught.value)
    with pytest.raises(InvalidInputError, match="Document 1 cannot be encoded as UTF-8"):
        reranker.rerank("q", ["fine", "bad \ud800"])
    with pytest.raises(InvalidInputError, match="The query cannot be encoded as UTF-8"):
        reranker.rerank("q \ud800", ["fine"])


def test_non_ascii_texts_are_scored(reranker):
    scores = reranker.compute_score([("什么是熊猫?", "大熊猫是一种熊。😀"), ("q", "e\u0301 ﬁ")])
    assert len(scores) == 2 and all(np.isfinite(scores))


def test_pairs_may_be_lists_or_tuples_and_a_bare_pair_is_one_pair(reranker):
    as_tuples = reranker.compute_score([("q", "a passage"), ("q", "another")])
    as_lists = reranker.compute_score([["q", "a passage"], ["q", "another"]])
    assert as_tuples == as_lists
    assert reranker.compute_score(("q", "a passage")) == pytest.approx(as_tuples[:1], abs=1e-5)


def test_numpy_arrays_and_generators_of_pairs_are_accepted(reranker):
    pairs = [("q", "a passage"), ("q", "another")]
    expected = reranker.compute_score(pairs)
    assert reranker.compute_score(np.array(pairs)) == pytest.approx(expected, abs=1e-6)
    assert reranker.compute_score(pair for pair in pairs) == pytest.approx(expected, abs=1e-6)


def test_empty_and_whitespace_texts_are_scored(reranker):
    scores = reranker.compute_score([("q", ""), ("", "p"), ("q", " \t\n ")])
    assert len(scores) == 3 and all(np.isfinite(scores))


def test_texts_beyond_max_length_are_truncated(reranker):
    words = " ".join(f"word{i}" for i in range(3000))
    longer = words + " " + " ".join(f"extra{i}" for i in range(3000))
    first, second = reranker.compute_score([("q", words), ("q", longer)])
    assert first == pytest.approx(second, abs=1e-5)


@pytest.mark.parametrize(
    "options", [{"batch_size": 0}, {"max_length": -1}, {"batch_size": "8"}, {"max_batch_tokens": 0}]
)
def test_bad_option_values_are_rejected(reranker, options):
    with pytest.raises(InvalidOptionError):
        reranker.compute_score([("q", "p")], **options)


def test_rerank_orders_documents_and_honours_top_k(reranker):
    documents = ["Paris is in France.", "The giant panda is a bear.", "hi"]
    results = reranker.rerank("what is a panda?", documents)
    scores = reranker.compute_score([("what is a panda?", d) for d in documents])
    assert [r.index for r in results] == list(np.argsort(scores)[::-1])
    assert [r.document for r in results] == [documents[r.index] for r in results]
    assert [r.relevance_score for r in results] == sorted(scores, reverse=True)
    assert reranker.rerank("what is a panda?", documents, top_k=1) == results[:1]
    assert reranker.rerank("what is a panda?", []) == []
    with pytest.raises(InvalidPairTypeError, match="Document 1"):
        reranker.rerank("q", ["fine", None])
    with pytest.raises(InvalidOptionError, match="top_k"):
        reranker.rerank("q", ["fine"], top_k=-1)


def test_rerank_results_are_frozen(reranker):
    result = reranker.rerank("q", ["p"])[0]
    with pytest.raises(AttributeError):
        result.index = 3  # type: ignore[misc]


def test_scoring_does_not_mutate_the_reranker(reranker):
    before = (reranker.options, reranker.instructions, reranker.dtype)
    reranker.compute_score([("q", "p")], max_length=32, normalize=True, batch_size=3)
    assert (reranker.options, reranker.instructions, reranker.dtype) == before
