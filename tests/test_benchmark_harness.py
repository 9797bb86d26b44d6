"""Pure helpers of the speed benchmark: pair generation and the FLOP count. No venv, no model, no timing."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_flops import forward_flops, layer_flops, total_flops
from bench_pairs import PASSAGE_WORDS, QUERY_WORDS, generate_pairs, read_pairs, write_pairs
from bench_report import spearman
from bench_specs import SPECS


def test_pairs_are_deterministic_per_seed() -> None:
    assert generate_pairs(50, seed=7) == generate_pairs(50, seed=7)
    assert generate_pairs(50, seed=7) != generate_pairs(50, seed=8)


def test_a_shorter_run_scores_a_prefix_of_a_longer_one() -> None:
    assert generate_pairs(200, seed=3)[:20] == generate_pairs(20, seed=3)


def test_pair_lengths_are_in_the_requested_word_ranges() -> None:
    pairs = generate_pairs(400, seed=11)
    query_lengths = [len(query.split()) for query, _ in pairs]
    passage_lengths = [len(passage.split()) for _, passage in pairs]
    assert min(query_lengths) >= QUERY_WORDS[0] and max(query_lengths) <= QUERY_WORDS[1]
    assert min(passage_lengths) >= PASSAGE_WORDS[0] and max(passage_lengths) <= PASSAGE_WORDS[1]
    # "mixed": both short and long passages occur, not one fixed length.
    assert min(passage_lengths) < 60 and max(passage_lengths) > 170
    assert len(set(query_lengths)) > 5


def test_pairs_round_trip_through_the_pairs_file(tmp_path: Path) -> None:
    pairs = generate_pairs(5, seed=1)
    write_pairs(tmp_path / "pairs.json", pairs)
    assert read_pairs(tmp_path / "pairs.json") == pairs


def test_bert_base_layer_flops_match_the_hand_count() -> None:
    # BERT-base shape at 128 tokens, worked out by hand:
    # Q,K,V,O projections 4 * 2*128*768*768 = 603,979,776; attention 2 * 2*128*128*768 = 50,331,648;
    # FFN 2 * 2*128*768*3072 = 1,207,959,552.
    bert_base = replace(SPECS["xlmr-base"])
    assert layer_flops(bert_base, 128) == 603_979_776 + 50_331_648 + 1_207_959_552


def test_encoder_forward_adds_layers_and_the_cls_head() -> None:
    spec = SPECS["minilm"]
    head = 2 * 384 * 384 + 2 * 384
    assert forward_flops(spec, 100) == 6 * layer_flops(spec, 100) + head


def test_decoder_counts_grouped_kv_gated_mlp_and_one_lm_head_row() -> None:
    spec = SPECS["llm"]  # hidden 1024, 8 query heads and 1 kv head of 128, intermediate 4096, vocab 32000
    tokens = 10
    projections = 2 * tokens * 1024 * (1024 + 2 * 128) + 2 * tokens * 1024 * 1024
    attention = 4 * tokens * tokens * 1024
    mlp = 3 * 2 * tokens * 1024 * 4096
    assert layer_flops(spec, tokens) == projections + attention + mlp
    assert forward_flops(spec, tokens) == 16 * (projections + attention + mlp) + 2 * 1024 * 32000


def test_total_flops_sums_per_pair_counts() -> None:
    spec = SPECS["minilm"]
    assert total_flops(spec, [10, 20]) == forward_flops(spec, 10) + forward_flops(spec, 20)
    assert total_flops(spec, []) == 0


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_fingerprints_change_with_the_shape(name: str) -> None:
    spec = SPECS[name]
    assert spec.fingerprint() == SPECS[name].fingerprint()
    assert replace(spec, layers=spec.layers + 1).fingerprint() != spec.fingerprint()


def test_spearman_reads_ranks_not_values() -> None:
    scores = [0.1, 0.5, 0.2, 0.9, 0.3]
    assert spearman(scores, [x**3 + 7 for x in scores]) == pytest.approx(1.0)
    assert spearman(scores, [-x for x in scores]) == pytest.approx(-1.0)


def test_spearman_gives_tied_scores_their_mean_rank() -> None:
    # ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3): covariance 4.5, variances 4.5 and 5.
    assert spearman([1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)


def test_spearman_refuses_score_lists_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="3 scores with 2"):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])
