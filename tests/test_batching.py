"""Batch planning and padding are pure functions: check them directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cached_reranker

from autorerank.batching import Features, collate, default_batch_tokens, plan_batches
from autorerank.errors import InvalidOptionError
from autorerank.ragged import Ragged


def test_every_index_is_planned_once_longest_first():
    lengths = np.random.default_rng(0).integers(1, 300, size=500)
    batches = plan_batches(lengths, max_pairs=32, max_tokens=2048)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    widths = [lengths[b].max() for b in batches]
    assert widths == sorted(widths, reverse=True)


def test_batches_respect_the_pair_count_and_token_budget():
    lengths = np.random.default_rng(1).integers(1, 300, size=500)
    for batch in plan_batches(lengths, max_pairs=32, max_tokens=2048):
        assert len(batch) <= 32
        assert len(batch) == 1 or len(batch) * lengths[batch].max() <= 2048


def test_short_pairs_are_not_padded_to_a_long_one():
    lengths = np.array([700, 20, 20, 20, 20, 650])
    batches = plan_batches(lengths, max_pairs=128, max_tokens=None)
    assert [sorted(b.tolist()) for b in batches] == [[0, 5], [1, 2, 3, 4]]


def test_a_pair_over_the_budget_gets_its_own_batch():
    batches = plan_batches(np.array([5000, 10, 10]), max_pairs=8, max_tokens=100)
    assert [b.tolist() for b in batches] == [[0], [1, 2]]


def test_ragged_concat_head_and_padding_on_both_sides():
    rows = Ragged.from_lists([[1, 2, 3], [4], []])
    joined = Ragged.concat([Ragged.constant([9], 3), rows.head(np.array([2, 2, 2])), Ragged.constant([8], 3)])
    assert [joined.row(i) for i in range(3)] == [[9, 1, 2, 8], [9, 4, 8], [9, 8]]
    features = Features(joined)
    right = collate(features, np.array([0, 2]), pad_id=0, side="right", device=torch.device("cpu"))
    left = collate(features, np.array([0, 2]), pad_id=0, side="left", device=torch.device("cpu"))
    assert right.input_ids.tolist() == [[9, 1, 2, 8], [9, 8, 0, 0]]
    assert right.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert left.input_ids.tolist() == [[9, 1, 2, 8], [0, 0, 9, 8]]
    assert left.attention_mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert rows.tail(np.array([1, 1, 1])).row(0) == [3]


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"hidden_size": 384, "intermediate_size": 1536}, 2730),  # MiniLM-L6: 16 MiB / (4 B x 1536)
        ({"hidden_size": 768, "intermediate_size": 3072}, 1365),  # XLM-R base
        ({"hidden_size": 64, "intermediate_size": 128}, 16384),  # tiny: capped
        ({"hidden_size": 8192, "intermediate_size": 65536}, 256),  # huge: floor
        ({}, 1024),  # no sizes in config.json: sized for a 4096-wide layer
    ],
)
def test_cpu_budget_keeps_the_widest_activation_near_cache_size(config, expected):
    assert default_batch_tokens(torch.device("cpu"), config) == expected


def test_gpu_budget_is_large():
    config = {"hidden_size": 768, "intermediate_size": 3072}
    assert default_batch_tokens(torch.device("cuda", 0), config) == 16384


def test_auto_budget_scores_like_an_explicit_one():
    reranker = cached_reranker("enc-bert/bge-reranker-base")
    pairs = [(f"query {i}", "passage " * (i % 30 + 1)) for i in range(40)]
    auto = reranker.compute_score(pairs, max_batch_tokens="auto")
    np.testing.assert_allclose(auto, reranker.compute_score(pairs, max_batch_tokens=64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", ["big", 0, 2.5])
def test_a_bad_budget_names_the_accepted_values(bad):
    with pytest.raises(InvalidOptionError, match="max_batch_tokens must be a positive int, 'auto' or None"):
        cached_reranker("enc-bert/bge-reranker-base").compute_score([("q", "p")], max_batch_tokens=bad)
