"""File jobs (score a pair file, rerank a run) with a deterministic stand-in for a reranker.

The jobs take anything with the reranker's streaming methods; the stand-in's score is a fixed function of
the texts, so every expected value below is known without running a model.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from autorerank.errors import InvalidOptionError
from autorerank.io import InputFileError, read_run
from autorerank.jobs import load_rerank_inputs, plan_score_job, rerank_run, score_pair_file


def fake_score(query: str, passage: str) -> float:
    """Shared words, minus a length penalty: deterministic and easy to reason about."""
    return len(set(query.split()) & set(passage.split())) - len(passage) / 1000


class FakeScorer:
    def __init__(self, layers: int = 1) -> None:
        self.calls: list[int] = []
        self.layers = layers

    def score(self, pairs):
        self.calls.append(len(pairs))
        scores = [fake_score(q, p) for q, p in pairs]
        return np.array([[s + layer for s in scores] for layer in range(self.layers)])  # (layers, n)

    def iter_scores(self, chunks):
        return (self.score(chunk) for chunk in chunks)

    def scores_per_pair(self):
        return self.layers


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


PAIRS = [("red apple", f"the red apple number {i}" + " x" * i) for i in range(7)]


def pairs_file(tmp_path, pairs=PAIRS):
    return write(
        tmp_path / "pairs.jsonl", "".join(json.dumps({"query": q, "passage": p}) + "\n" for q, p in pairs)
    )


def read_scores(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_file_in_chunks(tmp_path):
    scorer = FakeScorer()
    job = plan_score_job(pairs_file(tmp_path), tmp_path / "out.jsonl", fmt="jsonl")
    result = score_pair_file(scorer, job, chunk_size=3, progress=False)
    assert (result.skipped, result.scored) == (0, 7)
    assert scorer.calls == [3, 3, 1]
    assert read_scores(tmp_path / "out.jsonl") == [
        {"index": i, "score": fake_score(*pair)} for i, pair in enumerate(PAIRS)
    ]


def test_score_file_resumes_after_an_interrupted_run(tmp_path):
    out = write(
        tmp_path / "out.jsonl",
        '{"index": 0, "score": 100.0}\n{"index": 1, "score": 101.0}\n{"index": 2, "sco',  # crash mid-line
    )
    scorer = FakeScorer()
    job = plan_score_job(pairs_file(tmp_path), out, fmt="jsonl")
    assert job.done == 2
    result = score_pair_file(scorer, job, chunk_size=4, progress=False)
    assert (result.skipped, result.scored) == (2, 5)
    assert scorer.calls == [4, 1]  # only the five missing pairs are scored
    expected = [100.0, 101.0] + [fake_score(*pair) for pair in PAIRS[2:]]  # the kept lines are not rescored
    assert read_scores(out) == [{"index": i, "score": s} for i, s in enumerate(expected)]
    # A second rerun finds nothing left to do.
    again = score_pair_file(
        FakeScorer(), plan_score_job(tmp_path / "pairs.jsonl", out, fmt="jsonl"), progress=False
    )
    assert (again.skipped, again.scored) == (7, 0)


def test_score_file_keeps_chunks_written_before_a_bad_line(tmp_path):
    lines = [json.dumps({"query": q, "passage": p}) for q, p in PAIRS[:5]]
    lines.insert(4, '{"query": "no passage"}')  # line 5, the fifth pair
    path = write(tmp_path / "pairs.jsonl", "\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputFileError, match=r"pairs\.jsonl:5: missing field 'passage'"):
        score_pair_file(FakeScorer(), plan_score_job(path, out, fmt="jsonl"), chunk_size=2, progress=False)
    assert [record["index"] for record in read_scores(out)] == [0, 1, 2, 3]


def test_score_file_refuses_an_output_longer_than_the_input(tmp_path):
    out = write(
        tmp_path / "out.jsonl", "".join(json.dumps({"index": i, "score": 0.0}) + "\n" for i in range(9))
    )
    job = plan_score_job(pairs_file(tmp_path), out, fmt="jsonl")
    with pytest.raises(InputFileError, match="holds 9 scores but .* has only 7 pairs"):
        score_pair_file(FakeScorer(), job, progress=False)


def test_overwrite_starts_afresh(tmp_path):
    out = write(tmp_path / "out.jsonl", '{"index": 0, "score": 100.0}\n')
    job = plan_score_job(pairs_file(tmp_path), out, fmt="jsonl", overwrite=True)
    assert job.done == 0
    score_pair_file(FakeScorer(), job, progress=False)
    assert read_scores(out)[0]["score"] == fake_score(*PAIRS[0])


def test_several_layers_give_one_list_per_pair(tmp_path):
    job = plan_score_job(pairs_file(tmp_path, PAIRS[:2]), tmp_path / "out.jsonl", fmt="jsonl")
    score_pair_file(FakeScorer(layers=2), job, progress=False)
    assert read_scores(tmp_path / "out.jsonl") == [
        {"index": i, "score": [fake_score(*pair), fake_score(*pair) + 1]} for i, pair in enumerate(PAIRS[:2])
    ]


# ---------------------------------------------------------------- rerank a run


@pytest.fixture
def collection(tmp_path):
    queries = write(tmp_path / "queries.tsv", "q1\tred apple\nq2\tblue sky\nq3\tunused query\n")
    corpus = write(
        tmp_path / "corpus.jsonl",
        "".join(
            json.dumps(doc) + "\n"
            for doc in [
                {"_id": "d1", "title": "", "text": "nothing here"},
                {"_id": "d2", "title": "red", "text": "apple pie"},  # joined: "red apple pie"
                {"_id": "d3", "title": "Red", "text": "apple"},  # case differs: one shared word
                {"_id": "d4", "title": "blue", "text": "sky and sea"},
                {"_id": "d5", "text": "sky"},
                {"_id": "d6", "text": "below the depth"},
            ]
        ),
    )
    # q1: d1 > d3 > d2 > d6 in the first stage; q2: d5 > d4
    run = write(
        tmp_path / "bm25.trec",
        "q1 Q0 d1 1 9.0 bm25\nq1 Q0 d3 2 8.0 bm25\nq1 Q0 d2 3 7.0 bm25\nq1 Q0 d6 4 6.0 bm25\n"
        "q2 Q0 d5 1 3.0 bm25\nq2 Q0 d4 2 2.0 bm25\n",
    )
    return run, queries, corpus


def test_rerank_run_reorders_the_head_and_keeps_the_tail(collection):
    run, queries, corpus = collection
    inputs = load_rerank_inputs(run, queries, corpus, depth=3)
    assert set(inputs.corpus) == {"d1", "d2", "d3", "d4", "d5"}  # d6 is below depth: its text is not kept
    assert set(inputs.queries) == {"q1", "q2"}
    scorer = FakeScorer()
    ranked = rerank_run(scorer, inputs, chunk_size=100, progress=False)
    s = {
        doc: fake_score(q, t)
        for doc, q, t in [
            ("d1", "red apple", "nothing here"),
            ("d2", "red apple", "red apple pie"),
            ("d3", "red apple", "Red apple"),
            ("d4", "blue sky", "blue sky and sea"),
            ("d5", "blue sky", "sky"),
        ]
    }
    assert ranked["q1"] == [("d2", s["d2"]), ("d3", s["d3"]), ("d1", s["d1"]), ("d6", s["d1"] - 1)]
    assert ranked["q2"] == [("d4", s["d4"]), ("d5", s["d5"])]
    assert scorer.calls == [5]  # both queries in one chunk


def test_rerank_run_chunks_by_whole_queries(collection):
    run, queries, corpus = collection
    scorer = FakeScorer()
    rerank_run(scorer, load_rerank_inputs(run, queries, corpus, depth=3), chunk_size=2, progress=False)
    assert scorer.calls == [3, 2]  # q1's three pairs are not split across calls


def test_missing_query_and_document_ids_name_the_run_line(collection, tmp_path):
    run, queries, corpus = collection
    bad_run = write(tmp_path / "bad.trec", run.read_text() + "q7 Q0 d1 1 1.0 bm25\n")
    with pytest.raises(InputFileError, match=r"bad\.trec:7: query id 'q7' is not in .*queries\.tsv"):
        load_rerank_inputs(bad_run, queries, corpus)
    bad_run = write(tmp_path / "bad.trec", run.read_text() + "q2 Q0 d9 3 1.0 bm25\nq2 Q0 d8 4 0.5 bm25\n")
    with pytest.raises(
        InputFileError, match=r"bad\.trec:7: document id 'd9' is not in .*corpus\.jsonl \(1 more"
    ):
        load_rerank_inputs(bad_run, queries, corpus)
    # Below the depth, an unknown document is fine: its text is never needed.
    assert load_rerank_inputs(bad_run, queries, corpus, depth=2).run["q2"][-1].doc_id == "d8"


def test_rerank_needs_one_score_per_document(collection):
    inputs = load_rerank_inputs(*collection)
    with pytest.raises(InvalidOptionError, match="single --cutoff-layers"):
        rerank_run(FakeScorer(layers=2), inputs, progress=False)


def test_reranked_run_round_trips_through_the_reader(collection, tmp_path):
    from autorerank.io import write_run_lines

    ranked = rerank_run(FakeScorer(), load_rerank_inputs(*collection, depth=2), progress=False)
    out = tmp_path / "reranked.trec"
    with out.open("w") as handle:
        for query_id, ranking in ranked.items():
            write_run_lines(handle, query_id, ranking, "ce")
    back = read_run(out)
    assert {q: [(e.doc_id, e.score) for e in entries] for q, entries in back.items()} == ranked
    assert [e.rank for e in back["q1"]] == [1, 2, 3, 4]


def test_an_interrupted_score_job_resumes_where_it_stopped(tmp_path):
    class InterruptedScorer(FakeScorer):
        def score(self, pairs):
            if len(self.calls) == 2:
                raise KeyboardInterrupt  # Ctrl-C during the third chunk
            return super().score(pairs)

    source, out = pairs_file(tmp_path), tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        score_pair_file(
            InterruptedScorer(), plan_score_job(source, out, fmt="jsonl"), chunk_size=2, progress=False
        )
    assert len(read_scores(out)) == 4  # the two chunks finished before the interrupt
    scorer = FakeScorer()
    score_pair_file(scorer, plan_score_job(source, out, fmt="jsonl"), chunk_size=2, progress=False)
    assert scorer.calls == [2, 1]
    assert read_scores(out) == [{"index": i, "score": fake_score(*pair)} for i, pair in enumerate(PAIRS)]


def test_output_cannot_be_the_input(tmp_path):
    source = pairs_file(tmp_path)
    with pytest.raises(InputFileError, match="is the input file too"):
        plan_score_job(source, tmp_path / "." / "pairs.jsonl", fmt="jsonl")
    assert len(source.read_text().splitlines()) == len(PAIRS)


# ---------------------------------------------------------------- settings recorded next to the output

SETTINGS = {"model": "/models/a", "options": {"--normalize": True}}


def test_settings_are_written_before_the_first_chunk_and_checked_on_resume(tmp_path):
    class CheckingScorer(FakeScorer):
        def score(self, pairs):
            assert meta_file.exists()  # already there when the first chunk is scored
            return super().score(pairs)

    source, out = pairs_file(tmp_path), tmp_path / "out.jsonl"
    meta_file = tmp_path / "out.jsonl.meta.json"
    job = plan_score_job(source, out, fmt="jsonl", settings=SETTINGS)
    assert not meta_file.exists()  # planning writes nothing
    score_pair_file(CheckingScorer(), job, chunk_size=3, progress=False)
    meta = json.loads(meta_file.read_text())
    assert {key: meta[key] for key in SETTINGS} == SETTINGS
    assert meta["input"]["size"] == source.stat().st_size
    write(out, "".join(out.read_text().splitlines(keepends=True)[:2]))
    assert plan_score_job(source, out, fmt="jsonl", settings=SETTINGS).done == 2  # same settings: resumes
    moved = source.rename(tmp_path / "moved.jsonl")  # the input's path may change, not its content
    assert plan_score_job(moved, out, fmt="jsonl", settings=SETTINGS).done == 2
    other = {"model": "/models/b", "options": {}}
    with pytest.raises(InputFileError) as caught:
        plan_score_job(moved, out, fmt="jsonl", settings=other)
    message = str(caught.value)
    assert message.startswith(f"{out}: was written with other settings (")
    assert 'model: "/models/b" now, "/models/a" when the output was written' in message
    assert "; --normalize: not given now, true when the output was written" in message
    assert plan_score_job(moved, out, fmt="jsonl").done == 2  # no settings given: nothing to check


def test_resume_refuses_another_input(tmp_path):
    out = tmp_path / "out.jsonl"
    score_pair_file(FakeScorer(), plan_score_job(pairs_file(tmp_path), out, fmt="jsonl", settings=SETTINGS))
    write(out, out.read_text().splitlines(keepends=True)[0])
    big = pairs_file(tmp_path, PAIRS * 400)  # larger than the fingerprinted head and tail together
    with pytest.raises(InputFileError, match="input size: "):
        plan_score_job(big, out, fmt="jsonl", settings=SETTINGS)
    score_pair_file(FakeScorer(), plan_score_job(big, out, fmt="jsonl", settings=SETTINGS, overwrite=True))
    write(out, out.read_text().splitlines(keepends=True)[0])
    lines = big.read_text().splitlines(keepends=True)
    middle = len(lines) // 2
    write(big, "".join([*lines[:middle], lines[middle].replace("red", "RED"), *lines[middle + 1 :]]))
    assert (
        plan_score_job(big, out, fmt="jsonl", settings=SETTINGS).done == 1
    )  # an edit in the middle is not seen
    write(big, "".join([*lines[:-1], lines[-1].replace("red", "RED")]))
    with pytest.raises(InputFileError, match="input sha256_first_last_64k: "):
        plan_score_job(big, out, fmt="jsonl", settings=SETTINGS)


def test_resume_from_standard_input_is_refused_and_overwrite_starts_again(tmp_path):
    """Standard input leaves nothing to fingerprint: the scores already written may be for other pairs."""
    out = tmp_path / "out.jsonl"
    score_pair_file(FakeScorer(), plan_score_job(pairs_file(tmp_path), out, fmt="jsonl", settings=SETTINGS))
    with pytest.raises(
        InputFileError,
        match=rf"{re.escape(str(out))}: already holds {len(PAIRS)} scores, and pairs read from",
    ):
        plan_score_job("-", out, fmt="jsonl", settings=SETTINGS)
    assert plan_score_job("-", out, fmt="jsonl", settings=SETTINGS, overwrite=True).done == 0


def test_progress_bar_has_a_total_for_a_regular_file(tmp_path, capsys):
    source = write(tmp_path / "pairs.tsv", "query\tpassage\n" + "".join(f"{q}\t{p}\n" for q, p in PAIRS))
    job = plan_score_job(source, tmp_path / "out.jsonl", fmt="tsv")
    score_pair_file(FakeScorer(), job, chunk_size=3, progress=True)
    err = capsys.readouterr().err
    assert "100%" in err and "7.00/7.00" in err  # the header line counted at first, the bar ends at the pairs


def test_streams_are_written_without_resuming(tmp_path):
    import io

    stream = io.StringIO()
    job = plan_score_job(pairs_file(tmp_path), "-", fmt="jsonl", settings=SETTINGS)
    assert (job.done, job.meta) == (0, None)
    score_pair_file(FakeScorer(), job, progress=False, stdout=stream)
    assert [json.loads(line)["index"] for line in stream.getvalue().splitlines()] == list(range(7))
    if os.path.exists("/dev/null"):
        job = plan_score_job(pairs_file(tmp_path), "/dev/null", fmt="jsonl", settings=SETTINGS)
        assert score_pair_file(FakeScorer(), job, progress=False).scored == 7
    if os.path.exists("/dev/full"):
        job = plan_score_job(pairs_file(tmp_path), "/dev/full", fmt="jsonl")
        with pytest.raises(
            InputFileError, match=r"^/dev/full: cannot write the scores \(No space left on device\)$"
        ):
            score_pair_file(FakeScorer(), job, progress=False)
