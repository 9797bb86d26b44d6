"""The lightweight kind (cost-wise Gemma2): golden parity, options, early exit, compression, loading."""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import fixture_path, golden_case, golden_records, tolerance

from autorerank import AutoReranker, InvalidOptionError, ModelLoadError
from autorerank.models.gemma2_lightweight import (
    CostWiseGemmaConfig,
    LightweightGemma2Reranker,
    compress_passages,
    load_lightweight_model,
    valid_cutoff_layers,
)
from autorerank.registry import kind_named

FIXTURE = "lightweight/bge-reranker-v2.5-gemma2-lightweight"
# The reference dropped off-grid cutoff layers when some were valid; autorerank raises instead (see its note).
QUIRK_CASES = {"lt-cutoff-partly-invalid"}
PARITY_CASES = [
    r for r in golden_records("lightweight/") if r["error"] is None and r["case_id"] not in QUIRK_CASES
]
PAIRS = golden_case("lt-auto-default")["pairs"]
ATOL = tolerance(FIXTURE)


@functools.cache
def _reranker(loader: str = "auto", init_kwargs: str = '{"devices": "cpu"}'):
    return AutoReranker.from_finetuned(
        fixture_path(FIXTURE), None if loader == "auto" else loader, **json.loads(init_kwargs)
    )


def _for(record):
    return _reranker(record["loader"], json.dumps(record["init_kwargs"], sort_keys=True))


def _score(record, **overrides):
    pairs = record["pairs"] if record["input_mode"] == "list" else tuple(record["pairs"][0])
    return _for(record).compute_score(pairs, **{**record["call_kwargs"], **overrides})


@pytest.mark.parametrize("record", PARITY_CASES, ids=lambda r: r["case_id"])
def test_scores_match_flagembedding(record, recwarn):
    scores = _score(record)
    if record["return_kind"] == "list":
        assert all(isinstance(score, float) for score in scores)
    else:  # several cutoff layers: one list per layer
        assert len(scores) == len(record["scores"]) and all(isinstance(row, list) for row in scores)
    np.testing.assert_allclose(scores, record["scores"], rtol=0, atol=ATOL)
    deprecated = [
        w
        for w in recwarn
        if issubclass(w.category, DeprecationWarning) and "compress_layer" in str(w.message)
    ]
    assert bool(deprecated) == ("compress_layer" in record["call_kwargs"])


@pytest.mark.parametrize("case_id", ["lt-cutoff-partly-invalid", "err-lt-cutoff-not-in-grid"])
def test_off_grid_cutoff_layer_raises_naming_valid_layers(case_id):
    with pytest.raises(ValueError, match=r"\[4, 6, 8, 10\]"):
        _score(golden_case(case_id))


def test_off_grid_cutoff_layer_is_rejected_at_construction():
    with pytest.raises(InvalidOptionError, match="cutoff_layers"):
        AutoReranker.from_finetuned(fixture_path(FIXTURE), devices="cpu", cutoff_layers=[7])


@pytest.mark.parametrize("layers", [[999], [10], [-1], [4, 12]])
def test_compress_layers_outside_the_model_are_rejected(layers):
    """The model has layers 0..9; the reference silently ignored the others (so nothing was compressed there)."""
    with pytest.raises(InvalidOptionError, match=r"compress_layers .* integers from 0 to 9"):
        _reranker().compute_score(PAIRS[:2], compress_ratio=2, compress_layers=layers)
    with pytest.raises(InvalidOptionError, match=r"integers from 0 to 9"):
        _reranker().compute_score(PAIRS[:2], compress_layers=layers)  # also while the ratio is 1
    with pytest.raises(InvalidOptionError, match=r"integers from 0 to 9"):
        AutoReranker.from_finetuned(fixture_path(FIXTURE), devices="cpu", compress_layers=layers)


def test_compress_layers_within_the_model_are_accepted():
    for layers in ([0], [9], [1, 9]):
        assert np.all(
            np.isfinite(_reranker().compute_score(PAIRS[:2], compress_ratio=2, compress_layers=layers))
        )


def test_default_compress_layers_pass_on_a_shallow_model_only_while_nothing_is_compressed():
    """FlagEmbedding's default [8] means nothing at ratio 1, so a model of 8 layers or fewer still loads with
    default options; asking for compression there names the valid layers."""
    kind, options = kind_named("decoder-only-lightweight"), _reranker().options
    shallow = {**_reranker().config, "num_hidden_layers": 8}
    assert kind.plan(shallow, options).compress_layers == frozenset()
    with pytest.raises(InvalidOptionError, match="integers from 0 to 7"):
        kind.plan(shallow, options.replace({"compress_ratio": 2}))


@pytest.mark.parametrize("ratio", [3, 16])
def test_unsupported_compress_ratio_is_rejected(ratio):
    with pytest.raises(ValueError, match=r"compress_ratio must be one of \[1, 2, 4, 8\]"):
        _reranker().compute_score(PAIRS[:2], compress_ratio=ratio)


def test_deprecated_compress_layer_in_constructor_warns_and_applies():
    with pytest.warns(DeprecationWarning, match="compress_layers"):
        reranker = AutoReranker.from_finetuned(
            fixture_path(FIXTURE), devices="cpu", compress_ratio=2, compress_layer=[6]
        )
    record = golden_case("lt-compress_layer-deprecated")
    np.testing.assert_allclose(reranker.compute_score(record["pairs"]), record["scores"], rtol=0, atol=ATOL)


def test_cutoff_layers_come_back_in_the_order_given():
    forward = _reranker().compute_score(PAIRS[:6], cutoff_layers=[8, 10])
    backward = _reranker().compute_score(PAIRS[:6], cutoff_layers=[10, 8])
    np.testing.assert_allclose(backward, forward[::-1], rtol=0, atol=1e-6)


def test_layer_scores_keep_repeats_in_the_order_given():
    """The model trusts a resolved plan: one row per requested layer, repeats included, heads by sorted position."""
    model = _reranker().model
    ids = torch.randint(1, model.config.vocab_size, (2, 14), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(14)[None, :] < torch.tensor([[14], [9]])).long()
    spans = {"query_lengths": torch.tensor([3, 2]), "prompt_lengths": torch.tensor([2, 2])}
    plan = {"compress_layers": frozenset({4}), "compress_ratio": 2}
    with torch.inference_mode():
        repeated = model.layer_scores(ids, mask, **spans, cutoff_layers=[8, 4, 8], **plan)
        ascending = model.layer_scores(ids, mask, **spans, cutoff_layers=[4, 8], **plan)
    assert repeated.shape == (3, 2)
    torch.testing.assert_close(repeated[[1, 0, 2]], ascending[[0, 1, 1]], rtol=0, atol=1e-6)


def test_batch_size_and_order_do_not_change_scores():
    options = {"compress_ratio": 2, "compress_layers": [4, 8], "cutoff_layers": [6, 10]}
    pairs = PAIRS[:16]  # short and long passages, queries shared between pairs
    one_batch = np.array(_reranker().compute_score(pairs, batch_size=64, max_batch_tokens=None, **options))
    singles = np.array(_reranker().compute_score(pairs, batch_size=1, **options))
    np.testing.assert_allclose(singles, one_batch, rtol=0, atol=ATOL)
    order = np.random.default_rng(0).permutation(len(pairs))
    shuffled = np.array(_reranker().compute_score([pairs[i] for i in order], batch_size=5, **options))
    np.testing.assert_allclose(shuffled, one_batch[:, order], rtol=0, atol=ATOL)


@pytest.mark.parametrize(("cutoffs", "deepest"), [([6], 6), ([4, 8], 8), (None, 10)])
def test_layers_after_the_deepest_cutoff_never_run(cutoffs, deepest):
    layers = _reranker().model.model.layers
    ran: list[int] = []
    handles = [layer.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, layer in enumerate(layers)]
    try:
        _reranker().compute_score(PAIRS[:3], cutoff_layers=cutoffs, batch_size=8)
    finally:
        for handle in handles:
            handle.remove()
    assert sorted(set(ran)) == list(range(deepest))


def test_bf16_ranks_like_float32():
    reranker = _reranker(init_kwargs='{"devices": "cpu", "use_bf16": true}')
    assert reranker.info.dtype == "bfloat16"
    assert next(reranker.model.parameters()).dtype == torch.bfloat16
    scores = np.array(reranker.compute_score(PAIRS))
    golden = np.array(golden_case("lt-auto-default")["scores"])
    spearman = np.corrcoef(np.argsort(np.argsort(scores)), np.argsort(np.argsort(golden)))[0, 1]
    assert spearman > 0.95
    assert np.argmax(scores) == np.argmax(golden)
    assert np.abs(scores - golden).max() < 0.5  # scores reach ~2.7 here; bf16 moves them by at most ~0.25


def test_rerank_orders_documents_best_first():
    query, documents = PAIRS[0][0], [PAIRS[0][1], PAIRS[1][1]]
    results = _reranker().rerank(query, documents)
    expected = golden_case("lt-auto-default")["scores"][:2]
    assert [r.index for r in results] == list(np.argsort(expected)[::-1])


def test_compress_passages_mean_pools_groups_and_keeps_query_and_prompt():
    # Row 0: query 2, passage 5, prompt 2; row 1: query 1, passage 2, prompt 1, then one pad. Token value = position.
    hidden = torch.arange(9, dtype=torch.float32)[None, :, None].repeat(2, 1, 2)  # (2, 9, 2)
    lengths, queries, prompts = torch.tensor([9, 4]), torch.tensor([2, 1]), torch.tensor([2, 1])
    out, new_lengths = compress_passages(hidden, lengths, queries, prompts, ratio=2)
    assert new_lengths.tolist() == [7, 3]
    assert out[0, :, 0].tolist() == [0, 1, 2.5, 4.5, 6, 7, 8]  # groups (2,3), (4,5), (6) then the prompt
    assert out[1, :, 0].tolist() == [0, 1.5, 3, 0, 0, 0, 0]  # group (1,2), prompt (3), zero padding


def test_right_padding_is_required():
    model = _reranker().model
    ids = torch.tensor([[0, 2, 5, 6]])
    # An internal invariant (the kind pads on the right), not user-facing validation.
    with pytest.raises(AssertionError, match="right-padded"):
        model.layer_scores(
            ids,
            torch.tensor([[0, 1, 1, 1]]),
            torch.tensor([1]),
            torch.tensor([1]),
            cutoff_layers=[10],
            compress_layers=frozenset(),
            compress_ratio=1,
        )


def test_valid_cutoff_layers_follow_the_grid():
    assert valid_cutoff_layers(_reranker().model.config) == [4, 6, 8, 10]
    assert _reranker().model.valid_cutoff_layers == [4, 6, 8, 10]


def test_sliding_window_matches_transformers_gemma2():
    """A window shorter than the inputs: the native layers must agree with transformers' own Gemma2."""
    from transformers import Gemma2Config, Gemma2Model

    shapes = {
        "vocab_size": 50,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "query_pre_attn_scalar": 8,
        "sliding_window": 3,
        "pad_token_id": 0,
    }
    torch.manual_seed(0)
    ours = LightweightGemma2Reranker(
        CostWiseGemmaConfig(**shapes, start_layer=1, layer_sep=2, layer_wise=True)
    )
    for parameter in ours.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    theirs = Gemma2Model(Gemma2Config(**shapes, attn_logit_softcapping=None, attn_implementation="eager"))
    theirs.load_state_dict(
        {k.removeprefix("model."): v for k, v in ours.state_dict().items() if k.startswith("model.")}
    )
    ids = torch.randint(1, 50, (2, 9))
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    with torch.inference_mode():
        hidden = theirs.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
        last = hidden[torch.arange(2), mask.sum(1) - 1]  # (B, H), already normed
        expected = torch.tanh(ours.lm_head[0].linear_head(last).squeeze(-1) / 30.0) * 30.0
        got = ours.eval().layer_scores(
            ids,
            mask,
            torch.tensor([1, 1]),
            torch.tensor([1, 1]),
            cutoff_layers=[3],
            compress_layers=frozenset(),
            compress_ratio=1,
        )[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_checkpoint_missing_a_head_fails_loudly(tmp_path):
    from safetensors.torch import load_file, save_file

    source = fixture_path(FIXTURE)
    shutil.copy(f"{source}/config.json", tmp_path)
    weights = load_file(f"{source}/model.safetensors")
    del weights["lm_head.3.linear_head.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="lm_head.3"):
        load_lightweight_model(str(tmp_path))


def test_peft_adapter_is_merged(tmp_path):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    adapted = peft.get_peft_model(
        load_lightweight_model(fixture_path(FIXTURE)),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapted.save_pretrained(str(tmp_path / "adapter"))
    merged_dir = tmp_path / "merged"
    adapted.merge_and_unload().save_pretrained(str(merged_dir))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{fixture_path(FIXTURE)}/{name}", merged_dir)

    with_adapter = AutoReranker.from_finetuned(
        fixture_path(FIXTURE), devices="cpu", peft_path=str(tmp_path / "adapter")
    )
    pre_merged = AutoReranker.from_finetuned(str(merged_dir), devices="cpu")
    scores = with_adapter.compute_score(PAIRS[:4])
    np.testing.assert_allclose(scores, pre_merged.compute_score(PAIRS[:4]), rtol=0, atol=1e-5)
    assert np.abs(np.array(scores) - golden_case("lt-auto-default")["scores"][:4]).max() > 1e-2
