"""Query and corpus files: look up the texts behind the ids of a run.

Two layouts are read, chosen by the file name (``.jsonl``/``.json``, ``.tsv``, each
optionally ``.gz``) or, for other names, by whether the first line starts with ``{``:

* BEIR JSONL: queries ``{"_id", "text"}``, corpus ``{"_id", "title", "text"}`` (title optional);
* TSV: ``id<TAB>text``, split at the first tab (MS MARCO's ``queries.tsv``/``collection.tsv``); a corpus
  may also have three columns, ``docid<TAB>title<TAB>text``, or the order a first header line names
  (``id<TAB>text<TAB>title`` in DPR's ``psgs_w100.tsv``; header names: an id, ``title``, ``text``).

A corpus document's title and text are joined as BEIR's reranking and dense-retrieval code
join them, ``(title + " " + text).strip()`` (``beir/reranking/rerank.py``; its SentenceBERT
model does the same with its default separator), so that scores match runs produced with
BEIR. Query texts, like BEIR's, are used verbatim.

Corpora can be far larger than memory, so :func:`read_texts` streams the file once and keeps
only the ids it is asked for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection

from ..errors import InputFileError
from .lines import first_text_line, numbered_lines

__all__ = ["join_title", "read_corpus", "read_queries"]


def join_title(title: str, text: str) -> str:
    """A document's text as a reranker sees it: BEIR's ``(title + " " + text).strip()``."""
    return f"{title} {text}".strip()


def read_queries(path: str | os.PathLike[str], wanted: Collection[str] | None = None) -> dict[str, str]:
    """Map query ids to query texts (kept verbatim), for the ids in ``wanted`` (all when ``None``)."""
    return _read_texts(path, wanted, documents=False)


def read_corpus(path: str | os.PathLike[str], wanted: Collection[str] | None = None) -> dict[str, str]:
    """Map document ids to texts, title and text joined, for the ids in ``wanted`` (all when ``None``)."""
    return _read_texts(path, wanted, documents=True)


def _read_texts(
    path: str | os.PathLike[str], wanted: Collection[str] | None, *, documents: bool
) -> dict[str, str]:
    """Map ids to texts for the ids in ``wanted`` (all ids when ``None``).

    Every line is checked, wanted or not, so a malformed file is reported whatever it holds.
    Ids missing from the file are simply absent from the result: the caller knows which input
    line asked for them and reports it. An id that appears twice is an error when it is wanted.
    """
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    as_json = _is_jsonl(path)
    title_first: bool | None = None  # the column order of a corpus TSV; None until its first line is read
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        if as_json:
            item_id, text = _parse_json_item(path, number, line, documents=documents)
        elif not documents:
            item_id, text = _parse_tsv_item(path, number, line)
        elif title_first is None and (header := _tsv_header(line)) is not None:
            title_first = header
            continue
        else:
            title_first = True if title_first is None else title_first
            item_id, text = _parse_tsv_document(path, number, line, title_first=title_first)
        if wanted is not None and item_id not in wanted:
            continue
        if item_id in texts:
            raise InputFileError(
                path, number, f"id {item_id!r} appears twice (first on line {first_line[item_id]})"
            )
        texts[item_id] = text
        first_line[item_id] = number
    return texts


def _is_jsonl(path: str | os.PathLike[str]) -> bool:
    name = str(path).lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return True
    if name.endswith((".tsv", ".tab")):  # a .txt is sniffed: JSONL files are often named so
        return False
    first = first_text_line(path)
    return first is not None and first.lstrip().startswith("{")


def _parse_tsv_item(path: str | os.PathLike[str], number: int, line: str) -> tuple[str, str]:
    item_id, tab, text = line.partition("\t")
    if not tab:
        raise InputFileError(path, number, "expected 2 tab-separated columns 'id<TAB>text', found 1")
    if not item_id.strip():
        raise InputFileError(path, number, "the id column is empty")
    return item_id.strip(), text


_ID_NAMES = ("id", "_id", "docid", "doc_id", "pid", "corpus-id")


def _tsv_header(line: str) -> bool | None:
    """For a corpus TSV header line (an id name, then ``title`` and ``text`` in either order): whether the title
    comes first; None when the line is not a header."""
    names = [cell.strip().lower() for cell in line.split("\t")]
    if len(names) == 3 and names[0] in _ID_NAMES and sorted(names[1:]) == ["text", "title"]:
        return names[1] == "title"
    if len(names) == 2 and names[0] in _ID_NAMES and names[1] == "text":
        return True
    return None


def _parse_tsv_document(
    path: str | os.PathLike[str], number: int, line: str, *, title_first: bool
) -> tuple[str, str]:
    """``docid<TAB>text``, or ``docid<TAB>title<TAB>text`` (title and text joined as BEIR joins them)."""
    columns = line.split("\t")
    if len(columns) > 3:
        raise InputFileError(
            path,
            number,
            f"expected 'docid<TAB>text' or 'docid<TAB>title<TAB>text', found {len(columns)} tab-separated columns",
        )
    item_id, text = _parse_tsv_item(path, number, line)
    if len(columns) == 3:
        title, body = columns[1:] if title_first else columns[:0:-1]
        text = join_title(title, body)
    return item_id, text


def _parse_json_item(
    path: str | os.PathLike[str], number: int, line: str, *, documents: bool
) -> tuple[str, str]:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputFileError(path, number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, dict):
        raise InputFileError(
            path, number, f"expected a JSON object with '_id' and 'text', found {type(item).__name__}"
        )
    for key in ("_id", "text"):
        if key not in item:
            found = ", ".join(repr(name) for name in item) or "none"
            raise InputFileError(path, number, f"missing field {key!r} (fields found: {found})")
    item_id, text, title = item["_id"], item["text"], item.get("title") or ""
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
        raise InputFileError(
            path, number, f"'_id' must be a string or an integer, found {type(item_id).__name__}"
        )
    for key, value in (("text", text), ("title", title)):
        if not isinstance(value, str):
            raise InputFileError(path, number, f"{key!r} must be a string, found {type(value).__name__}")
    return str(item_id), join_title(title, text) if documents else text
