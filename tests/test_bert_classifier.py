"""The lean BERT-family forward computes what transformers computes, and does less work doing it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cached_reranker, fixture_path
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from autorerank import AutoReranker
from autorerank.loading import read_json, read_safetensors
from autorerank.models import linear
from autorerank.models.bert_classifier import FastBertClassifier, fast_bert_classifier, read_bert_classifier

FIXTURE_MODELS = ["enc/bge-reranker-v2-m3", "enc-bert/bge-reranker-base"]


def _padded_batch(model: torch.nn.Module, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded random ids with the model's pad id after each row's length, and two token-type segments."""
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(5, config.vocab_size, (len(lengths), width), generator=generator)  # (B, T)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    inputs = {"input_ids": torch.where(mask.bool(), ids, config.pad_token_id), "attention_mask": mask}
    if config.type_vocab_size > 1:
        inputs["token_type_ids"] = ((torch.arange(width)[None, :] >= 3) & mask.bool()).long()
    return inputs


def _tiny(model_class: type, config_class: type, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    config = config_class(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=80,
        num_labels=1,
        pad_token_id=1,
        **overrides,
    )
    return model_class(config).eval()


def _assert_same_logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    fast = fast_bert_classifier(model)
    assert fast is not None
    with torch.no_grad():
        expected = model(**inputs).logits  # (B, 1)
        got = fast(**inputs).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fixture", FIXTURE_MODELS)
def test_fixture_logits_equal_transformers_on_a_padded_batch(fixture: str) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(fixture_path(fixture)).eval()
    _assert_same_logits(model, _padded_batch(model, [23, 9, 17, 2, 23]))


@pytest.mark.parametrize("hidden_act", ["gelu", "relu", "gelu_new"])
@pytest.mark.parametrize(
    "model_class,config_class",
    [(BertForSequenceClassification, BertConfig), (XLMRobertaForSequenceClassification, XLMRobertaConfig)],
)
def test_activations_with_and_without_a_fused_kernel(
    model_class: type, config_class: type, hidden_act: str
) -> None:
    model = _tiny(model_class, config_class, hidden_act=hidden_act, type_vocab_size=2)
    _assert_same_logits(model, _padded_batch(model, [12, 30, 5]))


def test_the_portable_path_gives_the_same_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without oneDNN (CUDA, other torch builds) the layer runs on F.linear: same numbers."""
    model = AutoModelForSequenceClassification.from_pretrained(fixture_path(FIXTURE_MODELS[1])).eval()
    monkeypatch.setattr(linear, "onednn_linear", lambda: None)
    _assert_same_logits(model, _padded_batch(model, [14, 6, 20]))


def test_the_last_layer_runs_on_the_first_token_only() -> None:
    model = AutoModelForSequenceClassification.from_pretrained(fixture_path(FIXTURE_MODELS[0])).eval()
    fast = fast_bert_classifier(model)
    assert fast is not None
    seen: list[tuple[int, ...]] = []
    hooks = [
        layer.output_norm.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
        for layer in fast.layers
    ]
    inputs = _padded_batch(model, [40, 9, 30])
    with torch.no_grad():
        fast(**inputs)
    for hook in hooks:
        hook.remove()
    width = model.config.hidden_size
    every_token, first_tokens = (
        linear.padded_rows(torch.zeros(rows, width)).shape[0] for rows in (3 * 40, 3)
    )
    assert first_tokens < every_token
    assert seen == [(every_token, width)] * (len(fast.layers) - 1) + [(first_tokens, width)]


def test_it_keeps_the_parameter_count_and_releases_the_separate_projections() -> None:
    model = AutoModelForSequenceClassification.from_pretrained(fixture_path(FIXTURE_MODELS[1])).eval()
    fast = fast_bert_classifier(model)
    assert fast is not None
    assert sum(p.numel() for p in fast.parameters()) == sum(p.numel() for p in model.parameters())
    names = {name for name, _ in fast.named_parameters()}
    assert not any(".query." in name or ".key." in name or ".value." in name for name in names)


def test_models_it_does_not_know_keep_the_transformers_forward() -> None:
    relative = _tiny(BertForSequenceClassification, BertConfig, position_embedding_type="relative_key")
    assert fast_bert_classifier(relative) is None

    class Custom(BertForSequenceClassification):  # a subclass may change forward: not ours to replace
        pass

    assert fast_bert_classifier(Custom(relative.config)) is None


@pytest.mark.parametrize("fixture", FIXTURE_MODELS)
def test_the_torch_backend_scores_through_it(fixture: str) -> None:
    reranker = cached_reranker(fixture)
    assert isinstance(reranker.model, FastBertClassifier)
    assert reranker.info.num_parameters == sum(
        p.numel()
        for p in AutoModelForSequenceClassification.from_pretrained(fixture_path(fixture)).parameters()
    )


def _read(path: str, dtype: torch.dtype = torch.float32) -> FastBertClassifier | None:
    return read_bert_classifier(read_json(path, "config.json"), lambda: read_safetensors(path, dtype))


@pytest.mark.parametrize("fixture", FIXTURE_MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_built_from_the_checkpoint_it_equals_transformers(fixture: str, dtype: torch.dtype) -> None:
    """The module read without transformers computes transformers' logits, in the dtype asked for."""
    lean = _read(fixture_path(fixture), dtype)
    assert isinstance(lean, FastBertClassifier)
    model = AutoModelForSequenceClassification.from_pretrained(fixture_path(fixture), dtype=dtype).eval()
    assert {p.dtype for p in lean.parameters()} == {dtype}
    assert sum(p.numel() for p in lean.parameters()) == sum(p.numel() for p in model.parameters())
    inputs = _padded_batch(model, [23, 9, 17, 2, 23])
    with torch.no_grad():
        expected, got = model(**inputs).logits, lean.eval()(**inputs).logits
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)


def _modules_after_scoring(fixture: str, backend: str) -> tuple[list[float], list[str]]:
    """Scores of two pairs from a fresh process, and the transformers modules that process imported."""
    code = (
        "import sys\n"
        "from autorerank import AutoReranker\n"
        "reranker = AutoReranker.from_finetuned(sys.argv[1], devices='cpu', backend=sys.argv[2])\n"
        "print(reranker.compute_score([('what is a panda?', 'a bear'), ('hi', 'there')]))\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'transformers'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, fixture_path(fixture), backend],
        capture_output=True,
        text=True,
        check=True,
    )
    scores, imported = done.stdout.strip().splitlines()
    return json.loads(scores), json.loads(imported.replace("'", '"'))


@pytest.mark.parametrize("fixture", FIXTURE_MODELS)
def test_scoring_a_bert_family_checkpoint_never_imports_transformers(fixture: str) -> None:
    """transformers' modelling import is about 2 s of a command's cold start; the torch path does without it."""
    scores, imported = _modules_after_scoring(fixture, "torch")
    assert imported == []
    expected = cached_reranker(fixture).compute_score([("what is a panda?", "a bear"), ("hi", "there")])
    assert scores == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("fixture", FIXTURE_MODELS)
def test_openvino_converts_the_lean_module_without_transformers_models(fixture: str) -> None:
    """OpenVINO traces the lean module (F.linear under the tracer): no transformers model is built, and the
    modelling import's 150 MB of memory is saved; only the config class is read (``reranker.model.config``)."""
    pytest.importorskip("openvino")
    scores, imported = _modules_after_scoring(fixture, "openvino")
    models = [
        name
        for name in imported
        if name.startswith("transformers.models.") and name.split(".")[-1].startswith("modeling_")
    ]
    assert models == ["transformers.models.auto.modeling_auto"]  # auto's name tables, not a model's code
    assert "transformers.modeling_utils" not in imported
    expected = cached_reranker(fixture).compute_score([("what is a panda?", "a bear"), ("hi", "there")])
    assert scores == pytest.approx(expected, abs=1e-4)


def test_weights_that_do_not_fit_are_left_to_transformers() -> None:
    """A missing or misshapen weight means transformers loads the checkpoint (and reports what is wrong)."""
    path = fixture_path(FIXTURE_MODELS[1])
    config = read_json(path, "config.json")
    weights = read_safetensors(path, torch.float32)
    assert weights is not None and read_bert_classifier(config, lambda: weights) is not None
    missing = {name: tensor for name, tensor in weights.items() if name != "classifier.bias"}
    assert read_bert_classifier(config, lambda: missing) is None
    reshaped = {**weights, "bert.pooler.dense.bias": torch.zeros(3)}
    assert read_bert_classifier(config, lambda: reshaped) is None
    assert (
        read_bert_classifier({**config, "num_labels": 2, "id2label": {"0": "a", "1": "b"}}, lambda: weights)
        is None
    )
    assert read_bert_classifier({**config, "hidden_act": "gelu_new"}, lambda: weights) is None
    custom = {**config, "auto_map": {"AutoModelForSequenceClassification": "modeling.Custom"}}
    assert read_bert_classifier(custom, lambda: weights) is None


def test_an_activation_it_does_not_compute_itself_still_scores_through_the_fused_layers(
    tmp_path: Path,
) -> None:
    """gelu_new is not read natively: transformers loads the model and the fused module borrows its activation."""
    model = _tiny(BertForSequenceClassification, BertConfig, hidden_act="gelu_new", type_vocab_size=2)
    model.config.architectures = ["BertForSequenceClassification"]
    model.save_pretrained(tmp_path)
    shutil.copy(Path(fixture_path(FIXTURE_MODELS[1])) / "tokenizer.json", tmp_path)
    assert _read(str(tmp_path)) is None
    reranker = AutoReranker.from_finetuned(str(tmp_path), devices="cpu", max_length=80)
    assert isinstance(reranker.model, FastBertClassifier)
    inputs = _padded_batch(model, [12, 30, 5])
    with torch.no_grad():
        torch.testing.assert_close(
            reranker.model(**inputs).logits, model(**inputs).logits, rtol=1e-5, atol=1e-5
        )


def test_a_hub_checkpoint_in_the_cache_is_read_without_transformers(tmp_path: Path) -> None:
    """A hub name resolves through the hub cache (offline in tests) to the same weights as its folder."""
    snapshot = tmp_path / "models--org--bge-reranker-base" / "snapshots" / "0123abcd"
    shutil.copytree(fixture_path(FIXTURE_MODELS[1]), snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    from_hub = read_safetensors("org/bge-reranker-base", torch.float32, cache_dir=str(tmp_path))
    from_folder = read_safetensors(fixture_path(FIXTURE_MODELS[1]), torch.float32)
    assert from_hub is not None and from_folder is not None and from_hub.keys() == from_folder.keys()
    assert all(torch.equal(from_hub[name], from_folder[name]) for name in from_folder)
