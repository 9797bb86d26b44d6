"""The ``autorerank`` command line: parsing, ``rank``, ``info`` and the new-user path, on the tiny encoder fixture.

Scores the CLI prints must be exactly the floats ``compute_score`` returns for the same pairs on the same model.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from cli_support import DOCS, QUERY, run_cli, torch_has_cuda

from autorerank.cli.parser import model_kwargs, parse_args


@pytest.mark.parametrize("command", [[], ["rank"], ["score"], ["rerank-run"], ["eval"], ["info"]])
def test_every_command_has_help(command, capsys):
    code, out, _ = run_cli([*command, "--help"], capsys)
    assert code == 0
    assert out.startswith("usage: autorerank")


def test_usage_errors_exit_2(capsys):
    code, _, err = run_cli(["rank", "m", "--query", "q", "--fp16", "--bf16", "d"], capsys)
    assert code == 2
    assert "not allowed with argument --fp16" in err
    assert run_cli(["frobnicate"], capsys)[0] == 2
    assert (
        run_cli(["score", "m", "--input", "x.jsonl", "--output", "y.jsonl", "--batch-size", "0"], capsys)[0]
        == 2
    )
    tag = ["rerank-run", "m", "--run", "r", "--queries", "q", "--corpus", "c", "-o", "o", "--tag", "a b"]
    code, _, err = run_cli(tag, capsys)
    assert code == 2 and "must be one word" in err


def test_model_flags_map_onto_from_finetuned_keywords():
    args = parse_args(
        [
            "rank",
            "m",
            "--query",
            "q",
            "d1",
            "--model-class",
            "encoder-only-base",
            "--bf16",
            "--batch-size",
            "8",
            "--max-batch-tokens",
            "999",
            "--max-length",
            "64",
            "--query-max-length",
            "16",
            "--passage-max-length",
            "48",
            "--normalize",
            "--device",
            "cpu",
            "--device",
            "cuda:1",
            "--query-instruction",
            "QI",
            "--query-instruction-format",
            "{}:{}",
            "--passage-instruction",
            "PI",
            "--passage-instruction-format",
            "{}|{}",
            "--prompt",
            "P",
            "--cutoff-layers",
            "3,4",
            "--compress-layers",
            "2",
            "--compress-ratio",
            "2",
            "--peft-path",
            "adapter",
            "--trust-remote-code",
            "--cache-dir",
            "cache",
            "--backend",
            "onnx",
            "--quantize",
            "int8",
            "--onnx-dir",
            "exports",
            "d2",
        ]
    )
    assert args.documents == ["d1", "d2"]  # documents on both sides of the options
    assert model_kwargs(args) == {
        "model_class": "encoder-only-base",
        "use_bf16": True,
        "batch_size": 8,
        "max_batch_tokens": 999,
        "max_length": 64,
        "query_max_length": 16,
        "passage_max_length": 48,
        "normalize": True,
        "devices": ["cpu", "cuda:1"],
        "query_instruction_for_rerank": "QI",
        "query_instruction_format": "{}:{}",
        "passage_instruction_for_rerank": "PI",
        "passage_instruction_format": "{}|{}",
        "prompt": "P",
        "cutoff_layers": [3, 4],
        "compress_layers": [2],
        "compress_ratio": 2,
        "peft_path": "adapter",
        "trust_remote_code": True,
        "cache_dir": "cache",
        "backend": "onnx",
        "quantize": "int8",
        "onnx_dir": "exports",
    }
    assert model_kwargs(parse_args(["info", "m"])) == {}  # nothing given: the library's defaults apply


def test_rank_prints_compute_score_values_best_first(capsys, enc_path, enc_reference):
    code, out, _ = run_cli(["rank", enc_path, "--query", QUERY, *DOCS], capsys)
    assert code == 0
    expected = enc_reference.compute_score([(QUERY, doc) for doc in DOCS])
    header, *lines = out.splitlines()
    assert header == "rank\tscore\tdocument"
    rows = [line.split("\t") for line in lines]
    assert [int(rank) for rank, _, _ in rows] == [1, 2, 3, 4]
    assert sorted(float(score) for _, score, _ in rows) == sorted(expected)
    for _, score, document in rows:
        assert float(score) == expected[DOCS.index(document)]  # exact, not approximate
    assert [float(score) for _, score, _ in rows] == sorted(expected, reverse=True)


def test_rank_reads_documents_from_stdin_and_prints_json(capsys, monkeypatch, enc_path, enc_reference):
    code, out, _ = run_cli(
        ["rank", enc_path, "--query", QUERY, "--top-k", "2", "--json"],
        capsys,
        "\n".join(DOCS) + "\n\n",
        monkeypatch,
    )
    assert code == 0
    records = json.loads(out)
    expected = enc_reference.compute_score([(QUERY, doc) for doc in DOCS])
    best = sorted(range(len(DOCS)), key=lambda i: -expected[i])[:2]
    assert records == [{"index": i, "relevance_score": expected[i], "document": DOCS[i]} for i in best]


def test_info_shows_kind_and_detection(capsys, enc_path):
    code, out, _ = run_cli(["info", enc_path, "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["kind"] == "encoder-only-base"
    assert info["architecture"] == "XLMRobertaForSequenceClassification"
    assert "config.json" in info["detected_by"]
    assert info["devices"] == ["cpu"]
    code, out, _ = run_cli(["info", enc_path, "--max-length", "128"], capsys)
    assert code == 0
    assert any(line.split() == ["max_length", "128"] for line in out.splitlines())


def test_an_option_the_model_does_not_take_is_a_usage_error(capsys, enc_path):
    code, _, err = run_cli(["info", enc_path, "--prompt", "Is it relevant?"], capsys)
    assert code == 2
    assert err == "autorerank: error: --prompt does not apply to encoder-only-base models; leave it out\n"
    code, _, err = run_cli(["info", enc_path, "--cutoff-layers", "2", "--compress-ratio", "2"], capsys)
    assert code == 2
    assert "--cutoff-layers, --compress-ratio do not apply to encoder-only-base models" in err
    assert "__init__" not in err and "Traceback" not in err


def test_version(capsys):
    from autorerank import __version__

    code, out, _ = run_cli(["--version"], capsys)
    assert (code, out) == (0, f"autorerank {__version__}\n")


def test_layer_flags_take_one_value_and_never_swallow_documents(capsys):
    args = parse_args(["rank", "m", "--query", "q", "--cutoff-layers", "5", "d1", "d2"])
    assert args.documents == ["d1", "d2"]
    assert model_kwargs(args) == {"cutoff_layers": [5]}
    args = parse_args(["rank", "m", "-q", "q", "--cutoff-layers", "4", "d1", "--cutoff-layers", "5,6"])
    assert (args.documents, model_kwargs(args)) == (["d1"], {"cutoff_layers": [4, 5, 6]})
    assert model_kwargs(parse_args(["info", "m", "--compress-layers", "2,4"])) == {"compress_layers": [2, 4]}
    code, _, err = run_cli(["rank", "m", "-q", "q", "--cutoff-layers", "4,x", "d"], capsys)
    assert code == 2 and "'4,x' is not a layer number" in err


@pytest.mark.parametrize("budget", ["auto", "none", "AUTO", "64"])
def test_max_batch_tokens_auto_none_or_a_number(capsys, enc_path, enc_reference, budget):
    expected = {"auto": "auto", "none": "none", "AUTO": "auto", "64": 64}[budget]
    assert model_kwargs(parse_args(["info", "m", "--max-batch-tokens", budget])) == {
        "max_batch_tokens": expected
    }
    code, out, err = run_cli(
        ["rank", enc_path, "-q", QUERY, "--max-batch-tokens", budget, "--json", *DOCS], capsys
    )
    assert code == 0, err
    scores = {record["index"]: record["relevance_score"] for record in json.loads(out)}
    assert [scores[i] for i in range(len(DOCS))] == pytest.approx(
        enc_reference.compute_score([(QUERY, doc) for doc in DOCS]), abs=1e-5
    )


def test_rank_prints_one_line_per_document_with_escapes(capsys, enc_path, enc_reference):
    docs = ["two\nlines", "a\ttab", "back\\slash", "crlf\r\nand \u2028 separator"]
    code, out, err = run_cli(["rank", enc_path, "--query", QUERY, *docs], capsys)
    assert code == 0, err
    lines = out.split("\n")
    assert lines[0] == "rank\tscore\tdocument" and lines[-1] == ""
    rows = [line.split("\t") for line in lines[1:-1]]
    assert len(rows) == len(docs) and all(len(row) == 3 for row in rows)
    assert "\u2028" not in out and "\r" not in out
    unescaped = [row[2].encode("ascii", "backslashreplace").decode("unicode_escape") for row in rows]
    assert sorted(unescaped) == sorted(docs)
    assert {row[2] for row in rows} >= {"two\\nlines", "a\\ttab", "back\\\\slash"}
    expected = dict(zip(docs, enc_reference.compute_score([(QUERY, doc) for doc in docs])))
    assert [float(row[1]) for row in rows] == [expected[doc] for doc in unescaped]


def test_rank_at_a_terminal_says_it_reads_stdin(capsys, monkeypatch, enc_path):
    pty = pytest.importorskip("pty")
    import os

    try:
        controller, terminal = pty.openpty()
    except OSError:
        pytest.skip("no pseudo-terminal here")
    os.write(controller, b"The giant panda is a bear.\nParis is in France.\n\x04")  # Ctrl-D: end of input
    with open(terminal, encoding="utf-8") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        code, out, err = run_cli(["rank", enc_path, "--query", QUERY], capsys)
    os.close(controller)
    assert code == 0, err
    assert "reading documents from standard input, one per line; end with Ctrl-D" in err
    assert sorted(line.split("\t")[2] for line in out.splitlines()[1:]) == [
        "Paris is in France.",
        "The giant panda is a bear.",
    ]


def test_rank_from_a_pipe_does_not_talk(capsys, monkeypatch, enc_path):
    code, _, err = run_cli(["rank", enc_path, "--query", QUERY], capsys, "a doc\n", monkeypatch)
    assert (code, err) == (0, "")


def test_library_errors_exit_2_without_a_traceback(tmp_path, capsys, enc_path):
    code, _, err = run_cli(["info", tmp_path / "no-such-model"], capsys)
    assert code == 2 and err.startswith("autorerank: error: ") and "Traceback" not in err
    if not torch_has_cuda():
        code, _, err = run_cli(["rank", enc_path, "--device", "cuda", "-q", QUERY, "doc"], capsys)
        assert code == 2 and err.startswith("autorerank: error: ") and "cuda" in err
        assert "Traceback" not in err and "AssertionError" not in err


def test_library_warnings_are_one_line(capsys, enc_path):
    if torch_has_cuda():
        pytest.skip("--fp16 warns only on CPU")
    code, _, err = run_cli(["rank", enc_path, "--fp16", "-q", QUERY, "doc"], capsys)
    assert code == 0
    assert err.startswith("autorerank: warning: ") and err.count("\n") == 1


def test_install_script_skips_pip_when_the_venv_is_up_to_date(tmp_path):
    """scripts/install.sh run for real, in a copy of the repo's layout, with a stand-in python that logs."""
    import shutil
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "scripts").mkdir()
    shutil.copy(repo / "scripts" / "install.sh", tmp_path / "scripts" / "install.sh")
    shutil.copy(repo / "pyproject.toml", tmp_path / "pyproject.toml")
    log = tmp_path / "calls.log"
    fake = tmp_path / "fake-python"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\nif [ "$1" = -m ] && [ "$2" = venv ]; then\n'
        f'  mkdir -p "$3/bin" && cp "$0" "$3/bin/python"\nfi\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake)}

    def install() -> list[str]:
        log.write_text("")
        subprocess.run(["bash", "scripts/install.sh"], cwd=tmp_path, env=env, check=True)
        return log.read_text().splitlines()

    installs = (repo / "scripts" / "install.sh").read_text().count("-m pip install")
    first = install()
    assert first[0].startswith("-m venv") and sum("pip install" in call for call in first) == installs
    assert install() == []  # up to date: no pip at all
    (tmp_path / "pyproject.toml").write_text((repo / "pyproject.toml").read_text() + "\n# changed\n")
    assert sum("pip install" in call for call in install()) == installs
    assert install() == []


def test_serve_is_an_autorerank_command(capsys):
    code, out, _ = run_cli(["serve", "--help"], capsys)
    assert code == 0 and "/v1/rerank" in out and "--max-length" in out  # server flags and every model flag
    assert "default: the embedded autorerank-mini" in out
