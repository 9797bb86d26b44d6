"""Golden parity with FlagEmbedding for the cross-encoder and LLM fixtures (fp32, CPU)."""

from __future__ import annotations

import functools
import json
import warnings

import numpy as np
import pytest
from conftest import fixture_path, golden_case, golden_records, tolerance

from autorerank import AutoReranker

# Cases whose notes describe a reference bug: autorerank must do what the note asks instead.
BUG_CASES = {"err-enc-empty-list", "err-auto-trailing-slash", "err-llm-use-dataloader"}
PARITY_CASES = [
    record
    for prefix in ("enc/", "enc-bert/", "llm/")
    for record in golden_records(prefix)
    if record["error"] is None and record["case_id"] not in BUG_CASES
]


def _load(record):
    return _load_cached(
        record["fixture"], record["loader"], json.dumps(record["init_kwargs"], sort_keys=True)
    )


@functools.cache
def _load_cached(fixture: str, loader: str, init_kwargs: str):
    model_class = None if loader == "auto" else loader
    return AutoReranker.from_finetuned(fixture_path(fixture), model_class, **json.loads(init_kwargs))


def _score(record, reranker):
    pairs = record["pairs"] if record["input_mode"] == "list" else tuple(record["pairs"][0])
    return reranker.compute_score(pairs, **record["call_kwargs"])


@pytest.mark.parametrize("record", PARITY_CASES, ids=lambda r: r["case_id"])
def test_scores_match_flagembedding(record):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "use_fp16", UserWarning)  # checked in its own test below
        reranker = _load(record)
    scores = _score(record, reranker)
    assert isinstance(scores, list) and all(isinstance(score, float) for score in scores)
    np.testing.assert_allclose(scores, record["scores"], rtol=0, atol=tolerance(record["fixture"]))


def test_empty_list_returns_empty_list():
    record = golden_case("err-enc-empty-list")
    assert _score(record, _load(record)) == []


def test_trailing_slash_path_loads_like_the_plain_path():
    record, plain = golden_case("err-auto-trailing-slash"), golden_case("enc-auto-default")
    assert record["fixture"].endswith("/")
    scores = _score(record, _load(record))
    np.testing.assert_allclose(scores, plain["scores"], rtol=0, atol=tolerance(plain["fixture"]))


def test_use_dataloader_is_accepted_and_changes_nothing():
    record, plain = golden_case("err-llm-use-dataloader"), golden_case("llm-auto-default")
    scores = _score(record, _load(record))
    np.testing.assert_allclose(scores, plain["scores"], rtol=0, atol=tolerance(plain["fixture"]))


def test_fp16_request_on_cpu_stays_float32():
    record = golden_case("enc-fp16-on-cpu")
    with pytest.warns(UserWarning, match="use_fp16"):
        reranker = _load_cached.__wrapped__(
            record["fixture"], record["loader"], json.dumps(record["init_kwargs"])
        )
    assert reranker.info.dtype == "float32"
