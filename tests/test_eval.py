"""Evaluation numbers checked against values computed by hand on a tiny qrels/run pair."""

from __future__ import annotations

from math import log2

import pytest

pytest.importorskip("ir_measures")

from autorerank.errors import InvalidInputError, InvalidOptionError
from autorerank.evaluation import evaluate, format_table, parse_measures

# Judgments: q1 has three relevant documents (a: 2, b: 1, z: 1, never retrieved) and one
# judged non-relevant (c); q2 has one (e); q3 is judged but absent from the run.
QRELS = {"q1": {"a": 2, "b": 1, "c": 0, "z": 1}, "q2": {"e": 1}, "q3": {"g": 1}}
# Rankings: q1 = c, a, d, b ; q2 = f, h, e ; q9 has no judgments and must be ignored.
RUN = {
    "q1": {"c": 4.0, "a": 3.0, "d": 2.0, "b": 1.0},
    "q2": {"f": 3.0, "h": 2.0, "e": 1.0},
    "q9": {"x": 1.0},
}

# nDCG@10, trec_eval's linear gains, discount log2(rank + 1):
#   q1: DCG = 2/log2(3) [a at rank 2] + 1/log2(5) [b at rank 4]
#       IDCG = 2/log2(2) + 1/log2(3) + 1/log2(4)   [ideal order a, b, z]
#   q2: DCG = 1/log2(4) [e at rank 3], IDCG = 1
#   q3: 0 (judged, not retrieved); mean over the 3 judged queries.
NDCG_Q1 = (2 / log2(3) + 1 / log2(5)) / (2 / log2(2) + 1 / log2(3) + 1 / log2(4))
NDCG_10 = (NDCG_Q1 + 1 / log2(4) + 0) / 3
# MRR@10: first relevant document at rank 2 (q1), rank 3 (q2), none (q3).
MRR_10 = (1 / 2 + 1 / 3 + 0) / 3
# Recall@100: q1 retrieves 2 of its 3 relevant (a, b; not z), q2 1 of 1, q3 0 of 1.
RECALL_100 = (2 / 3 + 1 + 0) / 3
# Recall@2: q1's top 2 (c, a) hold 1 of 3; q2's top 2 (f, h) none.
RECALL_2 = (1 / 3 + 0 + 0) / 3
# P@2: 1 relevant in q1's top 2, 0 in q2's, 0 for q3.
P_2 = (1 / 2 + 0 + 0) / 3


def test_measures_match_hand_computed_values():
    result = evaluate(QRELS, RUN, ["ndcg@10", "mrr@10", "recall@100", "recall@2", "P@2"])
    assert list(result.values) == ["nDCG@10", "RR@10", "R@100", "R@2", "P@2"]
    assert result.values["nDCG@10"] == pytest.approx(NDCG_10, abs=1e-9)
    assert result.values["RR@10"] == pytest.approx(MRR_10, abs=1e-9)
    assert result.values["R@100"] == pytest.approx(RECALL_100, abs=1e-9)
    assert result.values["R@2"] == pytest.approx(RECALL_2, abs=1e-9)
    assert result.values["P@2"] == pytest.approx(P_2, abs=1e-9)
    assert (result.judged_queries, result.missing_queries, result.unjudged_queries) == (3, 1, 1)


def test_perfect_run_scores_one():
    qrels = {"q1": {"a": 1}}
    assert evaluate(qrels, {"q1": {"a": 2.0, "b": 1.0}}, ["ndcg@10", "mrr@10"]).values == {
        "nDCG@10": 1.0,
        "RR@10": 1.0,
    }


def test_measure_spellings():
    assert [
        str(m) for m in parse_measures(["NDCG@10", "MRR@10", "Recall@5", "map", "nDCG@10", "P(rel=2)@5"])
    ] == [
        "nDCG@10",
        "RR@10",
        "R@5",
        "AP",
        "P(rel=2)@5",
    ]
    with pytest.raises(InvalidOptionError, match="Unknown measure 'bleu@4'"):
        parse_measures(["bleu@4"])


@pytest.mark.parametrize("name", ["ndcg@0", "P@0", "recall@0", "success@0", "mrr@0", "P(rel=2)@0"])
def test_a_cutoff_of_zero_is_refused_before_trec_eval_sees_it(name):
    """trec_eval aborts the whole process (a C assertion) on nDCG@0 and others."""
    with pytest.raises(InvalidOptionError, match=r"has cutoff 0: a cutoff counts ranks, from 1"):
        evaluate({"q1": {"a": 1}}, {"q1": {"a": 1.0}}, [name])


def test_disjoint_run_and_qrels_is_an_error():
    with pytest.raises(InvalidInputError, match="same collection"):
        evaluate({"q1": {"a": 1}}, {"other": {"a": 1.0}}, ["ndcg@10"])


def test_table_with_comparison_shows_difference():
    baseline = evaluate(QRELS, RUN, ["mrr@10"])
    better = evaluate(QRELS, {**RUN, "q1": {**RUN["q1"], "a": 5.0}}, ["mrr@10"])  # a moves to rank 1
    table = format_table([("bm25.trec", baseline), ("reranked.trec", better)])
    header, row = table.splitlines()[:2]
    assert header.split() == ["measure", "bm25.trec", "reranked.trec", "diff"]
    # q1's reciprocal rank goes from 1/2 to 1: the mean rises by (1 - 1/2) / 3.
    assert row.split() == ["RR@10", f"{MRR_10:.4f}", f"{MRR_10 + 0.5 / 3:.4f}", f"{0.5 / 3:+.4f}"]
    assert "1 of them absent from the run (counted as 0)" in table
