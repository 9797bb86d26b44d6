"""The one streaming scorer: chunks, streaming jobs and layer rows, with real fixture models."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from conftest import cached_reranker, golden_case

from autorerank import InvalidOptionError, pipeline
from autorerank.jobs import plan_score_job, score_pair_file

PAIRS = [tuple(pair) for pair in golden_case("enc-auto-default")["pairs"]]
ATOL = 2e-5


@pytest.mark.parametrize("fixture", ["enc/bge-reranker-v2-m3", "llm/bge-reranker-v2-gemma"])
def test_many_chunks_score_like_one(fixture, monkeypatch):
    reranker = cached_reranker(fixture)
    whole = reranker.compute_score(PAIRS)
    monkeypatch.setattr(pipeline, "CHUNK_PAIRS", 5)  # each chunk tokenized while the previous one is scored
    np.testing.assert_allclose(reranker.compute_score(PAIRS), whole, atol=ATOL)


def test_iter_scores_streams_chunks_in_order():
    reranker = cached_reranker("enc/bge-reranker-v2-m3")
    chunks = [PAIRS[i : i + 4] for i in range(0, len(PAIRS), 4)]
    streamed = list(reranker.iter_scores(iter(chunks), normalize=True))
    assert [scores.shape for scores in streamed] == [(1, len(chunk)) for chunk in chunks]
    expected = reranker.compute_score(PAIRS, normalize=True)
    np.testing.assert_allclose(np.concatenate(streamed, axis=1)[0], expected, atol=ATOL)


def test_score_job_with_a_real_reranker_writes_compute_score_values(tmp_path):
    reranker = cached_reranker("enc/bge-reranker-v2-m3")
    source = tmp_path / "pairs.jsonl"
    source.write_text(
        "".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in PAIRS), encoding="utf-8"
    )
    job = plan_score_job(source, tmp_path / "scores.jsonl", fmt="jsonl")
    assert score_pair_file(reranker, job, chunk_size=3, progress=False).scored == len(PAIRS)
    written = [json.loads(line)["score"] for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(written, reranker.compute_score(PAIRS), atol=ATOL)


@pytest.mark.parametrize(
    "fixture, layers",
    [
        ("layerwise/bge-reranker-v2-minicpm-layerwise", [6, 4, 6]),
        ("lightweight/bge-reranker-v2.5-gemma2-lightweight", [10, 8, 10]),
    ],
)
def test_layer_rows_follow_the_request_repeats_included(fixture, layers):
    reranker = cached_reranker(fixture)
    rows = reranker.compute_layer_scores(PAIRS[:5], cutoff_layers=layers)
    assert len(rows) == 3 and all(len(row) == 5 for row in rows)
    assert rows[0] == rows[2] and rows[0] != rows[1]
    assert reranker.compute_layer_scores(PAIRS[:5]) == [reranker.compute_score(PAIRS[:5])]


def test_each_layerwise_layer_is_scored_by_its_own_head_whatever_else_is_asked():
    """(The lightweight kind's heads follow the requested set, as its published scores need: see the fixtures.)"""
    reranker = cached_reranker("layerwise/bge-reranker-v2-minicpm-layerwise")
    rows = reranker.compute_layer_scores(PAIRS[:5], cutoff_layers=[6, 4])
    single = [reranker.compute_score(PAIRS[:5], cutoff_layers=[layer]) for layer in (6, 4)]
    np.testing.assert_allclose(rows, single, atol=ATOL)


def test_rerank_refuses_several_layers_before_scoring():
    reranker = cached_reranker("layerwise/bge-reranker-v2-minicpm-layerwise")
    assert reranker.scores_per_pair(cutoff_layers=[4, 5]) == 2
    with pytest.raises(InvalidOptionError, match="single cutoff layer"):
        reranker.rerank("q", ["a", "b"], cutoff_layers=[4, 5])


def test_chunks_are_read_one_ahead_on_one_helper_thread_kept_between_calls():
    reranker = cached_reranker("enc/bge-reranker-v2-m3")
    readers: list[threading.Thread] = []

    def source(chunks):
        for chunk in chunks:
            readers.append(threading.current_thread())
            yield chunk

    chunks = [PAIRS[i : i + 4] for i in range(0, 12, 4)]
    list(reranker.iter_scores(source(chunks)))
    list(reranker.iter_scores(source(chunks)))
    assert len(readers) == 6 and len(set(readers)) == 1  # one thread, started once, kept for the next call
    assert readers[0] is not threading.current_thread() and readers[0].is_alive()
    reranker._engine.close()  # also done when the reranker is collected
    readers[0].join(10)
    assert not readers[0].is_alive()
    assert len(list(reranker.iter_scores(source(chunks)))) == 3  # a later call starts a new one


def test_a_caller_that_stops_early_leaves_the_source_after_the_chunk_read_ahead():
    reranker = cached_reranker("enc/bge-reranker-v2-m3")
    read: list[int] = []
    reading = threading.Event()

    def source():
        for index in range(10):
            read.append(index)
            if index == 1:  # the chunk read ahead while chunk 0 is scored: slow to read
                reading.set()
                time.sleep(0.3)
            yield PAIRS[index : index + 2]

    stream = reranker.iter_scores(source())
    first = next(stream)
    assert first.shape == (1, 2) and reading.wait(10)
    stream.close()  # returns once the read-ahead is done: the source is not touched after it
    assert read == [0, 1]
    time.sleep(0.4)
    assert read == [0, 1]
