"""The argument parser of ``autorerank``.

Model flags come from the option table (:data:`autorerank.options.OPTIONS`), each with the option it sets
as its ``dest``; :func:`model_kwargs` reads them back. A flag left out passes nothing, so the library's
(and the kind's) defaults apply.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from .. import __version__
from ..default_model import DEFAULT_MODEL
from ..evaluation import DEFAULT_MEASURES
from ..io.pairs import PAIR_FORMATS, PASSAGE_NAMES, QUERY_NAMES
from ..jobs import DEFAULT_CHUNK_SIZE
from ..options import OPTIONS, Option
from ..options import positive_int_text as positive_int

__all__ = ["MODEL_FLAGS", "add_model_flags", "build_parser", "layer_list", "model_kwargs", "parse_args"]


def run_tag(text: str) -> str:
    """argparse type: a TREC run tag, which must be one whitespace-free field."""
    if not text or any(char.isspace() for char in text):
        raise argparse.ArgumentTypeError(f"{text!r} must be one word without spaces")
    return text


def resource_count(text: str) -> float:
    """argparse type: how many CPUs or GPUs Ray reserves, 0 or more (a fraction shares one between actors)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a count of 0 or more")
    return value


def layer_list(text: str) -> list[int]:
    """argparse type ``"layers"`` of the option table: ``4`` or ``4,5`` (a flag given twice adds to the list)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a layer number or a comma-separated list of them (e.g. 4 or 4,5)"
        ) from None


# argparse types the option table names by a string, so that it needs no CLI code.
_NAMED_TYPES = {"layers": layer_list}
_LIST_NOTE = {"layers": " (comma-separated, e.g. 4,5, or the flag repeated)"}

# The library options that have a flag, from the one option table.
MODEL_FLAGS: tuple[Option, ...] = tuple(row for row in OPTIONS if row.flag)


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``from_finetuned`` keyword arguments the user set on the command line."""
    given = {row.name: getattr(args, row.name) for row in MODEL_FLAGS}
    return {name: value for name, value in given.items() if value is not None}


def _add_model_options(
    parser: argparse.ArgumentParser, *, model_optional: bool = False, before: str | None = None
) -> None:
    """MODEL and the model flags; ``before``: the option MODEL must precede (an optional MODEL followed by
    documents would otherwise be read as one)."""
    if model_optional:
        where = f", before {before}" if before else ""
        parser.add_argument(
            "model",
            metavar="MODEL",
            nargs="?",
            help=f"a checkpoint directory or a Hugging Face model name{where} (default: the embedded {DEFAULT_MODEL})",
        )
    else:
        parser.add_argument(
            "model", metavar="MODEL", help="a checkpoint directory or a Hugging Face model name"
        )
    add_model_flags(parser)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Every option-table row with a flag, as the ``model options`` group of ``parser`` (``serve`` uses it too)."""
    for name, function in _NAMED_TYPES.items():
        parser.register("type", name, function)
    group = parser.add_argument_group("model options")
    precision = group.add_mutually_exclusive_group()
    for row in MODEL_FLAGS:
        target = precision if row.name in ("use_fp16", "use_bf16", "precision") else group
        assert row.flag is not None
        note = _LIST_NOTE.get(str(row.cli.get("type")), "")
        target.add_argument(
            row.flag,
            dest=row.name,
            default=None,
            help=(row.help + note).replace("`", "").replace("%", "%%"),
            **row.cli,
        )


def _add_progress(parser: argparse.ArgumentParser, chunk_help: str) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: only on a terminal)",
    )
    parser.add_argument(
        "--chunk-size",
        type=positive_int,
        default=DEFAULT_CHUNK_SIZE,
        help=f"{chunk_help} (default {DEFAULT_CHUNK_SIZE})",
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line; ``rank`` also takes documents after its options.

    Plain argparse gives a ``nargs="*"`` positional whatever stands before the first option, so
    ``rank MODEL --query Q DOC...`` would reject the documents; ``parse_intermixed_args``
    collects positionals from both sides (it cannot be used on a parser with subcommands).
    """
    parser = build_parser()
    if argv and argv[0] == "rank":
        rank = parser.subcommand("rank")
        args = rank.parse_intermixed_args(argv[1:])
        args.command = "rank"
        if args.model is not None and not _model_before_query(rank, argv[1:]):
            args.documents.insert(0, args.model)  # no MODEL: every positional is a document
            args.model = None
        return args
    return parser.parse_args(argv)


def _model_before_query(rank: argparse.ArgumentParser, argv: Sequence[str]) -> bool:
    """Whether ``rank``'s command line has a positional before ``--query``: the MODEL is optional, so that
    ``rank --query Q DOC...`` ranks every DOC (with the default model) while ``rank MODEL --query Q DOC...``
    keeps meaning what it did. argparse itself sorts out which words before ``--query`` are option values."""
    at = next((i for i, word in enumerate(argv) if _is_query_flag(word)), len(argv))
    before = rank.parse_intermixed_args([*argv[:at], "--query", ""])
    return before.model is not None


def _is_query_flag(word: str) -> bool:
    return (
        word in ("--query", "-q")
        or word.startswith("--query=")
        or (word.startswith("-q") and word[1:2] != "-")
    )


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that keeps its subcommand parsers by name."""

    _subcommands: Mapping[str, argparse.ArgumentParser]

    def subcommand(self, name: str) -> argparse.ArgumentParser:
        return self._subcommands[name]


def build_parser() -> _Parser:
    parser = _Parser(prog="autorerank", description="Score and rerank with cross-encoder and LLM rerankers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser._subcommands = commands.choices
    _add_rank(commands)
    _add_score(commands)
    _add_rerank_run(commands)
    _add_eval(commands)
    _add_info(commands)
    from ..server.cli import add_serve_command  # here: the server's module reads this one's model flags

    add_serve_command(commands)
    return parser


def _add_rank(commands: argparse._SubParsersAction[_Parser]) -> None:
    rank = commands.add_parser(
        "rank",
        help="rank documents for one query",
        description="Print the documents ranked by relevance to the query, best first: a header line "
        "'rank<TAB>score<TAB>document', then one line per document. Backslashes, tabs and line breaks inside "
        "a document are printed as \\\\, \\t, \\n (\\r, \\x0b, ...), so that each document is one line; "
        "--json prints the documents as they are.",
    )
    _add_model_options(rank, model_optional=True, before="--query")
    rank.add_argument("--query", "-q", required=True, help="the query")
    rank.add_argument(
        "documents",
        nargs="*",
        metavar="DOC",
        help="documents to rank; without any, one per line from standard input (end with Ctrl-D)",
    )
    rank.add_argument("--top-k", type=positive_int, help="print only the best K")
    rank.add_argument(
        "--json", action="store_true", help="print JSON records {index, relevance_score, document}"
    )


def _add_score(commands: argparse._SubParsersAction[_Parser]) -> None:
    score = commands.add_parser(
        "score",
        help="score a file of (query, passage) pairs",
        description="Score every pair of a JSONL/TSV/CSV file into a JSONL file of "
        '{"index", "score"} records. Rerunning with the same --output resumes after the pairs it already '
        "holds; OUTPUT.meta.json records the model, the options that change scores and the input, and a "
        "resume with other ones is refused.",
    )
    _add_model_options(score)
    score.add_argument(
        "--input",
        "-i",
        required=True,
        help="pairs: JSONL with 'query' and 'passage' fields, or TSV/CSV with two columns; - for stdin. "
        f"A first row naming the columns is skipped (query: {', '.join(QUERY_NAMES)}; passage: "
        f"{', '.join(PASSAGE_NAMES)}; any case)",
    )
    score.add_argument(
        "--input-format",
        choices=PAIR_FORMATS,
        help="the input format (default: from its name, else from its first line; needed for stdin)",
    )
    score.add_argument(
        "--output", "-o", required=True, help="JSONL scores, appended to (resumable); - for stdout"
    )
    score.add_argument("--overwrite", action="store_true", help="start the output afresh instead of resuming")
    _add_progress(
        score, "pairs sent to the model per call; each chunk is written to the output before the next"
    )
    _add_ray(score)


def _add_ray(score: argparse.ArgumentParser) -> None:
    ray = score.add_argument_group(
        "scoring on Ray (pip install 'autorerank[ray]')",
        "With --ray, Ray Data reads the input (Parquet or JSONL: a file or a folder of them) and writes the "
        "output folder (Parquet when its name ends in .parquet, else JSONL): every input column and a 'score' "
        "column, one model per actor. The output is not resumed: --overwrite replaces it.",
    )
    ray.add_argument("--ray", action="store_true", help="score on Ray instead of in this process")
    ray.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="the Ray cluster to join: auto (the one running on this machine) or an address "
        "(default: RAY_ADDRESS, else the one on this machine, else a local Ray started for this command)",
    )
    ray.add_argument("--actors", type=positive_int, metavar="N", help="actors, each with a model (default 1)")
    ray.add_argument(
        "--cpus-per-actor",
        type=resource_count,
        metavar="C",
        help="CPUs Ray reserves for each actor, and the threads it scores with (default 1); "
        "leave one for reading and writing",
    )
    ray.add_argument(
        "--gpus-per-actor",
        type=resource_count,
        metavar="G",
        help="GPUs Ray reserves for each actor (default 0: it scores on the CPU)",
    )


def _add_rerank_run(commands: argparse._SubParsersAction[_Parser]) -> None:
    rerank = commands.add_parser(
        "rerank-run",
        help="rerank a TREC run",
        description="Rerank the top documents of each query of a TREC run and write "
        "a TREC run; documents below --depth follow, in their order. The output is written once, atomically, "
        "when every query is reranked: an interrupted run does not resume, it starts over.",
    )
    _add_model_options(rerank)
    rerank.add_argument("--run", required=True, help="the first-stage TREC run (qid Q0 docid rank score tag)")
    rerank.add_argument(
        "--queries", required=True, help="queries: TSV 'qid<TAB>text' or BEIR JSONL {_id, text}"
    )
    rerank.add_argument(
        "--corpus",
        required=True,
        help="documents: BEIR JSONL {_id, title, text}, or TSV 'docid<TAB>text' or 'docid<TAB>title<TAB>text'",
    )
    rerank.add_argument(
        "--depth", type=positive_int, default=100, help="documents reranked per query (default 100)"
    )
    rerank.add_argument(
        "--output",
        "-o",
        required=True,
        help="the reranked TREC run (written atomically when done); - for stdout",
    )
    rerank.add_argument(
        "--tag", type=run_tag, default="autorerank", help="the run tag, last column (default autorerank)"
    )
    _add_progress(rerank, "pairs sent to the model per call, in whole queries")


def _add_eval(commands: argparse._SubParsersAction[_Parser]) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="evaluate TREC runs against qrels",
        description="Print retrieval measures of a run (with ir-measures).",
    )
    evaluate.add_argument(
        "--qrels",
        required=True,
        help="judgments: TREC qrels 'qid 0 docid relevance', or a BEIR qrels TSV with its header line",
    )
    evaluate.add_argument("--run", required=True, help="the TREC run to evaluate")
    evaluate.add_argument(
        "--metrics",
        "--measures",
        nargs="+",
        default=list(DEFAULT_MEASURES),
        metavar="MEASURE",
        help="e.g. ndcg@10 mrr@10 recall@100 map p@5, or ir-measures names "
        f"(default: {' '.join(DEFAULT_MEASURES)})",
    )
    evaluate.add_argument(
        "--compare", metavar="RUN", help="a baseline run to print beside it, with the difference"
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_info(commands: argparse._SubParsersAction[_Parser]) -> None:
    info = commands.add_parser(
        "info",
        help="show what a model is and how it was detected",
        description="Load a model and print its kind, how the kind was detected, "
        "architecture, parameters, max length, dtype and devices.",
    )
    _add_model_options(info, model_optional=True)
    info.add_argument("--json", action="store_true", help="print JSON")
