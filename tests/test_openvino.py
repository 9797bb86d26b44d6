"""The OpenVINO backend, for cross-encoders and LLM rerankers: fp32 parity with torch, int8 ranking, refused
options."""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
from conftest import assert_int8_keeps_ranking, fixture_path, golden_case, score_module, tolerance

pytest.importorskip("openvino")

from autorerank import AutoReranker
from autorerank.backends import openvino as openvino_backend
from autorerank.backends.openvino import OpenVinoRuntime, load_openvino_runtime
from autorerank.errors import InvalidOptionError, MissingDependencyError, ModelLoadError
from autorerank.kinds.base import ScoreModule

pytestmark = pytest.mark.openvino

CASES = {"enc": "enc-auto-default", "enc-bert": "bert-auto-default", "llm": "llm-auto-default"}
KINDS = {"enc": "encoder-only-base", "enc-bert": "encoder-only-base", "llm": "decoder-only-base"}
# Per-group activation scales keep the ranking: the tiny random cross-encoders measure 0.99+; the tiny random
# Gemma, whose 40 golden scores crowd into a range of ~4, measures 0.995, so it gets more room for near-ties.
MIN_INT8_SPEARMAN = {"enc": 0.98, "enc-bert": 0.98, "llm": 0.95}


@functools.cache
def reranker(name: str, backend: str = "torch", quantize: str | None = None):
    fixture = fixture_path(golden_case(CASES[name])["fixture"])
    extra = {} if backend == "torch" else {"backend": backend, "quantize": quantize}
    return AutoReranker.from_finetuned(fixture, devices="cpu", **extra)


def _score_module(name: str) -> ScoreModule:
    return score_module(KINDS[name], golden_case(CASES[name])["fixture"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_fp32_scores_match_torch_and_golden(name):
    record = golden_case(CASES[name])
    openvino = reranker(name, "openvino")
    scores = openvino.compute_score(record["pairs"])
    torch_scores = reranker(name).compute_score(record["pairs"])
    print(f"{name}: max |openvino - torch| = {np.max(np.abs(np.subtract(scores, torch_scores))):.3g}")
    atol = tolerance(record["fixture"])
    np.testing.assert_allclose(scores, torch_scores, rtol=0, atol=atol)
    np.testing.assert_allclose(scores, record["scores"], rtol=0, atol=atol)
    assert isinstance(openvino.runtime, OpenVinoRuntime) and openvino.model is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_int8_keeps_the_fp32_ranking(name):
    pairs = golden_case(CASES[name])["pairs"]
    fp32 = reranker(name, "openvino").compute_score(pairs)
    int8 = reranker(name, "openvino", "int8").compute_score(pairs)
    assert_int8_keeps_ranking(int8, fp32, f"{name} openvino", MIN_INT8_SPEARMAN[name])


# Per layer: BERT has query, key, value, attention output and two feed-forward, then the pooler and the head;
# Gemma has query, key, value, output, gate, up and down, and its answer row is read, not multiplied.
@pytest.mark.parametrize("name, per_layer, after_layers", [("enc-bert", 6, 2), ("llm", 7, 0)])
def test_int8_replaces_every_linear_weight(name, per_layer, after_layers):
    ov = pytest.importorskip("openvino")
    module = _score_module(name)
    converted = openvino_backend._convert(ov, module)
    linear_layers = per_layer * module.config.num_hidden_layers + after_layers
    assert openvino_backend._int8_weights(ov, converted) == linear_layers
    assert openvino_backend._int8_weights(ov, converted) == 0  # nothing float32 is left to replace


def test_int8_replaces_every_linear_weight_of_the_lean_classifier():
    """What the reranker converts: fused QKV per layer, the last layer's query and key/value halves apart."""
    ov = pytest.importorskip("openvino")
    module = score_module(KINDS["enc-bert"], golden_case(CASES["enc-bert"])["fixture"], scoring_only=True)
    assert type(module.model).__name__ == "FastBertClassifier"
    converted = openvino_backend._convert(ov, module)
    layers = module.config.num_hidden_layers
    assert openvino_backend._int8_weights(ov, converted) == 4 * layers + 1 + 2  # + pooler and head
    assert openvino_backend._int8_weights(ov, converted) == 0


@pytest.mark.parametrize("name", ["enc-bert", "llm"])
def test_batching_and_padding_do_not_change_fp32_scores(name):
    pairs = golden_case(CASES[name])["pairs"]
    model = reranker(name, "openvino")
    together = model.compute_score(pairs, batch_size=64)
    alone = model.compute_score(pairs, batch_size=1)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "name, architecture", [("enc", "XLMRobertaForSequenceClassification"), ("llm", "GemmaForCausalLM")]
)
def test_info_reads_like_the_torch_model(name, architecture):
    info, torch_info = reranker(name, "openvino", "int8").info, reranker(name).info
    assert info.num_parameters == torch_info.num_parameters > 0
    assert info.architecture == torch_info.architecture == architecture
    assert (info.backend, info.dtype, torch_info.backend) == ("openvino", "float32", "torch")


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_a_conversion_that_changes_the_scores_is_refused(monkeypatch, quantize):
    monkeypatch.setattr(openvino_backend, "max_score_error", lambda module, run: 0.5)
    with pytest.raises(ModelLoadError, match="does not reproduce the torch scores.*backend='torch'"):
        load_openvino_runtime(_score_module("enc"), quantize=quantize)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"backend": "openvino", "quantize": "int4"}, "quantize must be"),
        ({"backend": "openvino", "onnx_dir": "/tmp"}, "needs backend='onnx'"),
        ({"backend": "openvino", "use_bf16": True}, "float32"),
        ({"backend": "openvino", "devices": "cuda:0"}, "CPU only|no cuda device"),
    ],
)
@pytest.mark.parametrize("fixture", ["enc-bert/bge-reranker-base", "llm/bge-reranker-v2-gemma"])
def test_bad_options_are_refused(fixture, options, message):
    options = {"devices": "cpu", **options}
    with pytest.raises(InvalidOptionError, match=message):
        AutoReranker.from_finetuned(fixture_path(fixture), **options)


def test_missing_openvino_names_the_extra(monkeypatch):
    module = _score_module("enc")
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"autorerank\[openvino\]"):
        load_openvino_runtime(module, quantize=None)


def test_int8_runs_bf16_between_its_gemms_only_where_the_cpu_has_it_natively():
    ov = pytest.importorskip("openvino")
    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")

    def precision(model):
        return model.runtime.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    assert precision(reranker("enc", "openvino")) == "f32"
    assert precision(reranker("enc", "openvino", "int8")) == ("bf16" if native else "f32")
