"""The layer-wise LLM reranker (bge-reranker-v2-minicpm-layerwise) on autorerank's native MiniCPM code."""

from __future__ import annotations

import functools
import json
import random
import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import fixture_path, golden_case, golden_records, tolerance
from safetensors.torch import load_file, save_file

from autorerank import AutoReranker, ModelLoadError
from autorerank.models.minicpm_layerwise import (
    MiniCPMLayerwiseConfig,
    MiniCPMLayerwiseModel,
    load_layerwise_model,
)

FIXTURE = "layerwise/bge-reranker-v2-minicpm-layerwise"
ERROR_CASES = {"lw-cutoff-partly-invalid", "err-lw-cutoff-below-start"}  # autorerank raises for both
PARITY_CASES = [record for record in golden_records("layerwise/") if record["case_id"] not in ERROR_CASES]


@functools.cache
def _reranker(loader: str = "auto", init_kwargs: str = '{"devices": "cpu"}'):
    model_class = None if loader == "auto" else loader
    return AutoReranker.from_finetuned(fixture_path(FIXTURE), model_class, **json.loads(init_kwargs))


def _for(record):
    return _reranker(record["loader"], json.dumps(record["init_kwargs"], sort_keys=True))


def _expected(record):
    if record["case_id"] == "lw-cutoff-unsorted":
        # The recorded scores pair layer 6's states with layer 4's head (a reference bug); each layer's own
        # scores, in the order asked for, are those of the sorted request.
        layer4, _, layer6 = golden_case("lw-cutoff-multi-init")["scores"]
        assert record["call_kwargs"]["cutoff_layers"] == [6, 4]
        return [layer6, layer4]
    return record["scores"]


def _short_pairs():
    """The fixture pairs without the three ~600-token ones, de-duplicated: quick to score, no tied scores."""
    pairs = golden_case("lw-auto-default")["pairs"]
    unique = list(
        dict.fromkeys((query, passage) for query, passage in pairs if len(query) + len(passage) < 400)
    )
    return [list(pair) for pair in unique]


@pytest.mark.parametrize("record", PARITY_CASES, ids=lambda r: r["case_id"])
def test_scores_match_flagembedding(record):
    pairs = record["pairs"] if record["input_mode"] == "list" else tuple(record["pairs"][0])
    scores = _for(record).compute_score(pairs, **record["call_kwargs"])
    expected = _expected(record)
    if isinstance(expected[0], list):
        assert len(scores) == len(expected) and all(isinstance(row, list) for row in scores)
    else:
        assert all(isinstance(score, float) for score in scores)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=tolerance(FIXTURE))


@pytest.mark.parametrize("case_id", sorted(ERROR_CASES))
def test_out_of_range_cutoff_layer_raises_naming_the_valid_layers(case_id):
    record = golden_case(case_id)
    with pytest.raises(ValueError, match=r"\[4, 5, 6\]"):
        _for(record).compute_score(record["pairs"], **record["call_kwargs"])


@pytest.mark.parametrize("layers", [7, [4, 7], [0], []])
def test_invalid_cutoff_layers_are_refused_at_construction(layers):
    with pytest.raises(ValueError):
        AutoReranker.from_finetuned(fixture_path(FIXTURE), devices="cpu", cutoff_layers=layers)


def test_one_layer_in_a_list_gives_a_flat_list_and_several_give_one_list_per_layer():
    reranker, pairs = _reranker(), _short_pairs()[:3]
    flat = reranker.compute_score(pairs, cutoff_layers=[5])
    assert len(flat) == 3 and all(isinstance(score, float) for score in flat)
    nested = reranker.compute_score(pairs, cutoff_layers=[5, 4, 5])
    assert [len(row) for row in nested] == [3, 3, 3]
    np.testing.assert_allclose(nested[0], flat, rtol=0, atol=1e-6)
    np.testing.assert_allclose(nested[2], flat, rtol=0, atol=1e-6)
    np.testing.assert_allclose(nested[1], reranker.compute_score(pairs, cutoff_layers=4), rtol=0, atol=1e-6)


def test_scores_do_not_depend_on_batch_size_or_order():
    reranker, pairs = _reranker(), _short_pairs()
    reference = np.array(reranker.compute_score(pairs))
    order = list(range(len(pairs)))
    random.Random(7).shuffle(order)
    shuffled = np.empty(len(pairs))
    shuffled[order] = reranker.compute_score([pairs[i] for i in order], batch_size=5)
    singles = np.array(reranker.compute_score(pairs, batch_size=1))
    # Positions count from each row's first real token, so padding cannot move a score beyond float noise.
    np.testing.assert_allclose(shuffled, reference, rtol=0, atol=1e-4)
    np.testing.assert_allclose(singles, reference, rtol=0, atol=1e-4)


def test_layers_after_the_deepest_cutoff_are_not_run():
    reranker, pairs = _reranker(), _short_pairs()[:2]
    calls = [0] * len(reranker.model.model.layers)
    hooks = [
        layer.register_forward_hook(lambda *_, index=index: calls.__setitem__(index, calls[index] + 1))
        for index, layer in enumerate(reranker.model.model.layers)
    ]
    try:
        reranker.compute_score(pairs, cutoff_layers=4)
        after_4 = list(calls)
        reranker.compute_score(pairs, cutoff_layers=[5, 4])
    finally:
        for hook in hooks:
            hook.remove()
    assert after_4 == [1, 1, 1, 1, 0, 0]
    assert calls == [2, 2, 2, 2, 1, 0]


def test_bf16_ranks_like_fp32():
    pairs = _short_pairs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bf16 on the CPU is a legitimate request: no warning
        bf16 = AutoReranker.from_finetuned(fixture_path(FIXTURE), devices="cpu", use_bf16=True)
    assert bf16.info.dtype == "bfloat16"
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    low = np.array(bf16.compute_score(pairs))
    full = np.array(_reranker().compute_score(pairs))
    ranks_low, ranks_full = np.argsort(np.argsort(low)), np.argsort(np.argsort(full))
    spearman = np.corrcoef(ranks_low, ranks_full)[0, 1]
    assert spearman > 0.97
    np.testing.assert_allclose(low, full, rtol=0, atol=0.5)


def test_default_precision_is_float32_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reranker = AutoReranker.from_finetuned(fixture_path(FIXTURE), devices="cpu")
    assert reranker.info.dtype == "float32"
    assert reranker.info.kind == "decoder-only-layerwise"


def test_instructions_are_plain_prefixes():
    pairs = _short_pairs()[:4]
    explicit = [[f"A: {query}", f"B: {passage}"] for query, passage in pairs]
    bare = AutoReranker.from_finetuned(
        fixture_path(FIXTURE),
        devices="cpu",
        query_instruction_for_rerank=None,
        passage_instruction_for_rerank=None,
    )
    np.testing.assert_allclose(
        bare.compute_score(explicit), _reranker().compute_score(pairs), rtol=0, atol=1e-6
    )


def test_model_parameters_match_the_checkpoint_names_and_shapes():
    config = MiniCPMLayerwiseConfig.from_pretrained(fixture_path(FIXTURE))
    model = MiniCPMLayerwiseModel(config)
    checkpoint = load_file(f"{fixture_path(FIXTURE)}/model.safetensors")
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == {
        name: tuple(t.shape) for name, t in checkpoint.items()
    }


def test_a_checkpoint_missing_a_head_fails_to_load(tmp_path):
    source = fixture_path(FIXTURE)
    weights = load_file(f"{source}/model.safetensors")
    del weights["lm_head.1.linear_head.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(f"{source}/config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match="lm_head.1"):
        load_layerwise_model(str(tmp_path), dtype=torch.float32)


def test_another_architecture_is_refused():
    with pytest.raises(ModelLoadError, match="gemma"):
        AutoReranker.from_finetuned(
            fixture_path("llm/bge-reranker-v2-gemma"), "decoder-only-layerwise", devices="cpu"
        )


def test_layer_scores_needs_left_padding():
    model = _reranker().model
    ids = torch.tensor([[1, 5, 6, 0]])
    # An internal invariant (the kind pads on the left), not user-facing validation.
    with pytest.raises(AssertionError, match="left-padded"):
        model.layer_scores(ids, (ids != 0).long(), [6])


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft calls a deprecated API
def test_peft_adapter_is_merged(tmp_path):
    peft = pytest.importorskip("peft")
    base = load_layerwise_model(fixture_path(FIXTURE), dtype=torch.float32)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapted = peft.get_peft_model(base, config)
    adapted.save_pretrained(str(tmp_path))
    merged = AutoReranker.from_finetuned(fixture_path(FIXTURE), devices="cpu", peft_path=str(tmp_path))

    # Expected: the same low-rank update, added to the weights by hand.
    by_hand = load_layerwise_model(fixture_path(FIXTURE), dtype=torch.float32)
    with torch.no_grad():
        for name, module in adapted.base_model.model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                delta = module.lora_B["default"].weight @ module.lora_A["default"].weight * (8 / 4)
                by_hand.get_submodule(name).weight += delta
    pairs = _short_pairs()[:4]
    merged_scores = np.array(merged.compute_score(pairs))
    merged.model = by_hand  # score the hand-merged weights through the same pipeline
    np.testing.assert_allclose(merged_scores, merged.compute_score(pairs), rtol=0, atol=1e-5)
    plain = np.array(_reranker().compute_score(pairs))
    assert np.abs(merged_scores - plain).max() > 1e-3  # the adapter really changed the model


def _ids_and_mask():
    ids = torch.tensor([[0, 0, 0, 1, 17, 23, 99, 5], [1, 8, 300, 41, 42, 43, 201, 7]])
    return ids, (torch.arange(8) >= torch.tensor([[3], [0]])).long()


def test_sharded_checkpoint_round_trips(tmp_path):
    model = load_layerwise_model(fixture_path(FIXTURE), dtype=torch.float32)
    model.save_pretrained(str(tmp_path), max_shard_size="400KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    reloaded = load_layerwise_model(str(tmp_path), dtype=torch.float32)
    ids, mask = _ids_and_mask()
    torch.testing.assert_close(
        reloaded.layer_scores(ids, mask, [4, 6]), model.layer_scores(ids, mask, [4, 6]), rtol=0, atol=0
    )


def test_grouped_query_attention_equals_repeated_heads():
    small = {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 3}
    small |= {
        "num_attention_heads": 4,
        "start_layer": 2,
        "scale_emb": 4,
        "scale_depth": 1.2,
        "pad_token_id": 0,
    }
    torch.manual_seed(0)
    grouped = MiniCPMLayerwiseModel(MiniCPMLayerwiseConfig(num_key_value_heads=2, **small)).eval()
    full = MiniCPMLayerwiseModel(MiniCPMLayerwiseConfig(**small)).eval()
    weights = grouped.state_dict()
    for name, tensor in list(weights.items()):
        if name.endswith(
            ("k_proj.weight", "v_proj.weight")
        ):  # (kv * D, H): each kv head serves 2 query heads
            weights[name] = tensor.view(2, 8, 32).repeat_interleave(2, dim=0).reshape(32, 32)
    full.load_state_dict(weights)
    ids, mask = _ids_and_mask()
    ids = ids % 400
    torch.testing.assert_close(
        grouped.layer_scores(ids, mask, [2, 3]), full.layer_scores(ids, mask, [2, 3]), rtol=0, atol=1e-5
    )
