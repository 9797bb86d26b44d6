"""Detecting the reranker kind: explicit class, known names, then config.json; loud failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, cached_reranker, fixture_path

from autorerank import AutoReranker, ModelLoadError, RerankerKind, UnknownModelKindError
from autorerank.auto import detect_kind, kind_from_config


@pytest.mark.parametrize(
    "name, kind",
    [
        ("BAAI/bge-reranker-v2-m3", RerankerKind.ENCODER_ONLY_BASE),
        ("jinaai/jina-reranker-v2-base-multilingual", RerankerKind.ENCODER_ONLY_BASE),
        ("/models/bge-reranker-v2-gemma", RerankerKind.DECODER_ONLY_BASE),
        ("/runs/bge-reranker-v2-minicpm-layerwise/checkpoint-500", RerankerKind.DECODER_ONLY_LAYERWISE),
        ("out/bge-reranker-v2.5-gemma2-lightweight/", RerankerKind.DECODER_ONLY_LIGHTWEIGHT),
    ],
)
def test_known_names_decide_when_config_json_does_not(tmp_path, name, kind):
    folder = tmp_path / name.strip("/")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "unknown"}))
    detected, reason = detect_kind(str(folder) + ("/" if name.endswith("/") else ""))
    assert detected == kind and "known model name" in reason


def test_config_json_wins_over_the_folder_name(tmp_path):
    """An LLM fine-tune saved under a cross-encoder's name loads as what its config.json says."""
    folder = _renamed_checkpoint(tmp_path, "llm/bge-reranker-v2-gemma", "bge-reranker-v2-m3")
    reranker = AutoReranker.from_finetuned(str(folder), devices="cpu")
    assert reranker.info.kind == "decoder-only-base"
    assert "config.json" in reranker.info.detected_by
    pairs = [("what is a panda?", "The giant panda is a bear.")]
    original = cached_reranker("llm/bge-reranker-v2-gemma")
    np.testing.assert_allclose(reranker.compute_score(pairs), original.compute_score(pairs), atol=1e-6)


def test_explicit_model_class_wins_and_accepts_strings_and_enums():
    assert detect_kind("anything", "decoder-only-base")[0] == RerankerKind.DECODER_ONLY_BASE
    assert detect_kind("anything", RerankerKind.ENCODER_ONLY_BASE)[0] == RerankerKind.ENCODER_ONLY_BASE
    with pytest.raises(UnknownModelKindError, match="encoder-only-base"):
        detect_kind("anything", "cross-encoder")


def _renamed_checkpoint(tmp_path: Path, fixture: str, name: str) -> Path:
    """A checkpoint folder under an unknown name whose files link to a fixture's."""
    folder = tmp_path / name
    folder.mkdir()
    for file in (FIXTURES / fixture).iterdir():
        os.symlink(file, folder / file.name)
    return folder


@pytest.mark.parametrize(
    "fixture, kind",
    [
        ("enc/bge-reranker-v2-m3", RerankerKind.ENCODER_ONLY_BASE),
        ("enc-bert/bge-reranker-base", RerankerKind.ENCODER_ONLY_BASE),
        ("llm/bge-reranker-v2-gemma", RerankerKind.DECODER_ONLY_BASE),
        ("layerwise/bge-reranker-v2-minicpm-layerwise", RerankerKind.DECODER_ONLY_LAYERWISE),
        ("lightweight/bge-reranker-v2.5-gemma2-lightweight", RerankerKind.DECODER_ONLY_LIGHTWEIGHT),
    ],
)
def test_config_json_decides_for_unknown_names(tmp_path, fixture, kind):
    folder = _renamed_checkpoint(tmp_path, fixture, "my-finetune")
    detected, reason = detect_kind(str(folder))
    assert detected == kind and "config.json" in reason


def test_a_renamed_fine_tune_scores_like_the_original(tmp_path):
    folder = _renamed_checkpoint(tmp_path, "enc/bge-reranker-v2-m3", "checkpoint-42")
    pairs = [("what is a panda?", "The giant panda is a bear."), ("q", "Paris is in France.")]
    renamed = AutoReranker.from_finetuned(str(folder), devices="cpu")
    original = cached_reranker("enc/bge-reranker-v2-m3")
    np.testing.assert_allclose(renamed.compute_score(pairs), original.compute_score(pairs), atol=1e-6)


def test_undetectable_model_lists_the_kinds_and_model_class(tmp_path):
    folder = tmp_path / "mystery"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["T5Model"], "model_type": "t5"}))
    with pytest.raises(UnknownModelKindError, match="model_class=") as caught:
        AutoReranker.from_finetuned(str(folder))
    assert all(kind.value in str(caught.value) for kind in RerankerKind)
    assert "T5Model" in str(caught.value)


def test_missing_path_names_the_path():
    with pytest.raises(ModelLoadError, match="does-not-exist"):
        AutoReranker.from_finetuned("./models/does-not-exist", model_class="encoder-only-base")


@pytest.mark.parametrize(
    "fixture, model_class",
    [("llm/bge-reranker-v2-gemma", "encoder-only-base"), ("enc/bge-reranker-v2-m3", "decoder-only-base")],
)
def test_a_model_class_that_does_not_fit_the_checkpoint_is_an_error(fixture, model_class, capfd):
    """The load error comes first (not one about lengths laid out for the wrong kind), and transformers' load
    report table is not printed before it."""
    capfd.readouterr()
    with pytest.raises(ModelLoadError, match="newly initialised"):
        AutoReranker.from_finetuned(fixture_path(fixture), model_class=model_class, devices="cpu")
    assert capfd.readouterr() == ("", "")


def test_kind_from_config_fields():
    assert (
        kind_from_config({"architectures": ["BertForSequenceClassification"]})
        == RerankerKind.ENCODER_ONLY_BASE
    )
    assert kind_from_config({"architectures": ["Qwen2ForCausalLM"]}) == RerankerKind.DECODER_ONLY_BASE
    assert (
        kind_from_config({"model_type": "minicpm", "start_layer": 8}) == RerankerKind.DECODER_ONLY_LAYERWISE
    )
    assert kind_from_config({"model_type": "cost_wise_gemma"}) == RerankerKind.DECODER_ONLY_LIGHTWEIGHT
    assert kind_from_config({"architectures": ["BertModel"]}) is None


def test_an_unreachable_uncached_hub_name_fails_fast_with_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not in the hub cache"):
        AutoReranker.from_finetuned("BAAI/bge-reranker-v2-m3", cache_dir=str(tmp_path))
