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
        "README's option table is stale: paste autorerank.options.markdown_table()"
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


def test_load_time_options_are_refused_per_call_with_the_reason():
    reranker = cached_reranker("enc/bge-reranker-v2-m3")
    with pytest.raises(UnknownOptionError, match="set when the reranker is loaded") as caught:
        reranker.compute_score([("q", "p")], use_bf16=True)
    assert caught.value.names == ["use_bf16"]


def test_a_misspelt_option_names_the_closest_one(enc_path):
    from autorerank import AutoReranker

    with pytest.raises(UnknownOptionError, match="did you mean devices="):
        AutoReranker.from_finetuned(enc_path, device="cpu")


def test_kind_defaults_override_the_table():
    llm = cached_reranker("llm/bge-reranker-v2-gemma")
    encoder = cached_reranker("enc/bge-reranker-v2-m3")
    assert llm.options.query_instruction_for_rerank == "A: " and llm.options.prompt.startswith(
        "Given a query A"
    )
    assert encoder.options.query_instruction_for_rerank is None and "prompt" not in encoder.options
