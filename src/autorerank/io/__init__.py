"""Readers and writers for the files the command line works with.

* :mod:`.lines`: line-numbered UTF-8 reading and atomic writes (errors are :class:`~autorerank.errors.InputFileError`);
* :mod:`.trec`: TREC runs and qrels;
* :mod:`.texts`: query and corpus files (BEIR JSONL or TSV);
* :mod:`.pairs`: (query, passage) pair files (JSONL, TSV, CSV);
* :mod:`.scores`: the resumable JSONL score output;
* :mod:`.meta`: the settings file next to it (``OUTPUT.meta.json``) that keeps a resume from mixing outputs.
"""

from __future__ import annotations

from ..errors import InputFileError
from .lines import atomic_writer, numbered_lines
from .pairs import PAIR_FORMATS, Pair, pair_format, read_pairs
from .scores import ScoreWriter, count_scores
from .texts import join_title, read_corpus, read_queries
from .trec import Qrels, Run, RunEntry, read_qrels, read_run, run_to_dict, write_run_lines

__all__ = [
    "PAIR_FORMATS",
    "InputFileError",
    "Pair",
    "Qrels",
    "Run",
    "RunEntry",
    "ScoreWriter",
    "atomic_writer",
    "count_scores",
    "join_title",
    "numbered_lines",
    "pair_format",
    "read_corpus",
    "read_pairs",
    "read_qrels",
    "read_queries",
    "read_run",
    "run_to_dict",
    "write_run_lines",
]
