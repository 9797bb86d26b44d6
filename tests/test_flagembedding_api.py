"""FlagEmbedding code runs unchanged: its option names, positional arguments, attributes, methods and exports.

Each test is written the way FlagEmbedding's own examples and public code use the API, with only the import
changed, against every reranker kind; expected values come from autorerank's keyword API on the same fixture.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cached_reranker, fixture_path

import autorerank
from autorerank import (
    AUTO_RERANKER_MAPPING,
    RERANKER_CLASS_MAPPING,
    AbsReranker,
    FlagAutoReranker,
    FlagLLMReranker,
    FlagReranker,
    InvalidOptionError,
    LayerWiseFlagLLMReranker,
    LightWeightFlagLLMReranker,
    RerankerModelClass,
)

FIXTURES = {
    "enc/bge-reranker-v2-m3": FlagReranker,
    "llm/bge-reranker-v2-gemma": FlagLLMReranker,
    "layerwise/bge-reranker-v2-minicpm-layerwise": LayerWiseFlagLLMReranker,
    "lightweight/bge-reranker-v2.5-gemma2-lightweight": LightWeightFlagLLMReranker,
}
PAIRS = [["what is panda?", "hi"], ["what is panda?", "The giant panda is a bear species endemic to China."]]
# What FlagEmbedding's evaluation runner and scripts/add_reranker_score.py pass to every class.
EVERY_NAME = {"prompt": None, "cutoff_layers": None, "compress_layers": [8], "compress_ratio": 1}


@pytest.mark.parametrize("fixture", FIXTURES)
def test_every_flagembedding_option_name_is_accepted_by_every_class(fixture):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reranker = FlagAutoReranker.from_finetuned(
            fixture_path(fixture), devices="cpu", use_fp16=False, **EVERY_NAME
        )
        scores = reranker.compute_score(PAIRS, batch_size=2, normalize=False)
    expected = cached_reranker(fixture).compute_score(PAIRS)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    named = " ".join(str(warning.message) for warning in caught)
    takes = set(reranker.options)
    for name in EVERY_NAME:
        assert (name in named) == (name not in takes), name  # one warning for each name this kind ignores


@pytest.mark.parametrize("fixture, cls", FIXTURES.items())
def test_positional_arguments_follow_flagembeddings_order(fixture, cls):
    path = fixture_path(fixture)
    if cls is FlagReranker:  # (path, use_fp16, query_instruction_for_rerank, ...)
        reranker = cls(path, False, "Q: ", devices="cpu")
        assert reranker.query_instruction_for_rerank == "Q: " and reranker.use_fp16 is False
    else:  # (path, peft_path, use_fp16, use_bf16, query_instruction_for_rerank, ...)
        reranker = cls(path, None, False, False, "Q: ", devices="cpu")
        assert reranker.query_instruction_for_rerank == "Q: " and reranker.use_bf16 is False
    with pytest.raises(TypeError, match="multiple values"):
        cls(path, False, use_fp16=False) if cls is FlagReranker else cls(path, None, peft_path=None)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_flagembedding_attributes_and_methods(fixture):
    reranker = cached_reranker(fixture)
    assert isinstance(reranker, AbsReranker)
    assert (reranker.batch_size, reranker.max_length, reranker.normalize) == (128, 512, False)
    assert reranker.query_max_length is None and reranker.target_devices == ["cpu"]
    assert reranker.get_target_devices("cpu") == ["cpu"]
    detailed = reranker.get_detailed_inputs(PAIRS)
    raw = reranker.compute_score_single_gpu(detailed, device="cpu")  # instructions already in the texts
    np.testing.assert_allclose(raw, reranker.compute_score(PAIRS), atol=1e-5)
    instruction = reranker.query_instruction_for_rerank
    if instruction is not None:
        assert reranker.get_detailed_instruct("{}{}", instruction, "q") == instruction + "q"
    reranker.stop_self_pool()  # no pool on one device: a no-op, as in FlagEmbedding


def test_setting_an_attribute_changes_later_calls_as_in_flagembedding():
    reranker = autorerank.FlagReranker(fixture_path("enc/bge-reranker-v2-m3"), devices="cpu")
    reranker.normalize = True
    assert all(0 < score < 1 for score in reranker.compute_score(PAIRS))
    with pytest.raises(InvalidOptionError, match="normalize must be True or False"):
        reranker.normalize = "yes"
    with pytest.raises(InvalidOptionError, match="fixed when the reranker is loaded"):
        reranker.use_bf16 = True


@pytest.mark.parametrize(
    "fixture", ["enc/bge-reranker-v2-m3", "enc-bert/bge-reranker-base", "llm/bge-reranker-v2-gemma"]
)
def test_tokenizer_is_callable_like_a_hugging_face_tokenizer_with_the_same_ids(fixture):
    reranker = cached_reranker(fixture)
    query, passage = PAIRS[1]
    encoded = reranker.tokenizer(query, passage, truncation=True, max_length=512)
    assert encoded["input_ids"] == reranker.text_tokenizer.backend.encode(query, passage).ids
    assert len(reranker.tokenizer(passage)["input_ids"]) > 5  # counting tokens, as public code does


@pytest.mark.parametrize(
    ("fixture", "padding_side"),
    [
        ("enc/bge-reranker-v2-m3", "right"),
        (
            "llm/bge-reranker-v2-gemma",
            "left",
        ),  # FlagEmbedding's LLM rerankers pad left: the score is at the end
        ("layerwise/bge-reranker-v2-minicpm-layerwise", "left"),
        ("lightweight/bge-reranker-v2.5-gemma2-lightweight", "right"),  # as FlagEmbedding's lightweight class
    ],
)
def test_tokenizer_pads_and_truncates_as_flagembeddings_does(fixture, padding_side):
    """Code written for FlagEmbedding that pads with ``reranker.tokenizer`` reads the last token, and
    ``truncation=True`` without max_length cuts at tokenizer_config.json's model_max_length."""
    config = json.loads((Path(fixture_path(fixture)) / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokenizer = cached_reranker(fixture).tokenizer
    assert tokenizer.padding_side == padding_side
    assert tokenizer.model_max_length == config["model_max_length"]
    long_text = " ".join(["word"] * (2 * config["model_max_length"]))
    assert len(tokenizer(long_text, truncation=True)["input_ids"]) == config["model_max_length"]


def test_module_level_names_mirror_flagembeddings():
    assert RerankerModelClass("decoder-only-layerwise") is autorerank.RerankerKind.DECODER_ONLY_LAYERWISE
    assert RERANKER_CLASS_MAPPING[RerankerModelClass.ENCODER_ONLY_BASE] is FlagReranker
    assert AUTO_RERANKER_MAPPING["bge-reranker-v2-gemma"].model_class is FlagLLMReranker


def test_cuda_on_a_machine_without_it_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    with pytest.raises(InvalidOptionError, match="no cuda device.*devices='cpu'"):
        FlagReranker(fixture_path("enc/bge-reranker-v2-m3"), devices="cuda")


@pytest.mark.slow
def test_several_devices_return_an_array_and_the_pool_methods_work():
    with FlagReranker(fixture_path("enc/bge-reranker-v2-m3"), devices=["cpu", "cpu"]) as reranker:
        scores = reranker.compute_score(PAIRS)
        assert isinstance(scores, np.ndarray) and scores.tolist() == pytest.approx(
            cached_reranker("enc/bge-reranker-v2-m3").compute_score(PAIRS), abs=2e-5
        )
        pool = reranker.start_multi_process_pool()
        again = reranker.encode_multi_process(reranker.get_detailed_inputs(PAIRS), pool)
        np.testing.assert_allclose(again, scores, atol=1e-6)
        reranker.stop_multi_process_pool(pool)
