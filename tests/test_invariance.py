"""Scores must not depend on batching, order, padding or duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cached_reranker, golden_case

FIXTURES = ["enc/bge-reranker-v2-m3", "enc-bert/bge-reranker-base", "llm/bge-reranker-v2-gemma"]
PAIRS = golden_case("enc-auto-default")["pairs"]
ATOL = 2e-5


@pytest.mark.parametrize("fixture", FIXTURES)
def test_batch_size_and_token_budget_do_not_change_scores(fixture):
    reranker = cached_reranker(fixture)
    reference = reranker.compute_score(PAIRS)
    for options in ({"batch_size": 1}, {"batch_size": 7}, {"max_batch_tokens": 64}, {"max_batch_tokens": 1}):
        np.testing.assert_allclose(
            reranker.compute_score(PAIRS, **options), reference, atol=ATOL, err_msg=str(options)
        )


@pytest.mark.parametrize("fixture", FIXTURES)
def test_batch_equals_items_scored_one_by_one(fixture):
    reranker = cached_reranker(fixture)
    one_by_one = [reranker.compute_score([pair])[0] for pair in PAIRS[:12]]
    np.testing.assert_allclose(reranker.compute_score(PAIRS[:12]), one_by_one, atol=ATOL)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_input_order_does_not_change_scores(fixture):
    reranker = cached_reranker(fixture)
    order = np.random.default_rng(0).permutation(len(PAIRS))
    shuffled = reranker.compute_score([PAIRS[i] for i in order])
    np.testing.assert_allclose(
        np.array(shuffled)[np.argsort(order)], reranker.compute_score(PAIRS), atol=ATOL
    )


@pytest.mark.parametrize("fixture", FIXTURES)
def test_padding_next_to_a_long_pair_does_not_change_a_short_pair(fixture):
    reranker = cached_reranker(fixture)
    short = ("what is panda?", "A bear.")
    long = ("what is panda?", "The giant panda lives in bamboo forests. " * 40)
    alone = reranker.compute_score([short])[0]
    padded = reranker.compute_score([short, long], batch_size=2, max_batch_tokens=None)[0]
    assert padded == pytest.approx(alone, abs=ATOL)


def test_duplicates_get_identical_scores():
    reranker = cached_reranker("enc/bge-reranker-v2-m3")
    scores = reranker.compute_score([PAIRS[1], PAIRS[2], PAIRS[1], PAIRS[1]])
    assert scores[0] == scores[2] == scores[3]
    assert scores[0] != scores[1]
