"""The GEMM-share tool (benchmarks/bench_gemm_share.py) records exactly the weight GEMMs the lean classifier runs,
counts their FLOPs from the shapes, and replays them; a real reranker on the BERT fixture, no timing asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import cached_reranker

from autorerank.compat import onednn_linear

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_gemm_share import GemmCall, measure, record_gemms

pytestmark = pytest.mark.skipif(onednn_linear() is None, reason="oneDNN's fused linear is not available here")

PAIRS = [
    ("what is a cat", "a cat is a small animal"),
    ("rain", "it rains in spring"),
    ("sun", "the sun is hot"),
]


def test_the_recorded_gemms_are_the_classifier_layers_in_order() -> None:
    reranker = cached_reranker("enc-bert/bge-reranker-base")  # 2 layers, hidden 64, intermediate 128
    calls = record_gemms(lambda: reranker.compute_score(PAIRS))
    first_layer = [3 * 64, 64, 128, 64]  # fused QKV, attention output, up, down
    last_layer = [
        64,
        2 * 64,
        64,
        128,
        64,
    ]  # the first token's query, every token's keys and values, then as above
    assert [call.weight.shape[0] for call in calls] == first_layer + last_layer
    assert [call.binary for call in calls] == [False, True, False, True] + [False, False, True, False, True]


def test_flops_count_every_row_of_the_input() -> None:
    call = GemmCall(False, (2, 5, 64), torch.zeros(128, 64), None, None, ())
    assert call.flops == 2 * 10 * 64 * 128


def test_measure_replays_what_it_recorded() -> None:
    reranker = cached_reranker("enc-bert/bge-reranker-base")
    result = measure(lambda: reranker.compute_score(PAIRS), torch.float32, repeats=1)
    assert result["gemm_calls"] == 9
    assert result["gemm_share"] > 0 and result["peak_gflops"] > 0
    assert len(result["seconds"]["pass"]) == 1 and len(result["seconds"]["square"]) == 3
