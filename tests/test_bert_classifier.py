"""The lean BERT-family forward computes what transformers computes, and does less work doing it."""

from __future__ import annotations

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

from autorerank.models import bert_classifier
from autorerank.models.bert_classifier import FastBertClassifier, fast_bert_classifier

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
    monkeypatch.setattr(bert_classifier, "onednn_linear", lambda: None)
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
    inputs = _padded_batch(model, [11, 7])
    with torch.no_grad():
        fast(**inputs)
    for hook in hooks:
        hook.remove()
    width = model.config.hidden_size
    assert seen == [(2, 11, width)] * (len(fast.layers) - 1) + [(2, 1, width)]


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
