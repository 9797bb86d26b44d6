"""Scoring on Ray (``autorerank.ray``, ``autorerank score --ray``) on a local Ray cluster started here.

Invariants: the scores are the in-process library's for the same pairs; every row keeps its own columns and
ends with exactly one score, even when an actor is killed mid-batch; a model that cannot load or an input it
cannot score surfaces in the driver as one error naming the cause.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cli_support import run_cli
from conftest import cached_reranker, fixture_path, write

import autorerank.ray as on_ray
from autorerank.errors import MissingDependencyError

pytestmark = pytest.mark.ray

# Set before Ray is imported: no usage report from tests; a 2-core machine has no room for idle Ray services.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ENC = "enc/bge-reranker-v2-m3"
LAYERWISE = "layerwise/bge-reranker-v2-minicpm-layerwise"
ATOL = 2e-5  # batches that Ray cuts differently pad differently: float noise, as with the worker pool


@pytest.fixture(scope="module")
def cluster():
    """One local Ray for the module: 2 CPUs, no dashboard, a small object store; shut down after."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'autorerank[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'autorerank[ray]')")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        log_to_driver=False,
        configure_logging=False,
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    if hasattr(context, "execution_no_progress_timeout_s"):
        context.execution_no_progress_timeout_s = 90  # a stuck job fails its test instead of hanging CI
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _free_failed_runs():
    """Ray Data lets a failed run's actors (and the CPUs they hold) go when Python collects its garbage: collect
    after each test, so that the next one finds the local Ray's two CPUs free."""
    yield
    gc.collect()


def _rows(count: int) -> list[dict]:
    """Pairs of varied lengths (so batches pad), each with an id and a column that must travel with it."""
    return [
        {"id": i, "query": f"query {i % 7}", "passage": "words " * (i % 11) + f"passage {i}", "tag": f"t{i}"}
        for i in range(count)
    ]


def _reference(rows: list[dict], fixture: str = ENC, **kwargs) -> list:
    return cached_reranker(fixture, **kwargs).compute_score([(row["query"], row["passage"]) for row in rows])


def _by_id(records: list[dict]) -> dict[int, dict]:
    ids = [record["id"] for record in records]
    assert len(ids) == len(set(ids)), "a row was scored more than once"
    return {record["id"]: record for record in records}


def _assert_scored(records: list[dict], rows: list[dict], expected: list) -> None:
    """Every input row once, with its own columns and the in-process score."""
    got = _by_id(records)
    assert sorted(got) == [row["id"] for row in rows]
    for row, score in zip(rows, expected):
        record = got[row["id"]]
        assert {key: record[key] for key in row} == row
        assert record["score"] == pytest.approx(score, abs=ATOL)


def test_one_batch_gives_exactly_the_in_process_scores(cluster):
    rows = _rows(40)
    ds = cluster.data.from_items(rows, override_num_blocks=1)
    records = on_ray.score_dataset(ds, fixture_path(ENC), batch_size=len(rows)).take_all()
    # The same pairs in one call: the same token-budget batches, so the very same floats.
    expected = next(cached_reranker(ENC).iter_scores([[(row["query"], row["passage"]) for row in rows]]))[0]
    assert [_by_id(records)[row["id"]]["score"] for row in rows] == expected.tolist()


def test_two_actors_score_every_row_once_though_one_is_killed(cluster, tmp_path, monkeypatch):
    marker = tmp_path / "pid"

    # Defined here, so Ray ships the class itself to the actors: the first actor to reach its second batch
    # writes its pid and waits, mid-batch, to be killed; its replacement (and the other actor) go on.
    class WaitsToBeKilled(on_ray._ScoreBatches):
        calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 2:
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    time.sleep(120)
            return super().__call__(batch)

    killed: list[int] = []

    def kill_when_waiting() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = marker.read_text() if marker.exists() else ""
            if text:
                killed.append(int(text))
                os.kill(killed[0], signal.SIGKILL)
                return
            time.sleep(0.05)

    monkeypatch.setattr(on_ray, "_ScoreBatches", WaitsToBeKilled)
    killer = threading.Thread(target=kill_when_waiting, daemon=True)
    killer.start()
    rows = _rows(160)
    ds = cluster.data.from_items(rows, override_num_blocks=8)
    with on_ray.actor_errors():
        records = on_ray.score_dataset(ds, fixture_path(ENC), concurrency=2, batch_size=20).take_all()
    killer.join(timeout=1)
    assert killed, "no actor reached its second batch"
    _assert_scored(records, rows, _reference(rows))


def test_the_actor_class_scores_a_table_in_process():
    """What each actor runs, here in this process: named columns in, a list of scores per row with several
    cutoff layers, and the cause of a bad table as the message the driver reads back."""
    import pyarrow as pa

    rows = [{"id": i, "q": row["query"], "doc": row["passage"]} for i, row in enumerate(_rows(6))]
    actor = on_ray._ScoreBatches(
        fixture_path(LAYERWISE), ("q", "doc", "relevance"), {"devices": "cpu", "cutoff_layers": [4, 6]}
    )
    got = actor(pa.Table.from_pylist(rows)).to_pylist()
    pairs = [(row["q"], row["doc"]) for row in rows]
    expected = cached_reranker(LAYERWISE).compute_layer_scores(pairs, cutoff_layers=[4, 6])
    assert [{k: v for k, v in record.items() if k != "relevance"} for record in got] == rows
    for i, record in enumerate(got):
        assert record["relevance"] == pytest.approx([expected[0][i], expected[1][i]], abs=ATOL)
    with pytest.raises(on_ray._ActorFailure, match="InvalidInputError while scoring a batch .*no column 'q'"):
        actor(pa.Table.from_pylist([{"query": "a", "doc": "b"}]))
    with pytest.raises(on_ray._ActorFailure, match="already has a column 'relevance'"):
        actor(pa.Table.from_pylist([{"q": "a", "doc": "b", "relevance": 1.0}]))
    rows[3]["doc"] = None  # named by the row's values: a batch has no place in the input to count from
    with pytest.raises(
        on_ray._ActorFailure, match=r"the 'doc' column holds null, not a string, in the row \{'id': 3, 'q': "
    ):
        actor(pa.Table.from_pylist(rows))


def test_a_bad_model_path_names_the_cause(cluster, tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(on_ray.RayScoringError) as caught, on_ray.actor_errors():
        on_ray.score_dataset(cluster.data.from_items(_rows(4)), str(missing)).take_all()
    message = str(caught.value)
    assert message.startswith(f"ModelLoadError while loading {missing}")
    assert "does not exist" in message and "Traceback" not in message
    assert isinstance(caught.value.__cause__, cluster.exceptions.RayError)  # Ray's report stays chained


def test_bad_arguments_fail_before_ray_runs(cluster):
    ds = cluster.data.from_items(_rows(2))
    with pytest.raises(ValueError, match="concurrency must be a positive int"):
        on_ray.score_dataset(ds, fixture_path(ENC), concurrency=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        on_ray.score_dataset(ds, fixture_path(ENC), batch_size=0)


# ----------------------------------------------------------------- the command line


def _jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


def _read_folder(folder: Path) -> list[dict]:
    """The rows of a Ray output folder: Parquet or JSON-lines files."""
    import pyarrow.parquet as pq

    if folder.name.endswith(".parquet"):
        return pq.read_table(folder).to_pylist()
    return [json.loads(line) for file in sorted(folder.iterdir()) for line in file.read_text().splitlines()]


def _score_argv(source: Path, out: Path | str, *extra: str) -> list:
    return ["score", fixture_path(ENC), "-i", source, "-o", out, "--ray", "--no-progress", *extra]


def test_cli_scores_jsonl_into_parquet(cluster, tmp_path, capsys):
    rows = _rows(30)
    out = tmp_path / "scores.parquet"
    # Two actors of half a CPU: one of the local Ray's two CPUs stays free to read and write the files.
    argv = _score_argv(
        _jsonl(tmp_path / "pairs.jsonl", rows), out, "--actors", "2", "--cpus-per-actor", "0.5"
    )
    code, _, err = run_cli([*argv, "--chunk-size", "8"], capsys)
    assert code == 0, err
    assert f"into {out} on Ray (2 actor(s))" in err
    _assert_scored(_read_folder(out), rows, _reference(rows))


def test_cli_scores_a_parquet_folder_into_jsonl_replacing_only_with_overwrite(cluster, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows(12)
    source = tmp_path / "pairs"
    source.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:5]), source / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[5:]), source / "part-1.parquet")
    out = tmp_path / "scores.jsonl"
    out.mkdir()
    (out / "earlier.json").write_text('{"stale": 1}\n')
    code, _, err = run_cli(_score_argv(source, out), capsys)
    assert code == 2 and "already exists; pass --overwrite to replace it" in err
    code, _, err = run_cli(_score_argv(source, out, "--overwrite"), capsys)
    assert code == 0, err
    _assert_scored(_read_folder(out), rows, _reference(rows))


def test_cli_names_the_cause_of_a_failure_in_an_actor(cluster, tmp_path, capsys):
    source = _jsonl(tmp_path / "pairs.jsonl", [{"question": "q", "passage": "p"}])
    code, _, err = run_cli(_score_argv(source, tmp_path / "out.jsonl"), capsys)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("autorerank: error: InvalidInputError while scoring a batch"), err
    assert "no column 'query' (its columns: question, passage)" in last


def test_cli_names_a_json_input_ray_cannot_read_and_how_to_find_the_line(cluster, tmp_path, capsys):
    rows = _rows(20)
    rows[7]["passage"] = 12345  # a number among strings: Arrow's JSON reader refuses the file
    code, _, err = run_cli(
        _score_argv(_jsonl(tmp_path / "pairs.jsonl", rows), tmp_path / "out.jsonl"), capsys
    )
    assert code == 1
    assert "Ray's JSON reader could not read the input" in err and "Without --ray, autorerank names" in err
    assert "\x1b[" not in err  # Ray's colour codes are not passed on


def test_cli_writes_an_empty_output_for_an_empty_input(cluster, tmp_path, capsys):
    source, out = tmp_path / "pairs.jsonl", tmp_path / "scores.parquet"
    source.write_text("")
    code, _, err = run_cli(_score_argv(source, out), capsys)
    assert code == 0, err
    assert out.is_dir() and not any(out.iterdir())  # there, so the next step of a pipeline finds it


def test_cli_refuses_actors_that_hold_every_cpu(cluster, tmp_path, capsys):
    source = _jsonl(tmp_path / "pairs.jsonl", _rows(2))
    code, _, err = run_cli(_score_argv(source, tmp_path / "out.jsonl", "--actors", "2"), capsys)
    assert code == 2 and "2 actor(s) holding 2 CPU(s) leave none of this Ray's 2" in err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--actors", "2"], "--actors needs --ray"),
        (["--gpus-per-actor", "1"], "--gpus-per-actor needs --ray"),
        (["--ray", "--input-format", "tsv"], "--input-format does not apply with --ray"),
        (["--ray", "-o", "-"], "not standard input or output"),
    ],
)
def test_cli_usage_errors_with_ray_flags(tmp_path, capsys, extra, message):
    source = _jsonl(tmp_path / "pairs.jsonl", _rows(2))
    argv = ["score", fixture_path(ENC), "-i", source, "-o", tmp_path / "out.jsonl", *extra]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and message in err


def test_cli_refuses_an_input_ray_cannot_read(tmp_path, capsys):
    source = write(tmp_path / "pairs.tsv", "query\tpassage\nq\tp\n")
    code, _, err = run_cli(
        ["score", fixture_path(ENC), "-i", source, "-o", tmp_path / "o.jsonl", "--ray"], capsys
    )
    assert code == 2 and "Ray reads Parquet (.parquet) or JSONL" in err


# ----------------------------------------------------------------- without Ray


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'autorerank\[ray\]'"):
        on_ray.score_dataset(None, fixture_path(ENC))


def test_import_autorerank_does_not_import_ray():
    code = "import sys, autorerank, autorerank.ray, autorerank.cli; print('ray' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "False", result.stderr
