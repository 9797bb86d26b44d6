"""What each ``autorerank`` command does: check its files, load the model, call the public API.

Files are checked before the model is loaded, so a typo in a path or a bad line is reported
in a second instead of after a minute of loading weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import IO, Any, TextIO

from .. import evaluation, jobs
from ..default_model import DEFAULT_MODEL
from ..errors import STDIN, AutoRerankError, InputFileError, InvalidOptionError, UnknownOptionError
from ..io.lines import atomic_writer, numbered_lines
from ..io.pairs import pair_format
from ..io.trec import read_qrels, read_run, run_to_dict, write_run_lines
from .parser import MODEL_FLAGS, model_kwargs

__all__ = ["COMMANDS", "load_model"]


# Options that change how fast scores come, or where things are kept, but not the scores: left out of the
# settings a score output records, so that resuming with another --batch-size or --device is allowed.
_SCORE_NEUTRAL = frozenset(
    {"devices", "batch_size", "max_batch_tokens", "cache_dir", "onnx_dir", "worker_timeout"}
)
# Characters that would split a document of `rank`'s plain output into several lines or columns (str.splitlines'
# line breaks and the tab), written as Python escapes; the backslash first, so the text reads back unambiguously.
_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
    | {char: repr(char)[1:-1] for char in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
)


def load_model(args: argparse.Namespace) -> Any:
    """``args.model`` with the model flags given; strict: a flag that would do nothing for it is a usage error
    naming the flag (every command that loads a model, ``serve`` included, goes through here)."""
    from .. import AutoReranker

    kwargs = model_kwargs(args)
    try:
        return AutoReranker.from_finetuned(args.model, strict=True, **kwargs)
    # An option this kind of model does not take, e.g. --prompt on an encoder.
    except UnknownOptionError as exc:
        flags = [str(row.flag) for row in MODEL_FLAGS if row.name in exc.names] or exc.names
        verb = "does" if len(flags) == 1 else "do"
        raise InvalidOptionError(
            f"{', '.join(flags)} {verb} not apply to {_kind_of(args.model, kwargs)}; leave it out"
        ) from None


def _kind_of(model: str, kwargs: dict[str, Any]) -> str:
    """How to name the kind of ``model`` in a message (reads its config.json, not its weights)."""
    from ..auto import detect_kind
    from ..loading import normalize_model_path

    try:
        kind, _ = detect_kind(
            normalize_model_path(model), kwargs.get("model_class"), cache_dir=kwargs.get("cache_dir")
        )
    except (AutoRerankError, OSError):
        return "this model"
    return f"{kind} models"


def _score_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What a score output records: the model and the flags given that change scores (at a non-default value)."""
    model = str(Path(args.model).resolve()) if Path(args.model).exists() else args.model
    options = {
        str(row.flag): getattr(args, row.name)
        for row in MODEL_FLAGS
        if row.name not in _SCORE_NEUTRAL and getattr(args, row.name) not in (None, row.default)
    }
    return {"model": model, "options": options}


def _check_output_dir(path: str) -> None:
    if path == STDIN:
        return
    parent = Path(path).parent
    if not parent.is_dir():
        raise InputFileError(path, None, f"cannot write here: the folder {str(parent)!r} does not exist")


def _format_score(score: Any) -> str:
    # repr gives the shortest text that reads back as the same float: printed == computed.
    return " ".join(repr(float(s)) for s in score) if isinstance(score, (list, tuple)) else repr(float(score))


def _stdin_documents() -> list[str]:
    # At a terminal, a user who forgot the documents would otherwise see nothing happen.
    if sys.stdin is not None and sys.stdin.isatty():
        print(
            "autorerank: reading documents from standard input, one per line; end with Ctrl-D "
            "(or pass the documents as arguments after --query)",
            file=sys.stderr,
        )
    return [text for _, text in numbered_lines(STDIN) if text.strip()]


def run_rank(args: argparse.Namespace, out: TextIO) -> int:
    if args.model is None:
        args.model = DEFAULT_MODEL
        print(
            f"autorerank: no MODEL given: ranking with the embedded default model {DEFAULT_MODEL} "
            "(name a model before --query to use another)",
            file=sys.stderr,
        )
    documents = args.documents or _stdin_documents()
    if not documents:
        raise InputFileError(
            STDIN, None, "no documents: pass them as arguments or one per line on standard input"
        )
    with load_model(args) as reranker:
        results = reranker.rerank(args.query, documents, top_k=args.top_k)
    if args.json:
        out.write(
            json.dumps([dataclasses.asdict(result) for result in results], ensure_ascii=False, indent=2)
            + "\n"
        )
        return 0
    out.write("rank\tscore\tdocument\n")
    out.writelines(
        f"{rank}\t{_format_score(result.relevance_score)}\t{result.document.translate(_ESCAPES)}\n"
        for rank, result in enumerate(results, start=1)
    )
    return 0


def run_score(args: argparse.Namespace, out: TextIO) -> int:
    if args.ray:
        return _run_score_on_ray(args)
    given = [flag for flag, value in _RAY_FLAGS.items() if getattr(args, value) is not None]
    if given:
        raise InvalidOptionError(f"{given[0]} needs --ray")
    fmt = pair_format(args.input, args.input_format)
    _check_output_dir(args.output)
    job = jobs.plan_score_job(
        args.input, args.output, fmt=fmt, overwrite=args.overwrite, settings=_score_settings(args)
    )
    with load_model(args) as reranker:
        result = jobs.score_pair_file(
            reranker, job, chunk_size=args.chunk_size, progress=args.progress, stdout=out
        )
    resumed = f" (resumed after {result.skipped} already scored)" if result.skipped else ""
    where = "standard output" if args.output == STDIN else args.output
    print(f"scored {result.scored} pairs into {where}{resumed}", file=sys.stderr)
    return 0


# The flags that only mean something with --ray, and where they are kept.
_RAY_FLAGS = {
    "--ray-address": "ray_address",
    "--actors": "actors",
    "--cpus-per-actor": "cpus_per_actor",
    "--gpus-per-actor": "gpus_per_actor",
}


def _run_score_on_ray(args: argparse.Namespace) -> int:
    """``score --ray``: Ray Data reads the pairs, one model per actor scores them, Ray Data writes the rows."""
    from .. import ray as on_ray

    if args.input_format is not None:
        raise InvalidOptionError(
            "--input-format does not apply with --ray: the input's name gives its format"
        )
    on_ray.pair_file_format(args.input)  # files Ray cannot read or write fail before Ray starts
    on_ray.check_output(args.output, overwrite=args.overwrite)
    actors = args.actors or 1
    with on_ray.connected(args.ray_address, progress=args.progress):
        if args.ray_address is None and not os.environ.get("RAY_ADDRESS"):  # a Ray on this machine
            on_ray.check_room(actors, args.cpus_per_actor)
        scored = on_ray.score_dataset(
            on_ray.read_pairs_dataset(args.input),
            args.model,
            concurrency=actors,
            num_cpus=args.cpus_per_actor,
            num_gpus=args.gpus_per_actor or 0,
            batch_size=args.chunk_size,
            strict=True,
            **model_kwargs(args),
        )
        on_ray.write_scores(scored, args.output, overwrite=args.overwrite)
    print(f"scored {args.input} into {args.output} on Ray ({actors} actor(s))", file=sys.stderr)
    return 0


def run_rerank_run(args: argparse.Namespace, out: TextIO) -> int:
    _check_output_dir(args.output)
    inputs = jobs.load_rerank_inputs(args.run, args.queries, args.corpus, depth=args.depth)
    with load_model(args) as reranker:
        ranked = jobs.rerank_run(reranker, inputs, chunk_size=args.chunk_size, progress=args.progress)
    if args.output == STDIN:
        _write_run(out, ranked, args.tag)
    else:
        with atomic_writer(args.output) as handle:
            _write_run(handle, ranked, args.tag)
    reranked = sum(min(len(entries), args.depth) for entries in inputs.run.values())
    where = "standard output" if args.output == STDIN else args.output
    print(f"reranked {reranked} documents of {len(ranked)} queries into {where}", file=sys.stderr)
    return 0


def _write_run(handle: IO[str], ranked: jobs.RankedRun, tag: str) -> None:
    for query_id, ranking in ranked.items():
        write_run_lines(handle, query_id, ranking, tag)


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
    if args.model is None:
        args.model = DEFAULT_MODEL
    with load_model(args) as reranker:
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


def run_serve(args: argparse.Namespace, out: TextIO) -> int:
    from ..server.cli import run_serve as serve

    return serve(args)


COMMANDS = {
    "serve": run_serve,
    "rank": run_rank,
    "score": run_score,
    "rerank-run": run_rerank_run,
    "eval": run_eval,
    "info": run_info,
}
