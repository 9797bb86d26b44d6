"""The public surface is deliberate: pinned names, FlagEmbedding aliases, model info."""

from __future__ import annotations

import pytest
from conftest import cached_reranker

import autorerank

EXPECTED = {
    "AutoReranker",
    "AbsReranker",
    "RerankerModelClass",
    "RERANKER_CLASS_MAPPING",
    "AUTO_RERANKER_MAPPING",
    "Reranker",
    "RerankerKind",
    "EncoderReranker",
    "LLMReranker",
    "LayerWiseLLMReranker",
    "LightweightLLMReranker",
    "RerankResult",
    "ModelInfo",
    "FlagAutoReranker",
    "FlagReranker",
    "FlagLLMReranker",
    "LayerWiseFlagLLMReranker",
    "LightWeightFlagLLMReranker",
    "AutoRerankError",
    "InvalidInputError",
    "InputFileError",
    "InvalidPairTypeError",
    "InvalidOptionError",
    "UnknownOptionError",
    "UnknownModelKindError",
    "ModelLoadError",
    "MissingDependencyError",
    "WorkerError",
    "__version__",
}


def test_all_is_pinned():
    assert set(autorerank.__all__) == EXPECTED
    assert set(autorerank._EXPORTS) | {"__version__"} == EXPECTED  # every public name can be imported
    for name in autorerank.__all__:
        assert hasattr(autorerank, name), name


def test_flagembedding_names_are_the_same_objects():
    assert autorerank.FlagAutoReranker is autorerank.AutoReranker
    assert autorerank.FlagReranker is autorerank.EncoderReranker
    assert autorerank.FlagLLMReranker is autorerank.LLMReranker


def test_auto_reranker_cannot_be_instantiated():
    with pytest.raises(TypeError, match="from_finetuned"):
        autorerank.AutoReranker()


def test_direct_construction_matches_from_finetuned():
    from conftest import fixture_path

    direct = autorerank.FlagReranker(fixture_path("enc/bge-reranker-v2-m3"), devices="cpu")
    auto = cached_reranker("enc/bge-reranker-v2-m3")
    pairs = [("q", "a passage")]
    assert direct.compute_score(pairs) == pytest.approx(auto.compute_score(pairs), abs=1e-6)
    assert direct.info.detected_by.startswith("constructed directly")


def test_info_describes_the_model():
    info = cached_reranker("llm/bge-reranker-v2-gemma").info
    assert info.kind == "decoder-only-base"
    assert info.architecture == "GemmaForCausalLM"
    assert "config.json" in info.detected_by
    assert info.num_parameters > 1000 and info.dtype == "float32" and info.devices == ("cpu",)
    assert info.max_length == 512
