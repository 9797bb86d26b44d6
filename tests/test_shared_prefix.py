"""Shared starts (models/shared_prefix.py): the tokens a batch's rows begin with go through a causal LM once and are
reused. Scores must equal the plain forward's (within float summation order: the plain forward shifts a
left-padded row's positions), and the start kept must be exactly the shared tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fixture_path

from autorerank import AutoReranker
from autorerank.batching import collate
from autorerank.kinds.llm import AnswerLogit
from autorerank.kinds.yes_no import YesNoLogit

QUERY = "how do plants turn sunlight into sugar"
PASSAGES = [
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The stock market closed higher on Friday after a week of losses.",
    "Chlorophyll in the leaves absorbs red and blue light.",
    "A recipe for lemon cake with a crisp sugar crust.",
    "Plants take in carbon dioxide through small pores called stomata and release oxygen.",
]
CASES = {
    "qwen3": ("qwen3/Qwen3-Reranker-0.6B", YesNoLogit, lambda prepared: prepared.rows),
    "gemma": ("llm/bge-reranker-v2-gemma", AnswerLogit, lambda prepared: prepared.answer_id),
}


def _loaded(case: str):
    """A reranker on the fixture, a module over its model without shared starts, and a batch maker."""
    fixture, module_class, head = CASES[case]
    reranker = AutoReranker.from_finetuned(fixture_path(fixture), devices="cpu", show_progress=False)
    engine = reranker._engine
    shared = engine.runtime.model
    plain = module_class(shared.model, head(engine.prepared), shared_starts=False)

    def batch(queries: list[str], passages: list[str]):
        features = reranker._kind.encode(engine.prepared, queries, passages, reranker.options)
        return features, collate(
            features, np.arange(len(passages)), pad_id=engine.pad_id, side="left", device=torch.device("cpu")
        )

    return reranker, shared, plain, batch


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_query_keeps_exactly_the_shared_tokens_and_scores_as_the_plain_forward(case):
    _, shared, plain, make = _loaded(case)
    features, batch = make([QUERY] * len(PASSAGES), PASSAGES)
    with torch.inference_mode():
        got = shared(batch.input_ids, batch.attention_mask)
        expected = plain(batch.input_ids, batch.attention_mask)
    torch.testing.assert_close(got, expected, rtol=0, atol=5e-5)
    rows = [features.input_ids.row(i) for i in range(len(PASSAGES))]
    common = 0
    while all(len(row) > common + 1 and row[common] == rows[0][common] for row in rows):
        common += 1
    (kept,) = shared.decoder._starts.values()
    assert kept[0][0].shape[2] == common > shared.decoder.min_tokens


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_kept_start_serves_later_batches_and_single_rows(case):
    _, shared, plain, make = _loaded(case)
    _, first = make([QUERY] * 3, PASSAGES[:3])
    with torch.inference_mode():
        shared(first.input_ids, first.attention_mask)
        starts = dict(shared.decoder._starts)
        for passage in PASSAGES[3:]:  # one row at a time: served from the start kept above, adding none
            _, single = make([QUERY], [passage])
            torch.testing.assert_close(
                shared(single.input_ids, single.attention_mask),
                plain(single.input_ids, single.attention_mask),
                rtol=0,
                atol=5e-5,
            )
    assert shared.decoder._starts.keys() == starts.keys()


def test_different_queries_share_the_system_prompt_and_a_later_query_extends_it():
    _, shared, plain, make = _loaded("qwen3")
    queries = ["what is photosynthesis", "cheap flights to lisbon in may", "lemon cake recipe"]
    _, mixed = make(queries, PASSAGES[:3])
    with torch.inference_mode():
        torch.testing.assert_close(
            shared(mixed.input_ids, mixed.attention_mask),
            plain(mixed.input_ids, mixed.attention_mask),
            rtol=0,
            atol=5e-5,
        )
        (system,) = shared.decoder._starts.values()
        _, same = make([QUERY] * 4, PASSAGES[:4])
        torch.testing.assert_close(
            shared(same.input_ids, same.attention_mask),
            plain(same.input_ids, same.attention_mask),
            rtol=0,
            atol=5e-5,
        )
    lengths = sorted(kept[0][0].shape[2] for kept in shared.decoder._starts.values())
    assert len(lengths) == 2 and lengths[0] == system[0][0].shape[2] < lengths[1]


def test_compute_score_with_shared_starts_matches_pairs_scored_alone():
    reranker, _, _, _ = _loaded("qwen3")
    pairs = [(QUERY, passage) for passage in PASSAGES]
    together = reranker.compute_score(pairs)
    alone = [reranker.compute_score([pair])[0] for pair in reversed(pairs)][::-1]
    np.testing.assert_allclose(together, alone, rtol=0, atol=5e-5)
