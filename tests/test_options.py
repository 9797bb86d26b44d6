"""The one option table: what the constructors, compute_score, the CLI and the README derive from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cached_reranker

from autorerank import InvalidOptionError, UnknownOptionError
from autorerank.cli.parser import MODEL_FLAGS, model_kwargs, parse_args
from autorerank.options import OPTIONS, markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_option_table_is_the_generated_one():
    text = README.read_text(encoding="utf-8")
    assert markdown_table() in text, (
        "README's option table is stale: run .venv/bin/python scripts/readme_options.py"
    )


def test_every_flag_sets_its_option_by_name():
    flagged = {row.name for row in OPTIONS if row.flag}
    assert {row.name for row in MODEL_FLAGS} == flagged
    args = parse_args(["info", "m", "--batch-size", "7", "--max-batch-tokens", "auto", "--normalize"])
    assert model_kwargs(args) == {"batch_size": 7, "max_batch_tokens": "auto", "normalize": True}


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("normalize", "no", "normalize must be True or False"),
        ("batch_size", 0, "batch_size must be a positive int"),
        ("max_batch_tokens", "lots", "max_batch_tokens must be a positive int, 'auto' or None"),
        ("query_instruction_format", "{}", "two '{}'"),
        ("backend", "tensorrt", "backend must be one of"),
    ],
)
def test_values_are_checked_against_the_table(enc_path, option, value, message):
    from autorerank import AutoReranker

    with pytest.raises(InvalidOptionError, match=message):
        AutoReranker.from_finetuned(enc_path, devices="cpu", **{option: value})


def test_per_call_values_are_checked_too():
    reranker = cached_reranker("enc/bge-reranker-v2-m3")
    with pytest.raises(InvalidOptionError, match="normalize must be True or False"):
        reranker.compute_score([("q", "p")], normalize="yes")


def test_load_time_options_per_call_are_named_in_a_warning_or_refused_when_strict(enc_path):
    from autorerank import AutoReranker

    reranker = cached_reranker("enc/bge-reranker-v2-m3")
    with pytest.warns(UserWarning, match="use_bf16=, which is set when the reranker is loaded") as caught:
        assert reranker.compute_score([("q", "p")], use_bf16=True) == reranker.compute_score([("q", "p")])
    assert caught[0].filename == __file__  # the warning points at the caller's line, not into the library
    strict = AutoReranker.from_finetuned(enc_path, devices="cpu", strict=True)
    with pytest.raises(UnknownOptionError, match="set when the reranker is loaded") as refused:
        strict.compute_score([("q", "p")], use_bf16=True)
    assert refused.value.names == ["use_bf16"]


def test_a_misspelt_option_names_the_closest_one(enc_path):
    from autorerank import AutoReranker

    with pytest.warns(UserWarning, match="did you mean devices="):
        reranker = AutoReranker.from_finetuned(enc_path, device="cpu", devices="cpu")
    assert reranker.kwargs == {"device": "cpu"}  # kept where FlagEmbedding keeps unknown keywords
    with pytest.raises(UnknownOptionError, match="did you mean devices="):
        AutoReranker.from_finetuned(enc_path, device="cpu", strict=True)


def test_a_load_time_option_misspelt_in_a_call_names_it_and_when_it_is_set():
    reranker = cached_reranker("enc/bge-reranker-v2-m3")
    with pytest.warns(
        UserWarning, match=r"device=.*\(did you mean devices=\? It is set when the reranker is loaded\)"
    ):
        reranker.compute_score([("q", "p")], device="cpu")
    with pytest.warns(UserWarning, match=r"batch_sise=.*\(did you mean batch_size=\?\)\.$"):
        reranker.compute_score([("q", "p")], batch_sise=2)


def test_kind_defaults_override_the_table():
    llm = cached_reranker("llm/bge-reranker-v2-gemma")
    encoder = cached_reranker("enc/bge-reranker-v2-m3")
    assert llm.options.query_instruction_for_rerank == "A: " and llm.options.prompt.startswith(
        "Given a query A"
    )
    assert encoder.options.query_instruction_for_rerank is None and "prompt" not in encoder.options
