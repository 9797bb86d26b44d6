"""Readers and writers of TREC runs, qrels, query and corpus files: content and error messages."""

from __future__ import annotations

import gzip
import io

import pytest
from conftest import write

from autorerank.errors import InvalidInputError
from autorerank.io import (
    InputFileError,
    atomic_writer,
    read_corpus,
    read_qrels,
    read_queries,
    read_run,
    write_run_lines,
)

# ---------------------------------------------------------------- runs


def test_run_is_sorted_by_score_then_rank_then_file_order(tmp_path):
    run = read_run(
        write(
            tmp_path / "run.trec",
            "q1 Q0 a 3 1.0 bm25\n"
            "q1 Q0 b 1 5.0 bm25\n"
            "\n"
            "q2 Q0 x 1 2.0 bm25\n"
            "q1 Q0 c 2 1.0 bm25\n"  # ties with a on score; rank 2 < 3 puts it first
            "q1\tQ0\td\t4\t-1e2\tbm25\n",  # tabs are whitespace too
        )
    )
    assert list(run) == ["q1", "q2"]
    assert [entry.doc_id for entry in run["q1"]] == ["b", "c", "a", "d"]
    assert [entry.score for entry in run["q1"]] == [5.0, 1.0, 1.0, -100.0]
    assert run["q1"][0].line == 2
    assert run["q2"][0].doc_id == "x"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("q1 Q0 a 1 2.0", "needs 6 fields"),
        ("q1 Q0 a 1 2.0 tag extra", "found 7"),
        ("q1 Q0 a one 2.0 tag", "rank 'one' (field 4) is not an integer"),
        ("q1 Q0 a 1 high tag", "score 'high' (field 5) is not a number"),
        ("q1 Q0 a 1 nan tag", "NaN"),
    ],
)
def test_bad_run_lines_name_file_and_line(tmp_path, line, problem):
    path = write(tmp_path / "bad.trec", f"q1 Q0 z 1 9.0 tag\n{line}\n")
    with pytest.raises(InputFileError) as caught:
        read_run(path)
    assert str(caught.value).startswith(f"{path}:2: ")
    assert problem in str(caught.value)
    assert caught.value.line == 2
    assert isinstance(caught.value, InvalidInputError)  # part of the library's hierarchy


def test_duplicate_document_in_a_run_is_an_error(tmp_path):
    path = write(tmp_path / "dup.trec", "q1 Q0 a 1 2.0 t\nq2 Q0 a 1 2.0 t\nq1 Q0 a 2 1.0 t\n")
    with pytest.raises(
        InputFileError, match=r"dup\.trec:3: document 'a' appears twice for query 'q1' \(first on line 1\)"
    ):
        read_run(path)


def test_non_utf8_bytes_are_reported_with_line_and_column(tmp_path):
    path = write(tmp_path / "latin1.trec", b"q1 Q0 a 1 2.0 t\nq1 Q0 caf\xe9 2 1.0 t\n")
    with pytest.raises(InputFileError, match=r"latin1\.trec:2: not valid UTF-8 \(byte 0xe9 at column 10\)"):
        read_run(path)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        read_run(tmp_path / "absent.trec")


def test_written_run_reads_back_with_exact_scores(tmp_path):
    scores = [0.1 + 0.2, -3.0000000000000004, 1e-300]
    buffer = io.StringIO()
    write_run_lines(buffer, "q7", [("d1", scores[0]), ("d2", scores[1]), ("d3", scores[2])], "tag")
    # sorted by the reader by score: d1 > d3 > d2
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "q7 Q0 d1 1 0.30000000000000004 tag"
    assert [line.split()[3] for line in lines] == ["1", "2", "3"]
    run = read_run(write(tmp_path / "out.trec", buffer.getvalue()))
    assert {entry.doc_id: entry.score for entry in run["q7"]} == {
        "d1": scores[0],
        "d2": scores[1],
        "d3": scores[2],
    }


def test_atomic_writer_keeps_the_old_file_when_writing_fails(tmp_path):
    target = write(tmp_path / "out.trec", "old content\n")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write("half of the new")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.trec"]  # no temporary file left behind
    with atomic_writer(target) as handle:
        handle.write("new\n")
    assert target.read_text() == "new\n"


# ---------------------------------------------------------------- qrels


def test_qrels_in_trec_and_beir_formats(tmp_path):
    trec = read_qrels(write(tmp_path / "qrels.txt", "q1 0 a 2\nq1 0 b 0\n\nq2 Q0 c 1\n"))
    beir = read_qrels(
        write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\nq1\ta\t2\nq1\tb\t0\nq2\tc\t1\n")
    )
    assert trec == beir == {"q1": {"a": 2, "b": 0}, "q2": {"c": 1}}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("q1 0 a 1\nq1 b\n", ":2: a qrels line needs 4 fields"),
        ("q1 0 a 1\nq1 0 b\n", ":2: a qrels line needs 4 fields 'qid 0 docid relevance' .*, found 3"),
        (
            "q1 0 d1\n",
            ":1: a qrels line needs 4 fields 'qid 0 docid relevance' .* with its header line, found 3",
        ),
        ("query-id\tcorpus-id\tscore\nq1\ta\t1\nq1 0 b 1\n", ":3: a qrels line needs 3 fields .* found 4"),
        ("q1\ta\t1\nq1 0 b 1\n", ":2: a qrels line needs 3 fields 'query-id<TAB>corpus-id<TAB>score'"),
        ("q1 0 a 1\nq1 0 b x\n", ":2: relevance 'x' is not an integer"),
        ("q1 0 a 1\nq1 0 a 2\n", ":2: document 'a' of query 'q1' is judged 2 here but 1 on line 1"),
    ],
)
def test_bad_qrels(tmp_path, text, problem):
    with pytest.raises(InputFileError, match=problem):
        read_qrels(write(tmp_path / "qrels.txt", text))


def test_beir_qrels_without_header_still_read(tmp_path):
    assert read_qrels(write(tmp_path / "qrels.tsv", "q1\ta\t2\nq1\tb\t0\n")) == {"q1": {"a": 2, "b": 0}}


# ---------------------------------------------------------------- queries and corpus


def test_beir_corpus_joins_title_and_text_like_beir(tmp_path):
    path = write(
        tmp_path / "corpus.jsonl",
        '{"_id": "d1", "title": "Paris", "text": "is the capital of France."}\n'
        '{"_id": "d2", "title": "", "text": "  no title  "}\n'
        '{"_id": 3, "text": "integer id, no title field"}\n'
        '{"_id": "unused", "title": "t", "text": "x"}\n',
    )
    corpus = read_corpus(path, {"d1", "d2", "3", "absent"})
    # BEIR: (title + " " + text).strip()
    assert corpus == {
        "d1": "Paris is the capital of France.",
        "d2": "no title",
        "3": "integer id, no title field",
    }


def test_queries_tsv_and_jsonl_keep_text_verbatim(tmp_path):
    tsv = write(tmp_path / "queries.tsv", "1\twhat is a\ttab\n2\t hello \n")
    jsonl = write(tmp_path / "queries.jsonl", '{"_id": "1", "text": " hello "}\n')
    assert read_queries(tsv) == {"1": "what is a\ttab", "2": " hello "}
    assert read_queries(jsonl) == {"1": " hello "}


def test_corpus_tsv_gzip_and_format_sniffing(tmp_path):
    path = tmp_path / "collection.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("d1\tfirst passage\nd2\tsecond passage\n")
    assert read_corpus(path, {"d2"}) == {"d2": "second passage"}
    sniffed = write(tmp_path / "corpus.data", '{"_id": "d1", "text": "json without a json name"}\n')
    assert read_corpus(sniffed) == {"d1": "json without a json name"}


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("c.jsonl", '{"_id": "d1", "text": "ok"}\n{"_id": "d2", "body": "x"}\n', ":2: missing field 'text'"),
        ("c.jsonl", '{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": \n', ":2: not valid JSON"),
        ("c.jsonl", '["d1", "text"]\n', ":1: expected a JSON object"),
        ("c.jsonl", '{"_id": "d1", "text": 5}\n', ":1: 'text' must be a string"),
        ("c.tsv", "d1\tok\nd2 no tab\n", ":2: expected 2 tab-separated columns"),
    ],
)
def test_bad_corpus_lines(tmp_path, name, text, problem):
    with pytest.raises(InputFileError, match=problem):
        read_corpus(write(tmp_path / name, text), {"d1"})


def test_corpus_tsv_with_a_title_column_joins_it_like_beir(tmp_path):
    three = write(
        tmp_path / "corpus.tsv", "d1\tParis\tis the capital of France.\nd2\t\t no title \nd3\tjust text\n"
    )
    assert read_corpus(three) == {
        "d1": "Paris is the capital of France.",
        "d2": "no title",
        "d3": "just text",
    }
    dpr = write(tmp_path / "psgs_w100.tsv", "id\ttext\ttitle\n1\tis the capital.\tParis\n")  # DPR's order
    assert read_corpus(dpr) == {"1": "Paris is the capital."}
    beir = write(tmp_path / "beir.tsv", "_id\ttitle\ttext\nd1\tParis\tcapital\n")
    assert read_corpus(beir) == {"d1": "Paris capital"}
    # Queries keep their text verbatim, tabs included; the header names are data there.
    assert read_queries(write(tmp_path / "q.tsv", "id\ttitle\ttext\n")) == {"id": "title\ttext"}
    with pytest.raises(
        InputFileError, match=r"c4\.tsv:1: expected 'docid<TAB>text' or 'docid<TAB>title<TAB>text', found 4"
    ):
        read_corpus(write(tmp_path / "c4.tsv", "d1\ta\tb\tc\n"))


def test_texts_named_txt_are_sniffed(tmp_path):
    jsonl = write(tmp_path / "corpus.txt", '{"_id": "d1", "title": "T", "text": "x"}\n')
    assert read_corpus(jsonl) == {"d1": "T x"}
    assert read_queries(write(tmp_path / "queries.txt", "q1\twhat\n")) == {"q1": "what"}


def test_duplicate_wanted_id_is_an_error_but_unwanted_duplicates_are_not(tmp_path):
    path = write(tmp_path / "c.tsv", "d1\ta\nd2\tb\nd2\tc\nd1\td\n")
    assert read_corpus(write(tmp_path / "ok.tsv", "d1\ta\nd2\tb\nd2\tc\n"), {"d1"}) == {"d1": "a"}
    with pytest.raises(InputFileError, match=r"c\.tsv:4: id 'd1' appears twice \(first on line 1\)"):
        read_corpus(path, {"d1"})
