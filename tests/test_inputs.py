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


def test_unknown_keyword_arguments_are_type_errors(reranker):
    from autorerank import AutoReranker

    with pytest.raises(TypeError, match="device"):
        AutoReranker.from_finetuned(reranker.model_name_or_path, device="cpu")
    with pytest.raises(TypeError, match="batchsize"):
        reranker.compute_score([("q", "p")], batchsize=4)
    with pytest.raises(TypeError, match="prompt"):
        reranker.compute_score([("q", "p")], prompt="only LLM rerankers take a prompt")


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
