"""What each ``autorerank`` command does: check its files, load the model, call the public API.

Files are checked before the model is loaded, so a typo in a path or a bad line is reported
in a second instead of after a minute of loading weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from .. import evaluation, jobs
from ..errors import STDIN, InputFileError, InvalidOptionError, UnknownOptionError
from ..io.lines import atomic_writer, numbered_lines
from ..io.pairs import pair_format
from ..io.trec import read_qrels, read_run, run_to_dict, write_run_lines
from .parser import MODEL_FLAGS, model_kwargs

__all__ = ["COMMANDS"]


def _load_model(args: argparse.Namespace) -> Any:
    from .. import AutoReranker

    kwargs = model_kwargs(args)
    try:
        return AutoReranker.from_finetuned(args.model, **kwargs)
    except (
        UnknownOptionError
    ) as exc:  # an option this kind of model does not take, e.g. --prompt on an encoder
        flags = [str(row.flag) for row in MODEL_FLAGS if row.name in exc.names]
        raise InvalidOptionError(f"{', '.join(flags)} does not apply to this model ({exc})") from None


def _check_output_dir(path: str) -> None:
    parent = Path(path).parent
    if not parent.is_dir():
        raise InputFileError(path, None, f"cannot write here: the folder {str(parent)!r} does not exist")


def _format_score(score: Any) -> str:
    # repr gives the shortest text that reads back as the same float: printed == computed.
    return " ".join(repr(float(s)) for s in score) if isinstance(score, (list, tuple)) else repr(float(score))


def run_rank(args: argparse.Namespace, out: TextIO) -> int:
    documents = args.documents or [text for _, text in numbered_lines(STDIN) if text.strip()]
    if not documents:
        raise InputFileError(
            STDIN, None, "no documents: pass them as arguments or one per line on standard input"
        )
    with _load_model(args) as reranker:
        results = reranker.rerank(args.query, documents, top_k=args.top_k)
    if args.json:
        out.write(
            json.dumps([dataclasses.asdict(result) for result in results], ensure_ascii=False, indent=2)
            + "\n"
        )
        return 0
    out.writelines(
        f"{rank}\t{_format_score(result.relevance_score)}\t{result.document}\n"
        for rank, result in enumerate(results, start=1)
    )
    return 0


def run_score(args: argparse.Namespace, out: TextIO) -> int:
    fmt = pair_format(args.input, args.input_format)
    _check_output_dir(args.output)
    job = jobs.plan_score_job(args.input, args.output, fmt=fmt, overwrite=args.overwrite)
    with _load_model(args) as reranker:
        result = jobs.score_pair_file(reranker, job, chunk_size=args.chunk_size, progress=args.progress)
    resumed = f" (resumed after {result.skipped} already scored)" if result.skipped else ""
    print(f"scored {result.scored} pairs into {args.output}{resumed}", file=sys.stderr)
    return 0


def run_rerank_run(args: argparse.Namespace, out: TextIO) -> int:
    _check_output_dir(args.output)
    inputs = jobs.load_rerank_inputs(args.run, args.queries, args.corpus, depth=args.depth)
    with _load_model(args) as reranker:
        ranked = jobs.rerank_run(reranker, inputs, chunk_size=args.chunk_size, progress=args.progress)
    with atomic_writer(args.output) as handle:
        for query_id, ranking in ranked.items():
            write_run_lines(handle, query_id, ranking, args.tag)
    reranked = sum(min(len(entries), args.depth) for entries in inputs.run.values())
    print(f"reranked {reranked} documents of {len(ranked)} queries into {args.output}", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace, out: TextIO) -> int:
    evaluation.parse_measures(args.metrics)  # an unknown measure fails before any file is read
    qrels = read_qrels(args.qrels)
    paths = [args.compare, args.run] if args.compare else [args.run]
    columns = [
        (path, evaluation.evaluate(qrels, run_to_dict(read_run(path)), args.metrics)) for path in paths
    ]
    if args.json:
        records = {path: dataclasses.asdict(result) for path, result in columns}
        out.write(json.dumps(records, indent=2) + "\n")
    else:
        out.write(evaluation.format_table(columns))
    return 0


def run_info(args: argparse.Namespace, out: TextIO) -> int:
    with _load_model(args) as reranker:
        info = dataclasses.asdict(reranker.info)
    if args.json:
        out.write(json.dumps(info, indent=2, default=str) + "\n")
        return 0
    width = max(len(name) for name in info)
    for name, value in info.items():
        shown = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        if name == "num_parameters" and isinstance(value, int):
            shown = f"{value:,}"
        out.write(f"{name.ljust(width)}  {shown}\n")
    return 0


COMMANDS = {
    "rank": run_rank,
    "score": run_score,
    "rerank-run": run_rerank_run,
    "eval": run_eval,
    "info": run_info,
}
