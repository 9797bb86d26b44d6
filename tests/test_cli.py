"""The ``autorerank`` command line, end to end on the tiny encoder fixture.

Scores the CLI prints or writes must be exactly the floats ``compute_score`` returns for the
same pairs on the same model.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
from conftest import cached_reranker, fixture_path, write

from autorerank.cli import main
from autorerank.cli.parser import model_kwargs, parse_args
from autorerank.io import read_run

ENC = "enc/bge-reranker-v2-m3"

QUERY = "what is a panda?"
DOCS = [
    "The giant panda is a bear native to China.",
    "Paris is the capital of France.",
    "hi",
    "Pandas eat bamboo.",
]


@pytest.fixture(scope="module")
def reference():
    """The library itself, to compute the scores the CLI must reproduce."""
    return cached_reranker(ENC)


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_cli(argv, capsys, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(
            sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8")
        )
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- parsing (no model)


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


# ---------------------------------------------------------------- rank and info


def test_rank_prints_compute_score_values_best_first(capsys, enc_path, reference):
    code, out, _ = run_cli(["rank", enc_path, "--query", QUERY, *DOCS], capsys)
    assert code == 0
    expected = reference.compute_score([(QUERY, doc) for doc in DOCS])
    header, *lines = out.splitlines()
    assert header == "rank\tscore\tdocument"
    rows = [line.split("\t") for line in lines]
    assert [int(rank) for rank, _, _ in rows] == [1, 2, 3, 4]
    assert sorted(float(score) for _, score, _ in rows) == sorted(expected)
    for _, score, document in rows:
        assert float(score) == expected[DOCS.index(document)]  # exact, not approximate
    assert [float(score) for _, score, _ in rows] == sorted(expected, reverse=True)


def test_rank_reads_documents_from_stdin_and_prints_json(capsys, monkeypatch, enc_path, reference):
    code, out, _ = run_cli(
        ["rank", enc_path, "--query", QUERY, "--top-k", "2", "--json"],
        capsys,
        "\n".join(DOCS) + "\n\n",
        monkeypatch,
    )
    assert code == 0
    records = json.loads(out)
    expected = reference.compute_score([(QUERY, doc) for doc in DOCS])
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


# ---------------------------------------------------------------- score


def test_score_writes_compute_score_values_and_resumes(tmp_path, capsys, enc_path, reference):
    pairs = [(QUERY, doc) for doc in DOCS] + [("capital of France", doc) for doc in DOCS]
    source = write(tmp_path / "pairs.tsv", "query\tpassage\n" + "".join(f"{q}\t{p}\n" for q, p in pairs))
    out = tmp_path / "scores.jsonl"
    argv = ["score", enc_path, "--input", source, "--output", out, "--chunk-size", "2"]
    assert run_cli(argv, capsys)[0] == 0
    assert json.loads((tmp_path / "scores.jsonl.meta.json").read_text())["model"] == enc_path
    # Make it an interrupted earlier run: three complete lines (marked with impossible scores, to see
    # that they are kept, not recomputed), then half a line.
    write(
        out,
        "".join(json.dumps({"index": i, "score": 1000.0 + i}) + "\n" for i in range(3)) + '{"index": 3, "sc',
    )
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "scored 5 pairs" in err and "resumed after 3 already scored" in err
    # The resumed run scores pairs 3..7 in chunks of two; padding depends on the batch, so the
    # reference scores the same chunks, and the written floats must equal them exactly.
    expected = [1000.0, 1001.0, 1002.0]
    for start in range(3, len(pairs), 2):
        expected += reference.compute_score(pairs[start : start + 2])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == [{"index": i, "score": score} for i, score in enumerate(expected)]
    assert records[3]["score"] == pytest.approx(reference.compute_score(pairs)[3], abs=1e-4)


def test_score_bad_input_keeps_what_was_written(tmp_path, capsys, enc_path):
    source = write(tmp_path / "pairs.csv", "q,p\nq,p\nq,p\nq,p,oops\n")
    out = tmp_path / "scores.jsonl"
    code, _, err = run_cli(["score", enc_path, "-i", source, "-o", out, "--chunk-size", "2"], capsys)
    assert code == 2
    assert f"{source}:4: expected 2 comma-separated columns, found 3" in err
    assert "Traceback" not in err
    assert [json.loads(line)["index"] for line in out.read_text().splitlines()] == [0, 1]


def test_score_from_stdin(tmp_path, capsys, monkeypatch, enc_path, reference):
    pairs = [(QUERY, doc) for doc in DOCS]
    out = tmp_path / "scores.jsonl"
    stdin = "".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in pairs)
    code, _, err = run_cli(
        ["score", enc_path, "-i", "-", "--input-format", "jsonl", "-o", out], capsys, stdin, monkeypatch
    )
    assert code == 0, err
    assert [json.loads(line)["score"] for line in out.read_text().splitlines()] == reference.compute_score(
        pairs
    )


def test_interrupted_score_exits_130_with_a_resume_hint(tmp_path, capsys, monkeypatch, enc_path):
    from autorerank.cli import commands

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands.jobs, "score_pair_file", interrupted)
    source = write(tmp_path / "pairs.tsv", "q\tp\n")
    code, _, err = run_cli(["score", enc_path, "-i", source, "-o", tmp_path / "out.jsonl"], capsys)
    assert code == 130
    assert "rerun the same command to resume" in err


# ---------------------------------------------------------------- rerank-run and eval


@pytest.fixture
def collection(tmp_path):
    queries = write(
        tmp_path / "queries.jsonl",
        '{"_id": "q1", "text": "what is a panda?"}\n{"_id": "q2", "text": "capital of France"}\n',
    )
    corpus = write(
        tmp_path / "corpus.jsonl",
        "".join(
            json.dumps({"_id": f"d{i}", "title": title, "text": text}) + "\n"
            for i, (title, text) in enumerate(
                [
                    ("Panda", "The giant panda is a bear."),
                    ("", "Paris is the capital of France."),
                    ("Food", "Pandas eat bamboo."),
                    ("", "hi"),
                    ("Lyon", "A city in France."),
                ]
            )
        ),
    )
    run = write(
        tmp_path / "bm25.trec",
        "q1 Q0 d3 1 10.0 bm25\nq1 Q0 d1 2 9.0 bm25\nq1 Q0 d0 3 8.0 bm25\nq1 Q0 d2 4 7.0 bm25\nq1 Q0 d4 5 6.0 bm25\n"
        "q2 Q0 d4 1 5.0 bm25\nq2 Q0 d3 2 4.0 bm25\nq2 Q0 d1 3 3.0 bm25\n",
    )
    qrels = write(tmp_path / "qrels.txt", "q1 0 d0 2\nq1 0 d2 1\nq2 0 d1 1\n")
    return {"run": run, "queries": queries, "corpus": corpus, "qrels": qrels}


def rerank_run_args(model, collection, out, *extra):
    """Arguments of a rerank-run over the test collection."""
    return [
        "rerank-run",
        model,
        "--run",
        collection["run"],
        "--queries",
        collection["queries"],
        "--corpus",
        collection["corpus"],
        "--output",
        out,
        *extra,
    ]


def test_rerank_run_writes_a_trec_run_that_eval_reads(tmp_path, capsys, enc_path, reference, collection):
    out = tmp_path / "reranked.trec"
    code, _, err = run_cli(
        rerank_run_args(enc_path, collection, out, "--depth", "3", "--tag", "ce"),
        capsys,
    )
    assert code == 0, err
    lines = [line.split() for line in out.read_text().splitlines()]
    assert all(len(fields) == 6 and fields[1] == "Q0" and fields[5] == "ce" for fields in lines)
    by_query = {}
    for qid, _, doc, rank, score, _ in lines:
        by_query.setdefault(qid, []).append((doc, int(rank), float(score)))
    # q1's top 3 by BM25 are d3, d1, d0: reranked by compute_score on BEIR-joined text; d2, d4 follow.
    # All six head pairs go to the model in one call; the reference makes the same call.
    texts = {"d3": "hi", "d1": "Paris is the capital of France.", "d0": "Panda The giant panda is a bear."}
    q2_texts = ["Lyon A city in France.", "hi", "Paris is the capital of France."]  # d4, d3, d1
    all_scores = reference.compute_score(
        [("what is a panda?", text) for text in texts.values()]
        + [("capital of France", text) for text in q2_texts]
    )
    expected = dict(zip(texts, all_scores[:3]))
    head = sorted(expected.items(), key=lambda item: -item[1])
    assert [(doc, score) for doc, _, score in by_query["q1"][:3]] == head
    assert [doc for doc, _, _ in by_query["q1"][3:]] == ["d2", "d4"]
    assert [rank for _, rank, _ in by_query["q1"]] == [1, 2, 3, 4, 5]
    scores = [score for _, _, score in by_query["q1"]]
    assert scores == sorted(scores, reverse=True) and scores[3] < scores[2]
    assert sorted(score for _, _, score in by_query["q2"]) == sorted(all_scores[3:])
    assert set(read_run(out)) == {"q1", "q2"}

    code, table, err = run_cli(
        [
            "eval",
            "--qrels",
            collection["qrels"],
            "--run",
            out,
            "--compare",
            collection["run"],
            "--metrics",
            "mrr@10",
            "recall@2",
        ],
        capsys,
    )
    assert code == 0, err
    header = table.splitlines()[0].split()
    assert header == ["measure", str(collection["run"]), str(out), "diff"]


def test_eval_table_matches_hand_computed_values(tmp_path, capsys, collection):
    # BM25 run: q1 = d3, d1, d0 (rel 2), d2 (rel 1), d4 ; q2 = d4, d3, d1 (rel 1).
    # MRR@10 = (1/3 + 1/3) / 2 ; recall@3 = (1/2 + 1/1) / 2 ; P@1 = 0.
    code, out, err = run_cli(
        [
            "eval",
            "--qrels",
            collection["qrels"],
            "--run",
            collection["run"],
            "--metrics",
            "mrr@10",
            "recall@3",
            "p@1",
        ],
        capsys,
    )
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:4]}
    assert rows == {"RR@10": f"{(1 / 3 + 1 / 3) / 2:.4f}", "R@3": f"{(1 / 2 + 1) / 2:.4f}", "P@1": "0.0000"}
    code, out, _ = run_cli(
        ["eval", "--qrels", collection["qrels"], "--run", collection["run"], "--json"], capsys
    )
    values = json.loads(out)[str(collection["run"])]["values"]
    assert values["RR@10"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("target", "content", "message"),
    [
        ("run", "q1 Q0 d3 1 10.0 bm25\nq1 Q0 d1 2 9.0\n", "bm25.trec:2: a run line needs 6 fields"),
        ("run", "q1 Q0 d3 1 10.0 bm25\nq5 Q0 d1 1 9.0 bm25\n", "bm25.trec:2: query id 'q5' is not in"),
        ("run", "q1 Q0 d3 1 10.0 bm25\nq1 Q0 d77 2 9.0 bm25\n", "bm25.trec:2: document id 'd77' is not in"),
        ("queries", '{"_id": "q1", "text": "ok"}\n{"_id": "q2"}\n', "queries.jsonl:2: missing field 'text'"),
        (
            "corpus",
            b'{"_id": "d0", "text": "ok"}\n{"_id": "d1", "text": "caf\xe9"}\n',
            "corpus.jsonl:2: not valid UTF-8",
        ),
    ],
)
def test_rerank_run_bad_files_exit_2_and_keep_the_old_output(
    tmp_path, capsys, enc_path, collection, target, content, message
):
    write(collection[target], content)
    out = write(tmp_path / "reranked.trec", "an older output\n")
    code, stdout, err = run_cli(
        rerank_run_args(enc_path, collection, out),
        capsys,
    )
    assert code == 2
    assert message in err and err.startswith("autorerank: error: ")
    assert "Traceback" not in err and stdout == ""
    assert out.read_text() == "an older output\n"


def test_eval_bad_qrels_and_missing_files(tmp_path, capsys, collection):
    bad = write(tmp_path / "bad_qrels.txt", "q1 0 d0 2\nq1 0 d2 yes\n")
    code, _, err = run_cli(["eval", "--qrels", bad, "--run", collection["run"]], capsys)
    assert (code, err.strip()) == (2, f"autorerank: error: {bad}:2: relevance 'yes' is not an integer")
    code, _, err = run_cli(["eval", "--qrels", collection["qrels"], "--run", tmp_path / "nope.trec"], capsys)
    assert (code, err.strip()) == (2, f"autorerank: error: {tmp_path / 'nope.trec'}: no such file")
    code, _, err = run_cli(
        ["eval", "--qrels", collection["qrels"], "--run", collection["run"], "--metrics", "x@1"], capsys
    )
    assert code == 2 and "Unknown measure 'x@1'" in err


# ---------------------------------------------------------------- the new-user path


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
def test_max_batch_tokens_auto_none_or_a_number(capsys, enc_path, reference, budget):
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
        reference.compute_score([(QUERY, doc) for doc in DOCS]), abs=1e-5
    )


def test_rank_prints_one_line_per_document_with_escapes(capsys, enc_path, reference):
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
    expected = dict(zip(docs, reference.compute_score([(QUERY, doc) for doc in docs])))
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


def test_score_and_rerank_run_write_to_stdout_with_dash(tmp_path, capsys, monkeypatch, enc_path, collection):
    monkeypatch.chdir(tmp_path)
    source = write(tmp_path / "pairs.tsv", "".join(f"{QUERY}\t{doc}\n" for doc in DOCS))
    code, out, err = run_cli(["score", enc_path, "-i", source, "-o", "-"], capsys)
    assert code == 0, err
    assert [json.loads(line)["index"] for line in out.splitlines()] == [0, 1, 2, 3]
    assert "into standard output" in err
    code, out, err = run_cli(rerank_run_args(enc_path, collection, "-"), capsys)
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()] == ["q1"] * 5 + ["q2"] * 3
    assert not (tmp_path / "-").exists() and not (tmp_path / "-.meta.json").exists()


def test_score_refuses_to_resume_with_other_settings(tmp_path, capsys, enc_path):
    source = write(tmp_path / "pairs.tsv", "".join(f"{QUERY}\t{doc}\n" for doc in DOCS))
    out = tmp_path / "scores.jsonl"
    base = ["score", enc_path, "-i", source, "-o", out]
    assert run_cli(base, capsys)[0] == 0
    write(out, out.read_text().splitlines(keepends=True)[0])  # as if interrupted after one pair
    before = out.read_text()
    refusals = [
        ([*base, "--normalize"], "--normalize: true now, not given when the output was written"),
        (["score", fixture_path("enc-bert/bge-reranker-base"), *base[2:]], "model: "),
        ([*base, "--max-length", "64"], "--max-length: 64 now"),
    ]
    for argv, difference in refusals:
        code, _, err = run_cli(argv, capsys)
        assert code == 2, err
        assert err.startswith(f"autorerank: error: {out}: was written with other settings (")
        assert difference in err and "pass --overwrite to start afresh, or choose another --output" in err
        assert out.read_text() == before
    write(source, source.read_text() + f"{QUERY}\tone more\n")  # another input
    code, _, err = run_cli(base, capsys)
    assert code == 2 and "input size: " in err
    write(source, source.read_text().splitlines(keepends=True)[0] * 5)  # same size, other content
    code, _, err = run_cli(base, capsys)
    assert code == 2 and "input sha256_first_last_64k" in err
    # Options that change speed, not scores, may differ; --overwrite starts afresh with the new settings.
    code, _, err = run_cli([*base, "--batch-size", "3", "--normalize", "--overwrite"], capsys)
    assert code == 0 and "scored 5 pairs" in err
    assert json.loads(Path(f"{out}.meta.json").read_text())["options"] == {"--normalize": True}
    write(out, out.read_text().splitlines(keepends=True)[0])
    code, _, err = run_cli([*base, "--normalize", "--batch-size", "7", "--device", "cpu"], capsys)
    assert code == 0 and "resumed after 1 already scored" in err


def test_score_refuses_to_resume_an_output_without_its_meta_file(tmp_path, capsys, enc_path):
    source = write(tmp_path / "pairs.tsv", f"{QUERY}\t{DOCS[0]}\n{QUERY}\t{DOCS[1]}\n")
    out = write(tmp_path / "scores.jsonl", '{"index": 0, "score": 1.0}\n')
    code, _, err = run_cli(["score", enc_path, "-i", source, "-o", out], capsys)
    assert code == 2
    assert "holds 1 scores but no scores.jsonl.meta.json saying which model" in err
    assert out.read_text() == '{"index": 0, "score": 1.0}\n'


def test_score_output_that_never_ends_a_line_is_refused(tmp_path, capsys, enc_path):
    source = write(tmp_path / "pairs.tsv", f"{QUERY}\t{DOCS[0]}\n")
    out = write(tmp_path / "scores.jsonl", b"x" * 300_000)  # one huge line without a line end
    code, _, err = run_cli(["score", enc_path, "-i", source, "-o", out], capsys)
    assert code == 2
    assert err == (
        f"autorerank: error: {out}:1: no line end within 65536 bytes; it does not look like an "
        "autorerank score output (use another --output, or --overwrite)\n"
    )
    assert out.stat().st_size == 300_000


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_score_into_dev_full_is_a_clear_error(tmp_path, capsys, enc_path):
    source = write(tmp_path / "pairs.tsv", f"{QUERY}\t{DOCS[0]}\n")
    code, _, err = run_cli(["score", enc_path, "-i", source, "-o", "/dev/full"], capsys)
    assert (code, err) == (
        2,
        "autorerank: error: /dev/full: cannot write the scores (No space left on device)\n",
    )
    code, _, err = run_cli(["score", enc_path, "-i", source, "-o", "/dev/null"], capsys)
    assert code == 0 and "scored 1 pairs into /dev/null" in err


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


def test_interrupted_rerank_run_says_it_starts_over(tmp_path, capsys, monkeypatch, enc_path, collection):
    from autorerank.cli import commands

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands.jobs, "rerank_run", interrupted)
    code, _, err = run_cli(rerank_run_args(enc_path, collection, tmp_path / "out.trec"), capsys)
    assert code == 130 and "rerunning starts over" in err
    _, out, _ = run_cli(["rerank-run", "--help"], capsys)
    assert "it starts over" in " ".join(out.split())


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

    first = install()
    assert first[0].startswith("-m venv") and sum("pip install" in call for call in first) == 3
    assert install() == []  # up to date: no pip at all
    (tmp_path / "pyproject.toml").write_text((repo / "pyproject.toml").read_text() + "\n# changed\n")
    assert sum("pip install" in call for call in install()) == 3
    assert install() == []
