"""The ``autorerank`` file commands end to end: ``score`` (resumable), ``rerank-run`` and ``eval``.

Scores the CLI writes must be exactly the floats ``compute_score`` returns for the same pairs on the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import DOCS, QUERY, run_cli
from conftest import fixture_path, write

from autorerank.io import read_run


def test_score_writes_compute_score_values_and_resumes(tmp_path, capsys, enc_path, enc_reference):
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
    # enc_reference scores the same chunks, and the written floats must equal them exactly.
    expected = [1000.0, 1001.0, 1002.0]
    for start in range(3, len(pairs), 2):
        expected += enc_reference.compute_score(pairs[start : start + 2])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == [{"index": i, "score": score} for i, score in enumerate(expected)]
    assert records[3]["score"] == pytest.approx(enc_reference.compute_score(pairs)[3], abs=1e-4)


def test_score_bad_input_keeps_what_was_written(tmp_path, capsys, enc_path):
    source = write(tmp_path / "pairs.csv", "q,p\nq,p\nq,p\nq,p,oops\n")
    out = tmp_path / "scores.jsonl"
    code, _, err = run_cli(["score", enc_path, "-i", source, "-o", out, "--chunk-size", "2"], capsys)
    assert code == 2
    assert f"{source}:4: expected 2 comma-separated columns, found 3" in err
    assert "Traceback" not in err
    assert [json.loads(line)["index"] for line in out.read_text().splitlines()] == [0, 1]


def test_score_from_stdin(tmp_path, capsys, monkeypatch, enc_path, enc_reference):
    pairs = [(QUERY, doc) for doc in DOCS]
    out = tmp_path / "scores.jsonl"
    stdin = "".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in pairs)
    code, _, err = run_cli(
        ["score", enc_path, "-i", "-", "--input-format", "jsonl", "-o", out], capsys, stdin, monkeypatch
    )
    assert code == 0, err
    assert [
        json.loads(line)["score"] for line in out.read_text().splitlines()
    ] == enc_reference.compute_score(pairs)


def test_interrupted_score_exits_130_with_a_resume_hint(tmp_path, capsys, monkeypatch, enc_path):
    from autorerank.cli import commands

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands.jobs, "score_pair_file", interrupted)
    source = write(tmp_path / "pairs.tsv", "q\tp\n")
    code, _, err = run_cli(["score", enc_path, "-i", source, "-o", tmp_path / "out.jsonl"], capsys)
    assert code == 130
    assert "rerun the same command to resume" in err


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


def test_rerank_run_writes_a_trec_run_that_eval_reads(tmp_path, capsys, enc_path, enc_reference, collection):
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
    # All six head pairs go to the model in one call; the enc_reference makes the same call.
    texts = {"d3": "hi", "d1": "Paris is the capital of France.", "d0": "Panda The giant panda is a bear."}
    q2_texts = ["Lyon A city in France.", "hi", "Paris is the capital of France."]  # d4, d3, d1
    all_scores = enc_reference.compute_score(
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


def test_interrupted_rerank_run_says_it_starts_over(tmp_path, capsys, monkeypatch, enc_path, collection):
    from autorerank.cli import commands

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands.jobs, "rerank_run", interrupted)
    code, _, err = run_cli(rerank_run_args(enc_path, collection, tmp_path / "out.trec"), capsys)
    assert code == 130 and "rerunning starts over" in err
    _, out, _ = run_cli(["rerank-run", "--help"], capsys)
    assert "it starts over" in " ".join(out.split())
