"""The LLM kind reads one logit; it must equal the full language-model head's "Yes" logit."""

from __future__ import annotations

import numpy as np
import torch
from conftest import cached_reranker

from autorerank.batching import collate, plan_batches
from autorerank.kinds.base import Plan
from autorerank.registry import kind_named


def test_yes_row_equals_full_vocabulary_logits_at_the_last_position():
    reranker = cached_reranker("llm/bge-reranker-v2-gemma")
    pairs = [("what is a panda?", "The giant panda is a bear."), ("q", "Paris"), ("a", "b " * 30)]
    queries, passages = reranker.instructions.apply(pairs)
    kind = kind_named("decoder-only-base")
    features = kind.encode(
        kind.prepare(reranker.text_tokenizer, reranker.model.model), queries, passages, reranker.options
    )
    rows = plan_batches(features.lengths, max_pairs=8, max_tokens=None)[0]
    batch = collate(features, rows, pad_id=reranker.text_tokenizer.pad_id, side="left", device=torch.device("cpu"))
    with torch.inference_mode():
        full = reranker.model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[
            :, -1
        ]
    ours = reranker.runtime.score(batch, Plan())[0]
    yes = reranker.text_tokenizer.ids("Yes")[0]
    np.testing.assert_allclose(ours.numpy(), full[:, yes].numpy(), atol=1e-5)
