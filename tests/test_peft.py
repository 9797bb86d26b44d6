"""peft_path: an adapter is merged at load and scores like the unmerged adapted model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cached_reranker, fixture_path

from autorerank import AutoReranker

peft = pytest.importorskip("peft")
LLM = "llm/bge-reranker-v2-gemma"
PAIRS = [("what is a panda?", "The giant panda is a bear."), ("q", "Paris is in France."), ("a", "b")]


@pytest.fixture(scope="module")
def adapter_path(tmp_path_factory):
    """A LoRA adapter with non-zero weights, saved the way training tools save it."""
    torch.manual_seed(0)
    base = AutoReranker.from_finetuned(fixture_path(LLM), devices="cpu").model.model  # the causal LM
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    path = tmp_path_factory.mktemp("adapter")
    peft.get_peft_model(base, config).save_pretrained(str(path))
    return str(path)


def test_merged_adapter_scores_like_the_unmerged_peft_model(adapter_path):
    merged = AutoReranker.from_finetuned(fixture_path(LLM), devices="cpu", peft_path=adapter_path)
    unmerged = AutoReranker.from_finetuned(fixture_path(LLM), devices="cpu")
    unmerged.model.model = peft.PeftModel.from_pretrained(unmerged.model.model, adapter_path).eval()
    base_scores = cached_reranker(LLM).compute_score(PAIRS)
    merged_scores = merged.compute_score(PAIRS)
    assert np.abs(np.array(merged_scores) - base_scores).max() > 1e-3  # the adapter took effect
    np.testing.assert_allclose(merged_scores, unmerged.compute_score(PAIRS), atol=1e-4)
