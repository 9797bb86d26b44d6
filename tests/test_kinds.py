"""The kind interface: a fake kind registered through the real registry runs through the whole library.

The fake scores a pair by a fixed function of its token ids, so its expected scores are computed here
independently of the pipeline (batching, padding, order, chunking, detection, options).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from conftest import FIXTURES

from autorerank import AutoReranker, InvalidOptionError
from autorerank.batching import Batch, Features
from autorerank.kinds.base import Kind, ModelSource, Plan
from autorerank.options import Options
from autorerank.registry import register_kind, unregister_kind
from autorerank.tokenization import TextTokenizer

TOY = "toy-sum"


class ToyModel(torch.nn.Module):
    """Score = weight * (sum of the real token ids) / 1000: padding must never count."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(1.5))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.weight * (input_ids * attention_mask).sum(-1).float() / 1000  # (B,)


class ToyKind(Kind):
    name = TOY

    def matches(self, config: Mapping[str, Any]) -> bool:
        return config.get("architectures") == ["ToySumScorer"]

    def load(self, source: ModelSource) -> torch.nn.Module:
        return ToyModel().to(source.dtype)

    def plan(self, config: Any, options: Options) -> Plan:
        if options.max_length < 4:
            raise InvalidOptionError("toy needs max_length >= 4")
        return Plan()

    def prepare(self, tokenizer: TextTokenizer, model: torch.nn.Module) -> TextTokenizer:
        return tokenizer

    def encode(
        self, prepared: TextTokenizer, queries: list[str], passages: list[str], options: Options
    ) -> Features:
        from autorerank.ragged import Ragged

        return Features(Ragged.concat([prepared.encode(queries, 8), prepared.encode(passages, 8)]))

    def score_batch(self, model: torch.nn.Module, batch: Batch, plan: Plan) -> torch.Tensor:
        return model(batch.input_ids, batch.attention_mask)[None]  # (1, B)


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    register_kind(ToyKind())
    folder = tmp_path_factory.mktemp("toy") / "some-toy-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["ToySumScorer"], "model_type": "toy"}))
    source = FIXTURES / "enc" / "bge-reranker-v2-m3"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    yield folder
    unregister_kind(TOY)


PAIRS = [("what is a panda?", "The giant panda is a bear."), ("q", "Paris is in France."), ("a", "b" * 40)]


def expected_scores(reranker, pairs):
    """The toy function computed by hand from the tokenizer: first 8 ids of each text, summed."""
    tokenizer = reranker.text_tokenizer.backend
    return [
        1.5
        * (
            sum(tokenizer.encode(q, add_special_tokens=False).ids[:8])
            + sum(tokenizer.encode(p, add_special_tokens=False).ids[:8])
        )
        / 1000
        for q, p in pairs
    ]


def test_a_registered_kind_is_detected_from_config_json_and_scores(toy_checkpoint):
    reranker = AutoReranker.from_finetuned(str(toy_checkpoint), devices="cpu")
    assert reranker.info.kind == TOY and "config.json" in reranker.info.detected_by
    np.testing.assert_allclose(reranker.compute_score(PAIRS), expected_scores(reranker, PAIRS), rtol=1e-6)


def test_the_shared_pipeline_batches_pads_and_chunks_a_new_kind_invisibly(toy_checkpoint, monkeypatch):
    from autorerank import pipeline

    reranker = AutoReranker.from_finetuned(str(toy_checkpoint), model_class=TOY, devices="cpu")
    pairs = PAIRS * 5 + [("x", "y")]
    expected = expected_scores(reranker, pairs)
    monkeypatch.setattr(pipeline, "CHUNK_PAIRS", 4)  # several chunks, each tokenized ahead
    np.testing.assert_allclose(reranker.compute_score(pairs, batch_size=3), expected, rtol=1e-6)
    np.testing.assert_allclose(reranker.compute_score(pairs, max_batch_tokens=20), expected, rtol=1e-6)


def test_a_kind_validates_options_once_before_any_work(toy_checkpoint):
    reranker = AutoReranker.from_finetuned(str(toy_checkpoint), model_class=TOY, devices="cpu")
    with pytest.raises(InvalidOptionError, match="max_length >= 4"):
        reranker.compute_score(PAIRS, max_length=3)
    with pytest.raises(InvalidOptionError, match="max_length >= 4"):
        AutoReranker.from_finetuned(str(toy_checkpoint), model_class=TOY, devices="cpu", max_length=2)


def test_options_of_features_the_kind_lacks_are_named_and_ignored(toy_checkpoint):
    reranker = AutoReranker.from_finetuned(str(toy_checkpoint), model_class=TOY, devices="cpu")
    with pytest.warns(UserWarning, match="prompt=, which has no effect on this kind"):
        assert reranker.compute_score(PAIRS, prompt="a prompt") == reranker.compute_score(PAIRS)
    strict = AutoReranker.from_finetuned(str(toy_checkpoint), model_class=TOY, devices="cpu", strict=True)
    with pytest.raises(TypeError, match="prompt=, which has no effect on this kind"):
        strict.compute_score(PAIRS, prompt="a prompt")


class SmallMemoryKind(ToyKind):
    """The toy kind on a device that runs out of memory on batches of more than two pairs."""

    name = "toy-small-memory"

    def score_batch(self, model: torch.nn.Module, batch: Batch, plan: Plan) -> torch.Tensor:
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return super().score_batch(model, batch, plan)


class BrokenKind(ToyKind):
    name = "toy-broken"

    def score_batch(self, model: torch.nn.Module, batch: Batch, plan: Plan) -> torch.Tensor:
        raise RuntimeError("a real bug, not memory")


@pytest.fixture
def small_memory_kinds():
    register_kind(SmallMemoryKind())
    register_kind(BrokenKind())
    yield
    unregister_kind(SmallMemoryKind.name)
    unregister_kind(BrokenKind.name)


def test_out_of_memory_halves_the_batch_and_retries_with_one_warning(toy_checkpoint, small_memory_kinds):
    reranker = AutoReranker.from_finetuned(str(toy_checkpoint), model_class=SmallMemoryKind.name, devices="cpu")
    pairs = PAIRS * 4
    with pytest.warns(UserWarning, match="Out of device memory on a batch of") as caught:
        scores = reranker.compute_score(pairs, batch_size=12)
    assert len([w for w in caught if "Out of device memory" in str(w.message)]) == 1
    np.testing.assert_allclose(scores, expected_scores(reranker, pairs), rtol=1e-6)


def test_other_errors_are_not_retried(toy_checkpoint, small_memory_kinds):
    reranker = AutoReranker.from_finetuned(str(toy_checkpoint), model_class=BrokenKind.name, devices="cpu")
    with pytest.raises(RuntimeError, match="a real bug"):
        reranker.compute_score(PAIRS)
