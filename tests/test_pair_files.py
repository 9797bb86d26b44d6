"""Pair files (JSONL, TSV, CSV) and the resumable score output."""

from __future__ import annotations

import json
import os

import pytest
from conftest import write

from autorerank.io import InputFileError, ScoreWriter, count_scores, pair_format, read_pairs


def pairs_of(path, fmt=None):
    return [(pair.query, pair.passage, pair.line) for pair in read_pairs(path, pair_format(path, fmt))]


def test_jsonl_pairs_as_objects_and_arrays(tmp_path):
    path = write(
        tmp_path / "pairs.jsonl",
        '{"query": "q1", "passage": "p1", "id": 7}\n\n["q2", "p2"]\n{"passage": "p3", "query": "q3"}\n',
    )
    assert pairs_of(path) == [("q1", "p1", 1), ("q2", "p2", 3), ("q3", "p3", 4)]


def test_tsv_pairs_skip_a_header(tmp_path):
    path = write(tmp_path / "pairs.tsv", 'query\tpassage\nwhat\tanswer\r\nhow\t"quoted" text\n')
    assert pairs_of(path) == [("what", "answer", 2), ("how", '"quoted" text', 3)]


def test_csv_pairs_with_named_columns_and_quoted_newlines(tmp_path):
    path = write(
        tmp_path / "pairs.csv",
        'id,passage,query\n1,"two\nlines, with comma",first query\n2,plain,second\n',
    )
    assert pairs_of(path) == [("first query", "two\nlines, with comma", 2), ("second", "plain", 4)]


def test_csv_pairs_without_header(tmp_path):
    path = write(tmp_path / "pairs.csv", 'a,b\n"c ""quoted""",d\n')
    assert pairs_of(path) == [("a", "b", 1), ('c "quoted"', "d", 2)]


def test_format_from_name_or_explicit(tmp_path):
    assert pair_format("x.JSONL.gz") == "jsonl"
    assert pair_format("-", "tsv") == "tsv"
    with pytest.raises(InputFileError, match="pass --input-format"):
        pair_format(write(tmp_path / "pairs.data", "neither json nor tabs\n"))
    with pytest.raises(
        InputFileError, match="<stdin>: has no name to tell the format from; pass --input-format"
    ):
        pair_format("-")  # standard input cannot be sniffed and read again


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("p.jsonl", '{"query": "q", "passage": "p"}\n{"query": "q"}\n', r":2: missing field 'passage'"),
        (
            "p.jsonl",
            '{"query": "q", "passage": "p"}\n{"query": 1, "passage": "p"}\n',
            r":2: the query must be a string",
        ),
        ("p.jsonl", '{"query": "q", "passage": "p"}\n"just text"\n', r':2: expected \{"query"'),
        (
            "p.jsonl",
            '{"query": "q", "passage": "p"}\n["q", "a \\ud800"]\n',
            r":2: the passage cannot be encoded as UTF-8: it holds a lone surrogate '\\ud800' at character 2",
        ),
        ("p.tsv", "q\tp\nq only\n", r":2: expected 2 tab-separated columns 'query<TAB>passage', found 1"),
        ("p.tsv", "q\tp\nq\tp\textra\n", r":2: expected 2 tab-separated columns .* found 3"),
        ("p.csv", "q,p\nq,p,x\n", r":2: expected 2 comma-separated columns, found 3"),
    ],
)
def test_bad_pair_lines_name_file_and_line(tmp_path, name, text, problem):
    path = write(tmp_path / name, text)
    with pytest.raises(InputFileError, match=problem) as caught:
        pairs_of(path)
    assert str(caught.value).startswith(str(path))


def test_pairs_are_read_lazily(tmp_path):
    path = write(tmp_path / "p.tsv", "q\tp1\nq\tp2\nbroken line\n")
    pairs = read_pairs(path, "tsv")
    assert next(pairs).passage == "p1"  # the bad third line is not read yet
    assert next(pairs).passage == "p2"
    with pytest.raises(InputFileError, match=":3:"):
        next(pairs)


# ---------------------------------------------------------------- score output


def test_score_writer_appends_records_that_read_back_exactly(tmp_path):
    out = tmp_path / "scores.jsonl"
    with ScoreWriter(out, start_index=0) as writer:
        writer.write_chunk([0.1 + 0.2, -1.5])
    with ScoreWriter(out, start_index=2) as writer:
        writer.write_chunk([[1.0, 2.5]])  # several cutoff layers: one list per pair
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == [
        {"index": 0, "score": 0.30000000000000004},
        {"index": 1, "score": -1.5},
        {"index": 2, "score": [1.0, 2.5]},
    ]
    assert count_scores(out) == 3
    assert count_scores(tmp_path / "absent.jsonl") == 0


def test_count_scores_drops_a_truncated_last_line(tmp_path):
    out = write(
        tmp_path / "scores.jsonl", '{"index": 0, "score": 1.0}\n{"index": 1, "score": 2.0}\n{"index": 2, "sc'
    )
    assert count_scores(out) == 2
    assert out.read_text() == '{"index": 0, "score": 1.0}\n{"index": 1, "score": 2.0}\n'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"index": 0, "score": 1.0}\nnot json\n{"index": 2, "score": 1.0}\n', ":2: not a valid JSON line"),
        ('{"index": 0, "score": 1.0}\n{"index": 5, "score": 1.0}\n', ":2: index 5 where 1 was expected"),
        ('{"index": 0, "score": "high"}\n', ":1: score 'high' is not a number"),
        ('{"query": "q", "passage": "p"}\n', r":1: expected a record"),
    ],
)
def test_count_scores_rejects_a_file_that_is_not_a_score_output(tmp_path, text, problem):
    out = write(tmp_path / "scores.jsonl", text)
    with pytest.raises(InputFileError, match=problem):
        count_scores(out)
    assert out.read_text() == text  # nothing is cut from a file we do not recognise


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("question\tanswer\nq\tp\n", [("q", "p", 2)]),
        ("Query\tDocument\nq\tp\n", [("q", "p", 2)]),
        ("\nQUESTION\tCONTEXT\nq\tp\n", [("q", "p", 3)]),  # the first non-blank row
        ("passage\tquery\np\tq\n", [("q", "p", 2)]),  # a header may put the passage first
        ("id\tquery\ttext\n1\tq\tp\n", [("q", "p", 2)]),  # and pick two columns out of more
        ("query\tpassage\nquestion\tanswer\n", [("question", "answer", 2)]),  # only the first row is a header
        ("what\ttext\n", [("what", "text", 1)]),  # not a query name: data
    ],
)
def test_tsv_headers_with_common_column_names(tmp_path, text, expected):
    assert pairs_of(write(tmp_path / "pairs.tsv", text)) == expected


def test_csv_headers_with_common_column_names(tmp_path):
    assert pairs_of(write(tmp_path / "a.csv", "query,text\nq,p\n")) == [("q", "p", 2)]
    assert pairs_of(write(tmp_path / "b.csv", "id,Context,Question,answer\n1,c,q,a\n")) == [("q", "c", 2)]
    with pytest.raises(InputFileError, match=r"b2\.csv:2: expected 4 comma-separated columns, found 2"):
        pairs_of(write(tmp_path / "b2.csv", "id,Context,Question,answer\nq,c\n"))


def test_format_is_sniffed_when_the_name_does_not_decide(tmp_path):
    jsonl_txt = write(tmp_path / "pairs.txt", '\n{"query": "q", "passage": "p"}\n')
    assert pair_format(jsonl_txt) == "jsonl"
    assert pairs_of(jsonl_txt) == [("q", "p", 2)]
    assert pair_format(write(tmp_path / "arrays.txt", '["q", "p"]\n')) == "jsonl"
    assert pair_format(write(tmp_path / "pairs2.txt", "[q]\tp\n")) == "tsv"  # not JSON: a TSV row
    assert pair_format(write(tmp_path / "plain.txt", "no tab here\n")) == "tsv"  # .txt defaults to TSV
    assert pair_format(write(tmp_path / "pairs.data", "q\tp\n")) == "tsv"
    assert (
        pair_format(write(tmp_path / "named.tsv", '{"query": "q", "passage": "p"}\n')) == "tsv"
    )  # named: as named


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('a,b\n"c,d\ne,f\ng,h\n', 2),  # the rest of the file would become one field
        ('a,b\nx,"two\nlines"\ny,"z ""q"" \nopen\n', 4),  # after a good multi-line field, with doubled quotes
        ('"a\nb",c\nx,"open\ny\n', 3),
    ],
)
def test_csv_unterminated_quote_names_the_line_where_the_field_starts(tmp_path, text, line):
    path = write(tmp_path / "pairs.csv", text)
    with pytest.raises(InputFileError) as caught:
        pairs_of(path)
    assert str(caught.value).startswith(f"{path}:{line}: unterminated quote")


def test_csv_unterminated_quote_in_a_large_file(tmp_path):
    rows = "".join(f"q{i},passage {i}\n" for i in range(20000))
    path = write(tmp_path / "pairs.csv", 'q,p\nq,"open\n' + rows)  # the field limit comes before the end
    with pytest.raises(InputFileError, match=r"pairs\.csv:2: unterminated quote"):
        pairs_of(path)


def test_csv_junk_after_a_closing_quote_is_malformed(tmp_path):
    path = write(tmp_path / "pairs.csv", 'a,b\n"c"d,e\n')
    with pytest.raises(InputFileError, match=r"pairs\.csv:2: malformed CSV \(',' expected after '\"'"):
        pairs_of(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"x" * 200_000, ":1: no line end within 65536 bytes"),  # one huge line, no line end
        (b'{"index": 0, "score": 1.0}\n' + b"y" * 70_000 + b"\n", ":2: no line end within 65536 bytes"),
        (b'{"index": 0, "score": 1.0}\nsome other text', ":2: a last line without a line end that is not"),
    ],
)
def test_count_scores_reads_bounded_lines(tmp_path, content, problem):
    out = write(tmp_path / "scores.jsonl", content)
    with pytest.raises(InputFileError, match=problem) as caught:
        count_scores(out)
    assert "does not look like an autorerank score output" in str(caught.value)
    assert out.read_bytes() == content  # nothing is cut from a file we do not recognise


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_count_scores_on_an_endless_device_stops(tmp_path):
    with pytest.raises(InputFileError, match=r"/dev/full:1: no line end within 65536 bytes"):
        count_scores("/dev/full")
