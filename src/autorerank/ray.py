"""Reranking on Ray: a Ray Dataset of (query, passage) rows in, the same rows with a score column out.

For corpora that outgrow one machine. autorerank builds no cluster of its own: Ray Data streams the rows through
a pool of actors, each holding one model loaded once with :meth:`autorerank.AutoReranker.from_finetuned`, and
each actor scores every batch it is handed in one call, so the library's own length-sorted, token-budget
batching applies within it. Nothing is collected on the driver: the result is a lazy Dataset that the caller
writes or iterates.

Faults. An actor whose process dies (killed, out of memory, a lost node) is restarted and the batch it held is
run again, up to ``max_restarts`` times, so every row still gets exactly one score. An error raised by the model
or the library (a bad model path, a value that is not text) is not retried: consuming the dataset inside
:func:`actor_errors` turns it into a :class:`RayScoringError` naming the cause, instead of a Ray stack dump.

``ray`` is imported only when these functions run, so ``import autorerank.ray`` works without it and
``import autorerank`` never loads it; without it they raise
:class:`~autorerank.errors.MissingDependencyError` naming ``pip install 'autorerank[ray]'``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import STDIN, InputFileError, InvalidInputError, InvalidOptionError, WorkerError
from .jobs import DEFAULT_CHUNK_SIZE
from .optional import require

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_RESTARTS",
    "RayScoringError",
    "actor_errors",
    "check_output",
    "check_room",
    "connected",
    "pair_file_format",
    "read_pairs_dataset",
    "score_dataset",
    "write_scores",
]

# Rows per actor call, as the CLI's --chunk-size: enough for token-budget batching to pay off; a restarted
# actor scores one again.
DEFAULT_BATCH_SIZE = DEFAULT_CHUNK_SIZE
# How often an actor is replaced after its process died (and its batch run again) before the job fails.
DEFAULT_MAX_RESTARTS = 3
PARQUET, JSONL = "parquet", "jsonl"
_JSONL_SUFFIXES = (".jsonl", ".json")  # what Ray Data's JSON reader picks out of a folder, each also with .gz


class RayScoringError(WorkerError):
    """Scoring on Ray failed; the message names the cause (the error an actor raised, or what Ray reported)."""


class _ActorFailure(Exception):
    """What an actor raises: the cause, written as one JSON string.

    Ray Data hands the driver only the text of an actor's error (its traceback, ending in this error's line);
    :func:`actor_errors` reads the message back from there, whole, even when it spans several lines.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message  # Ray Data appends its retry advice to args; str() shows only the cause

    def __str__(self) -> str:
        return json.dumps(self.message, ensure_ascii=False)


# How the line of an _ActorFailure starts in a traceback.
_FAILURE_LINE = f"{_ActorFailure.__module__}.{_ActorFailure.__qualname__}: "
_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours a task's name in its errors
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Invalid): ")


def _ray() -> ModuleType:
    return require("ray", "ray", "Scoring on Ray")


def score_dataset(
    ds: Any,
    model_name_or_path: str,
    *,
    query_column: str = "query",
    passage_column: str = "passage",
    output_column: str = "score",
    concurrency: int = 1,
    num_cpus: float | None = None,
    num_gpus: float = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    **model_kwargs: Any,
) -> Any:
    """``ds`` (a ``ray.data.Dataset``) with ``output_column`` added: the score of each row's (query, passage).

    ``concurrency`` actors each load the model once (``model_kwargs`` are those of :meth:`from_finetuned
    <autorerank.AutoReranker.from_finetuned>`) and reserve ``num_cpus`` and ``num_gpus`` each; an actor given
    no GPU scores on the CPU unless ``devices=`` says otherwise. Each call scores ``batch_size`` rows. Every
    other column travels with its row, so an id column identifies each score; several ``cutoff_layers`` give a
    list of scores per row. A dead actor is restarted, and its batch retried, up to ``max_restarts`` times
    (-1: without limit). Lazy, as every Dataset transform: consume the result (write it, iterate it) inside
    :func:`actor_errors` to get a :class:`RayScoringError` naming the cause of a failure.
    """
    ray = _ray()
    _check_counts(concurrency=concurrency, batch_size=batch_size)
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < -1:
        raise InvalidOptionError(f"max_restarts must be an int, -1 (no limit) or more, got {max_restarts!r}.")
    if not num_gpus and "devices" not in model_kwargs:
        model_kwargs = {**model_kwargs, "devices": "cpu"}  # not a GPU that Ray handed to another actor
    columns = (query_column, passage_column, output_column)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates actor options given as map_batches keywords, and offers no other way to give them.
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", DeprecationWarning)
        scored = ds.map_batches(
            _ScoreBatches,
            fn_constructor_args=(str(model_name_or_path), columns, model_kwargs),
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=num_cpus,
            num_gpus=num_gpus or None,
            **_restart_args(ds.map_batches, max_restarts),
        )
    return scored


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidOptionError(f"{name} must be a positive int, got {value!r}.")


def _restart_args(map_batches: Callable[..., Any], max_restarts: int) -> dict[str, int]:
    """Actor restarts and task retries, as map_batches passes them on to Ray; where it no longer takes them,
    Ray Data's own default applies (restarts and retries without limit)."""
    parameters = inspect.signature(map_batches).parameters.values()
    if not any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return {}
    return {"max_restarts": max_restarts, "max_task_retries": max_restarts}


class _ScoreBatches:
    """The callable class Ray Data runs in each actor: one model, loaded once, scoring whole batches."""

    def __init__(
        self, model_name_or_path: str, columns: tuple[str, str, str], model_kwargs: dict[str, Any]
    ) -> None:
        from . import AutoReranker

        self._query, self._passage, self._output = columns
        self._failure: str | None = None
        try:
            self._reranker = AutoReranker.from_finetuned(model_name_or_path, **model_kwargs)
        # Raised by the first batch, not here: Ray restarts no actor whose constructor failed, but how it
        # reports that death differs between Ray versions; a failed batch it reports the same way in all.
        except Exception as exc:  # noqa: BLE001 - raised by __call__
            self._failure = _cause(exc, f"loading {model_name_or_path}")

    def __call__(self, batch: Any) -> Any:
        if self._failure is not None:
            raise _ActorFailure(self._failure)
        try:
            return self._score(batch)
        except Exception as exc:  # the cause, in the one form the driver reads back; Ray does not retry it
            raise _ActorFailure(_cause(exc, "scoring a batch")) from exc

    def _score(self, batch: Any) -> Any:  # a pyarrow.Table in and out
        import pyarrow as pa

        self._check_columns(batch.column_names)
        self._check_texts(batch)
        queries = batch.column(self._query).to_pylist()
        passages = batch.column(self._passage).to_pylist()
        if not queries:
            return batch.append_column(self._output, pa.array([], type=pa.float64()))
        scores = next(self._reranker.iter_scores([list(zip(queries, passages))]))  # (scores_per_pair, rows)
        column = pa.array(scores[0]) if len(scores) == 1 else pa.array(scores.T.tolist())
        return batch.append_column(self._output, column)

    def _check_texts(self, batch: Any) -> None:
        """Refuse a row whose text is not a string, naming the row by its other columns: a Ray batch has no place
        in the input to point at (the library's "Pair N" would count within the batch). A string column without
        nulls, the usual batch, is passed on Arrow's type and null count alone, with no look at its rows."""
        import pyarrow as pa

        for column in (self._query, self._passage):
            texts = batch.column(column)
            strings = pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)
            if strings and texts.null_count == 0:
                continue
            for position, text in enumerate(texts.to_pylist()):
                if not isinstance(text, str):
                    found = "null" if text is None else type(text).__name__
                    raise InvalidInputError(
                        f"the {column!r} column holds {found}, not a string, in the row {_row(batch, position)}"
                    )

    def _check_columns(self, names: list[str]) -> None:
        for column, argument in ((self._query, "query_column"), (self._passage, "passage_column")):
            if column not in names:
                raise InvalidInputError(
                    f"the dataset has no column {column!r} (its columns: {', '.join(names)}); "
                    f"name the column that holds the texts with {argument}="
                )
        if self._output in names:
            raise InvalidInputError(
                f"the dataset already has a column {self._output!r}; name the score column with output_column="
            )


def _row(batch: Any, position: int) -> str:
    """One row of a pyarrow table as its columns' values, each cut short, to find it in the input."""
    values = {name: batch.column(name)[position].as_py() for name in batch.column_names}
    return "{" + ", ".join(f"{name!r}: {value!r:.60}" for name, value in values.items()) + "}"


def _cause(exc: BaseException, doing: str) -> str:
    return f"{type(exc).__name__} while {doing} (Ray actor, pid {os.getpid()}): {exc}"


@contextlib.contextmanager
def actor_errors() -> Iterator[None]:
    """Raise what Ray reports while a scored dataset is consumed as a :class:`RayScoringError` naming the cause.

    An error an actor raised keeps the library's message (``ModelLoadError while loading ...: ...``); an actor
    that died more often than ``max_restarts`` allows, or another Ray failure, is named by Ray's first line.
    Ray's own exception stays chained as ``__cause__``, with the actor's traceback as text. (Ray Data lets the
    failed run's actors go, and the CPUs and GPUs they hold, when Python next collects its garbage.)
    """
    ray = _ray()
    try:
        yield
    except ray.exceptions.RayError as exc:
        raise RayScoringError(_describe(exc, ray.exceptions)) from exc


def _describe(exc: BaseException, errors: Any) -> str:
    text = str(exc)
    at = text.rfind(_FAILURE_LINE)
    if at >= 0:
        with contextlib.suppress(ValueError):  # not the JSON we wrote: describe it as Ray's error below
            message, _ = json.JSONDecoder().raw_decode(text, at + len(_FAILURE_LINE))
            if isinstance(message, str):
                return message
    lines = [line.strip() for line in _ANSI_CODES.sub("", text).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if isinstance(exc, errors.RayActorError):
        return f"a Ray actor died and was not replaced (more deaths than max_restarts allows?): {first}"
    causes = [line for line in lines[1:] if _EXCEPTION_LINE.match(line)]  # "module.SomeError: message" lines
    cause = f" ({causes[-1]})" if causes else ""
    if "JSON" in first:
        cause += (
            "; Ray's JSON reader could not read the input: a field whose type changes between lines (a number "
            "among strings) is one cause. Without --ray, autorerank names the file's line"
        )
    return f"Ray failed: {type(exc).__name__}: {first}{cause}"


@contextlib.contextmanager
def connected(address: str | None = None, *, progress: bool | None = None) -> Iterator[None]:
    """Ray for one job: joins the cluster at ``address`` (``auto``: the one running on this machine; ``None``:
    the one in ``RAY_ADDRESS``, else the one on this machine, else a local Ray started for the job and stopped
    after it). Reuses a Ray this process already joined. ``progress``: Ray Data's progress bars (``None``: only on
    a terminal)."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address)
    ray.data.DataContext.get_current().enable_progress_bars = (
        sys.stderr.isatty() if progress is None else progress
    )
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def check_room(concurrency: int, num_cpus: float | None) -> None:
    """Refuse actors that would hold every CPU of the Ray this process joined: reading and writing the files
    needs a CPU too, and with none left the job would wait forever. For a Ray whose CPUs cannot grow (one on this
    machine): a cluster's autoscaler may add nodes."""
    total = _ray().cluster_resources().get("CPU", 0)
    held = concurrency * (1 if num_cpus is None else num_cpus)
    if held >= total:
        raise InvalidOptionError(
            f"{concurrency} actor(s) holding {held:g} CPU(s) leave none of this Ray's {total:g} for reading and "
            "writing, and the job would wait forever: use fewer actors, or fewer CPUs per actor"
        )


def pair_file_format(path: str) -> str:
    """:data:`PARQUET` or :data:`JSONL`: how Ray Data reads or writes ``path``, by its name (a local folder: by
    the names of its files)."""
    _refuse_stdio(path)
    name = path.lower().rstrip("/").removesuffix(".gz")
    if name.endswith(".parquet"):
        return PARQUET
    if name.endswith(_JSONL_SUFFIXES):
        return JSONL
    if "://" not in path and Path(path).is_dir():
        found = {pair_file_format(str(child)) for child in Path(path).iterdir() if _is_data_file(child.name)}
        if len(found) == 1:
            return found.pop()
    raise InputFileError(
        path,
        None,
        "Ray reads Parquet (.parquet) or JSONL (.jsonl, .json, optionally .gz) files, or a folder of them; "
        "convert this input, or score it without --ray",
    )


def _refuse_stdio(path: str) -> None:
    if path == STDIN:
        raise InputFileError(path, None, "Ray reads and writes files, not standard input or output")


def _is_data_file(name: str) -> bool:
    return name.lower().removesuffix(".gz").endswith((".parquet", *_JSONL_SUFFIXES))


def read_pairs_dataset(path: str) -> Any:
    """A Ray Dataset over a Parquet or JSONL file or folder, read lazily by Ray Data (in the cluster)."""
    ray = _ray()
    if pair_file_format(path) == PARQUET:
        return ray.data.read_parquet(path)
    return ray.data.read_json(path)  # Arrow's JSON reader: one object per line


def write_scores(ds: Any, path: str, *, overwrite: bool = False) -> None:
    """Write a scored dataset into the folder ``path``, as Parquet files when its name ends in ``.parquet``, else
    as JSONL. Rows stream from the actors into the files, a file or more per block, in no set order.

    A Ray output is a folder that a second run would add to, so an existing local one is refused, or with
    ``overwrite`` removed first (only when it holds nothing but data files). Errors are raised as in
    :func:`actor_errors`.
    """
    if check_output(path, overwrite=overwrite):
        _remove_output(Path(path))
    with actor_errors():
        if path.lower().rstrip("/").endswith(".parquet"):
            ds.write_parquet(path)
        else:
            ds.write_json(path)
    if "://" not in path:
        Path(path).mkdir(parents=True, exist_ok=True)  # Ray writes no file, nor the folder, for no rows


def check_output(path: str, *, overwrite: bool = False) -> bool:
    """Whether :func:`write_scores` would replace an existing local ``path``; refuses standard output, and an
    existing output without ``overwrite`` or (a folder) holding anything but data files."""
    _refuse_stdio(path)
    target = Path(path)
    if "://" in path or not os.path.lexists(target):
        return False
    if not overwrite:
        raise InputFileError(
            path, None, "already exists; pass --overwrite to replace it, or choose another --output"
        )
    if target.is_dir() and not target.is_symlink():
        strangers = [
            child.name for child in target.iterdir() if not (child.is_file() and _is_data_file(child.name))
        ]
        if strangers:
            raise InputFileError(
                path, None, f"holds {strangers[0]!r}, which is not a data file: not replacing this folder"
            )
    return True


def _remove_output(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink()
