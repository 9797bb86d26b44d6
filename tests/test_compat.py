"""Each wrapper in autorerank.compat against the installed torch and transformers: an upgrade that breaks a private
API fails here first."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_path
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification
from transformers.utils import logging as hf_logging

from autorerank import compat

ONEDNN = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="a torch build without oneDNN")


@ONEDNN
def test_onednn_linear_computes_what_f_linear_computes() -> None:
    op = compat.onednn_linear()
    assert op is not None
    assert compat.onednn_linear() is op  # probed once, then cached
    generator = torch.Generator().manual_seed(1)
    x, weight, bias, other = (
        torch.randn(s, generator=generator) for s in ((4, 3, 16), (8, 16), (8,), (4, 3, 8))
    )
    expected = F.linear(x, weight, bias)
    with torch.inference_mode():
        torch.testing.assert_close(op(x, weight, bias, "none", [], ""), expected)
        torch.testing.assert_close(op(x, weight, bias, "gelu", [], "none"), F.gelu(expected))
        torch.testing.assert_close(op(x, weight, bias, "relu", [], ""), F.relu(expected))
        torch.testing.assert_close(op.binary(x, other, weight, bias, "add"), expected + other)


@ONEDNN
def test_onednn_linear_refuses_an_op_that_computes_something_else(monkeypatch: pytest.MonkeyPatch) -> None:
    class OffByOne:
        """An op with the right signature and wrong numbers: the probe must refuse it."""

        def __call__(self, x, weight, bias, *post_op):
            return F.linear(x, weight, bias) + 1

        def binary(self, x, other, weight, bias, how):
            return F.linear(x, weight, bias) + other

    compat.onednn_linear.cache_clear()
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", OffByOne())
    try:
        assert compat.onednn_linear() is None
    finally:
        compat.onednn_linear.cache_clear()  # the next caller probes the real op again


def test_importing_the_bert_classifier_runs_no_probe() -> None:
    code = (
        "import autorerank.models.bert_classifier, autorerank.compat as c; "
        "assert c.onednn_linear.cache_info().misses == 0"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_init_zeros_zeroes_new_weights_and_keeps_loaded_ones() -> None:
    fresh = torch.nn.Parameter(torch.ones(3))
    compat.init_zeros_(fresh)
    assert fresh.detach().tolist() == [0.0, 0.0, 0.0]
    loaded = torch.nn.Parameter(torch.ones(3))
    loaded._is_hf_initialized = True  # transformers 5's mark on a tensor read from the checkpoint
    compat.init_zeros_(loaded)
    transformers_5 = int(__import__("transformers").__version__.split(".")[0]) >= 5
    assert loaded.detach().tolist() == ([1.0] * 3 if transformers_5 else [0.0] * 3)


def test_dtype_kwargs_is_the_keyword_from_pretrained_honours() -> None:
    kwargs = compat.dtype_kwargs(torch.bfloat16)
    assert list(kwargs) in (["dtype"], ["torch_dtype"]) and list(kwargs.values()) == [torch.bfloat16]
    model = AutoModelForSequenceClassification.from_pretrained(
        fixture_path("enc-bert/bge-reranker-base"), **kwargs
    )
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("enabled_before", [True, False])
def test_quiet_weight_loading_hides_the_bar_and_restores_it(enabled_before: bool) -> None:
    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled_before else hf_logging.disable_progress_bar)()
    try:
        with compat.quiet_weight_loading():
            assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.is_progress_bar_enabled() == enabled_before
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def _tiny_bert(attn_implementation: str) -> torch.nn.Module:
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        attn_implementation=attn_implementation,
    )
    return BertForSequenceClassification(config).eval()


def test_eager_attention_switches_and_restores() -> None:
    model = _tiny_bert("sdpa")
    ids = torch.tensor([[2, 7, 9, 3]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        with compat.eager_attention(model):
            assert model.config._attn_implementation == "eager"
            eager = model(input_ids=ids).logits
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(eager, expected)


def test_eager_attention_leaves_other_modules_alone() -> None:
    model = _tiny_bert("eager")
    with compat.eager_attention(model):
        assert model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == "eager"
    plain = torch.nn.Linear(2, 2)  # no config, no setter
    with compat.eager_attention(plain):
        pass


def test_no_cudnn_attention_switches_cudnn_off_on_cuda_only_and_restores() -> None:
    """The flags are process-wide and readable without a GPU; the CUDA speed it buys is measured in the README."""
    flags = (torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.mem_efficient_sdp_enabled)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with compat.no_cudnn_attention(torch.device("cpu")):
        assert torch.backends.cuda.cudnn_sdp_enabled()
    with compat.no_cudnn_attention(torch.device("cuda", 0)):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert all(enabled() for enabled in flags)
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_the_cache_helpers_round_trip_keys_and_values_through_the_installed_transformers() -> None:
    from transformers import DynamicCache, Qwen3Config, Qwen3Model

    config = Qwen3Config(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8,
    )  # fmt: skip
    model = Qwen3Model(config).eval()
    cache = compat.new_dynamic_cache(DynamicCache, config)
    ids = torch.tensor([[3, 5, 7, 9]])
    with torch.no_grad():
        model(input_ids=ids, use_cache=True, **{compat.cache_argument(type(model).forward): cache})
    layers = compat.cache_key_values(cache)
    assert len(layers) == 2 and all(k.shape == v.shape == (1, 1, 4, 8) for k, v in layers)
    assert compat.cache_argument(type(model).forward) in inspect.signature(model.forward).parameters


def test_onednn_primitive_cache_is_bounded_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    compat.onednn_linear.cache_clear()
    compat.onednn_linear()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == compat.ONEDNN_CACHE_CAPACITY
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")
    compat.onednn_linear.cache_clear()
    compat.onednn_linear()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512"
