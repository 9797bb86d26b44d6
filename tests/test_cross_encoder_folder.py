"""sentence-transformers CrossEncoder folders over a causal LM: tiny folders saved by sentence-transformers 6.x itself,
detected from their files, and scored as ``CrossEncoder.predict`` scores them (its template, its tokens)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import run_cli
from conftest import FIXTURES, golden_case

from autorerank import AutoReranker
from autorerank.auto import detect_kind

st = pytest.importorskip("sentence_transformers")
pytestmark = [pytest.mark.sentence_transformers, pytest.mark.slow]

CAUSAL, SEQ_CLS = FIXTURES / "qwen3/Qwen3-Reranker-0.6B", FIXTURES / "qwen3/Qwen3-Reranker-0.6B-seq-cls"
# Qwen3-Reranker's prompt as a chat template over sentence-transformers' query/document roles, the instruction
# coming as a system message (the template's default otherwise). Jinja drops one trailing newline, hence three.
QWEN3_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n<Instruct>: '
    '{{ messages | selectattr("role", "eq", "system") | map(attribute="content") | first | default("Given a web '
    'search query, retrieve relevant passages that answer the query") }}\n'
    '<Query>: {{ messages | selectattr("role", "eq", "query") | map(attribute="content") | first }}\n'
    '<Document>: {{ messages | selectattr("role", "eq", "document") | map(attribute="content") | first }}'
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n\n"
)
# Another layout: structured messages, the query in a system turn, the instruction after the document.
TURNS_TEMPLATE = (
    '{%- set q = (messages | selectattr("role", "eq", "query") | first).content[0].text -%}'
    '{%- set d = (messages | selectattr("role", "eq", "document") | first).content[0].text -%}'
    '{%- set s = messages | selectattr("role", "eq", "system") | list -%}'
    "<|im_start|>system\n{{ q }}<|im_end|>\n<|im_start|>user\n{{ d }}"
    "{% if s %}\n\n{{ s[0].content[0].text }}{% endif %}<|im_end|>\n<|im_start|>assistant\n"
)
PAIRS = golden_case("enc-auto-default")["pairs"][:10] + [
    ("what is panda?", "The giant panda " * 40),
    ("  spaced {query}\n", "\t{document} with <think> inside "),
    ("", ""),
]


def _copy(source: Path, folder: Path, template: str) -> Path:
    shutil.copytree(source, folder)
    for path in folder.iterdir():
        os.chmod(path, 0o644)
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """name -> a folder saved by sentence-transformers."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.modules import LogitScore, Transformer

    root = tmp_path_factory.mktemp("st")
    saved = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, source in (("causal", CAUSAL), ("seq-cls", SEQ_CLS)):
            model = CrossEncoder(str(_copy(source, root / f"{name}-base", QWEN3_TEMPLATE)), device="cpu")
            model.save(str(root / name))
            saved[name] = root / name
        backbone = Transformer(
            str(_copy(CAUSAL, root / "turns-base", TURNS_TEMPLATE)), transformer_task="text-generation"
        )
        yes = backbone.tokenizer.convert_tokens_to_ids("yes")
        model = CrossEncoder(
            modules=[backbone, LogitScore(true_token_id=yes)],
            prompts={"qa": "Is the question answered?"},
            default_prompt_name="qa",
            device="cpu",
        )
        model.save(str(root / "turns"))
        saved["turns"] = root / "turns"
    return saved


@functools.cache
def predictor(folder: Path):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(folder), device="cpu")


@functools.cache
def ours(folder: Path):
    return AutoReranker.from_finetuned(str(folder), devices="cpu")


@pytest.mark.parametrize("name", ["causal", "seq-cls", "turns"])
@pytest.mark.parametrize("max_length", [4096, 90])
@pytest.mark.parametrize("prompt", [None, "Find {the} answer"])
def test_scores_equal_sentence_transformers_predict(folders, name, max_length, prompt):
    model, reranker = predictor(folders[name]), ours(folders[name])
    model.max_seq_length = max_length
    expected = model.predict(PAIRS, prompt=prompt, batch_size=4)  # its default activation: a sigmoid
    raw = model.predict(PAIRS, prompt=prompt, batch_size=4, activation_fn=torch.nn.Identity())
    options = {"max_length": max_length, "prompt": prompt}
    np.testing.assert_allclose(reranker.compute_score(PAIRS, normalize=True, **options), expected, atol=1e-4)
    np.testing.assert_allclose(reranker.compute_score(PAIRS, **options), raw, atol=1e-4)


def test_the_folder_is_detected_from_its_files(folders, capsys):
    assert ours(folders["causal"]).info.kind == "decoder-only-yes-no"
    for name, head in (("causal", "Transformer + LogitScore"), ("seq-cls", "sequence-classification")):
        kind, reason = detect_kind(str(folders[name]))
        assert (
            kind == "decoder-only-yes-no"
            and "sentence-transformers CrossEncoder files" in reason
            and head in reason
        )
    code, out, _ = run_cli(["info", folders["turns"], "--json"], capsys)
    assert code == 0 and "sentence-transformers CrossEncoder files" in json.loads(out)["detected_by"]


def test_a_folder_reads_its_true_token_and_default_prompt(folders):
    reranker = ours(folders["turns"])
    assert reranker._engine.prepared.rows == (predictor(folders["turns"])[1].true_token_id,)
    assert reranker.compute_score(PAIRS[:3]) == reranker.compute_score(
        PAIRS[:3], prompt="Is the question answered?"
    )


def test_folders_sentence_transformers_reads_as_text_pairs_keep_todays_detection(tmp_path, folders):
    """A classic cross-encoder folder (no chat template) is what its config.json says."""
    folder = tmp_path / "ms-marco-like"
    shutil.copytree(FIXTURES / "enc/bge-reranker-v2-m3", folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.base.modules.transformer.Transformer",
                }
            ]
        )
    )
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"transformer_task": "sequence-classification"})
    )
    assert detect_kind(str(folder))[0] == "encoder-only-base"
    text_only = tmp_path / "text-only"
    shutil.copytree(folders["causal"], text_only)
    settings = json.loads((text_only / "sentence_bert_config.json").read_text())
    settings["modality_config"].pop("message")
    (text_only / "sentence_bert_config.json").write_text(json.dumps(settings))
    assert detect_kind(str(text_only))[0] == "decoder-only-base"
