"""The ``autorerank`` command line, end to end on the tiny encoder fixture.

Scores the CLI prints or writes must be exactly the floats ``compute_score`` returns for the
same pairs on the same model.
"""

from __future__ import annotations

import io
import json
import sys

import pytest
from conftest import cached_reranker, write

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
            "3",
            "4",
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
    rows = [line.split("\t") for line in out.splitlines()]
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
    assert "--prompt does not apply to this model" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- score


def test_score_writes_compute_score_values_and_resumes(tmp_path, capsys, enc_path, reference):
    pairs = [(QUERY, doc) for doc in DOCS] + [("capital of France", doc) for doc in DOCS]
    source = write(tmp_path / "pairs.tsv", "query\tpassage\n" + "".join(f"{q}\t{p}\n" for q, p in pairs))
    out = tmp_path / "scores.jsonl"
    # An interrupted earlier run: three complete lines (marked with impossible scores, to see
    # that they are kept, not recomputed), then half a line.
    write(
        out,
        "".join(json.dumps({"index": i, "score": 1000.0 + i}) + "\n" for i in range(3)) + '{"index": 3, "sc',
    )
    code, _, err = run_cli(
        ["score", enc_path, "--input", source, "--output", out, "--chunk-size", "2"], capsys
    )
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
