"""The OpenVINO backend: fp32 parity with torch, int8 ranking, refused options."""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
from conftest import assert_int8_keeps_ranking, fixture_path, golden_case

pytest.importorskip("openvino")

import torch
from transformers import AutoModelForSequenceClassification

from autorerank import AutoReranker
from autorerank.backends import openvino as openvino_backend
from autorerank.backends.openvino import OpenVinoSequenceClassifier, load_openvino_model
from autorerank.errors import InvalidOptionError, MissingDependencyError, ModelLoadError

pytestmark = pytest.mark.openvino

CASES = {"enc": "enc-auto-default", "enc-bert": "bert-auto-default"}
# Per-group activation scales keep the ranking; the tiny random fixtures measure 0.99+.
MIN_INT8_SPEARMAN = 0.98


@functools.cache
def reranker(name: str, backend: str = "torch", quantize: str | None = None):
    fixture = fixture_path(golden_case(CASES[name])["fixture"])
    extra = {} if backend == "torch" else {"backend": backend, "quantize": quantize}
    return AutoReranker.from_finetuned(fixture, devices="cpu", **extra)


def _torch_model(name: str) -> torch.nn.Module:
    fixture = fixture_path(golden_case(CASES[name])["fixture"])
    return AutoModelForSequenceClassification.from_pretrained(fixture).eval()


@pytest.mark.parametrize("name", sorted(CASES))
def test_fp32_scores_match_torch_and_golden(name):
    record = golden_case(CASES[name])
    scores = reranker(name, "openvino").compute_score(record["pairs"])
    np.testing.assert_allclose(scores, reranker(name).compute_score(record["pairs"]), rtol=0, atol=1e-4)
    np.testing.assert_allclose(scores, record["scores"], rtol=0, atol=1e-4)
    assert isinstance(reranker(name, "openvino").model, OpenVinoSequenceClassifier)


@pytest.mark.parametrize("name", sorted(CASES))
def test_int8_keeps_the_fp32_ranking(name):
    pairs = golden_case(CASES[name])["pairs"]
    fp32 = reranker(name, "openvino").compute_score(pairs)
    int8 = reranker(name, "openvino", "int8").compute_score(pairs)
    assert_int8_keeps_ranking(int8, fp32, f"{name} openvino", MIN_INT8_SPEARMAN)


def test_int8_replaces_every_linear_weight():
    ov = pytest.importorskip("openvino")
    model = _torch_model("enc-bert")
    converted = openvino_backend._convert(ov, model)
    # Per layer: query, key, value, attention output and two feed-forward; then the pooler and the head.
    linear_layers = 6 * model.config.num_hidden_layers + 2
    assert openvino_backend._int8_weights(ov, converted) == linear_layers
    assert openvino_backend._int8_weights(ov, converted) == 0  # nothing float32 is left to replace


def test_batching_and_padding_do_not_change_fp32_scores():
    pairs = golden_case(CASES["enc-bert"])["pairs"]
    model = reranker("enc-bert", "openvino")
    together = model.compute_score(pairs, batch_size=64)
    alone = model.compute_score(pairs, batch_size=1)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


def test_info_reads_like_the_torch_model():
    info, torch_info = reranker("enc", "openvino", "int8").info, reranker("enc").info
    assert info.num_parameters == torch_info.num_parameters > 0
    assert info.architecture == torch_info.architecture == "XLMRobertaForSequenceClassification"


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_conversion_that_changes_the_scores_is_refused(monkeypatch, quantize):
    monkeypatch.setattr(openvino_backend, "max_logit_error", lambda model, run: 0.5)
    with pytest.raises(ModelLoadError, match="does not reproduce"):
        load_openvino_model(_torch_model("enc"), quantize=quantize)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"backend": "openvino", "quantize": "int4"}, "quantize must be"),
        ({"backend": "openvino", "onnx_dir": "/tmp"}, "needs backend='onnx'"),
        ({"backend": "openvino", "use_bf16": True}, "float32"),
        ({"backend": "openvino", "devices": "cuda:0"}, "CPU only"),
    ],
)
def test_bad_options_are_refused(options, message):
    options = {"devices": "cpu", **options}
    with pytest.raises(InvalidOptionError, match=message):
        AutoReranker.from_finetuned(fixture_path("enc-bert/bge-reranker-base"), **options)


def test_missing_openvino_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"autorerank\[openvino\]"):
        load_openvino_model(_torch_model("enc"), quantize=None)
