"""Scoring on Ray with 1 and 2 local actors against the library in-process, on the same pairs.

    python benchmarks/bench_ray.py                                   # autorerank-mini, 2000 pairs, CPU
    python benchmarks/bench_ray.py --model PATH --pairs 5000 --batch-size 500

The pairs come from bench_pairs (5-15 word queries, 30-200 word passages, seeded). Each row scores all of them:

1. in-process ``compute_score`` in one call, with 1 torch thread and with one per core (the best of
   ``--repeats`` runs; the model is loaded before the clock starts);
2. ``autorerank.ray.score_dataset`` on a local Ray started here (``num_cpus`` = the cores), with 1 and 2 actors
   of one CPU (so one torch thread) each, over a Dataset of ``--batch-size`` rows per block, consumed with
   ``take_all``. The clock covers the whole job, as a user waits for it: starting the actors, loading the model
   in each, scoring, and moving the rows back to the driver. Ray's startup is also timed alone, on one batch of
   8 pairs, and the job's rate without it is given as "steady".

Ray's overhead is stated against in-process at the same number of threads: 1 actor against 1 thread, 2 actors
against one thread per core. The Ray scores are checked against the in-process ones (max absolute difference:
batches cut differently pad differently, so float noise only).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="autorerank-mini", help="a model folder or name (default: %(default)s)"
    )
    parser.add_argument(
        "--pairs", type=int, default=2000, help="pairs scored by every row (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=250, help="rows per actor call (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="in-process runs, best taken (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args()


def _in_process(model: str, pairs: list[tuple[str, str]], threads: int, repeats: int) -> tuple[float, list]:
    """Seconds of the best run of compute_score over every pair, and its scores."""
    import torch

    from autorerank import AutoReranker

    torch.set_num_threads(threads)
    reranker = AutoReranker.from_finetuned(model, devices="cpu")
    reranker.compute_score(pairs[:16], show_progress=False)  # warm-up: first-call allocations
    best, scores = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = reranker.compute_score(pairs, show_progress=False)
        best = min(best, time.perf_counter() - start)
    reranker.close()
    return best, list(scores)


def _on_ray(ray: Any, model: str, rows: list[dict], actors: int, batch_size: int) -> tuple[float, list[dict]]:
    """Seconds of one whole Ray job over ``rows`` (actors started and models loaded inside the clock)."""
    from autorerank.ray import score_dataset

    blocks = max(1, -(-len(rows) // batch_size))
    start = time.perf_counter()
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    records = score_dataset(dataset, model, concurrency=actors, batch_size=batch_size).take_all()
    return time.perf_counter() - start, records


def main() -> None:
    args = _parse()
    from bench_pairs import generate_pairs

    cores = os.cpu_count() or 1
    pairs = generate_pairs(args.pairs, args.seed)
    rows = [{"id": i, "query": query, "passage": passage} for i, (query, passage) in enumerate(pairs)]
    results: list[tuple[str, float, str]] = []
    reference: dict[int, list] = {}
    for threads in sorted({1, cores}):
        seconds, scores = _in_process(args.model, pairs, threads, args.repeats)
        reference[threads] = scores
        results.append((f"in-process, {threads} torch thread(s)", seconds, ""))

    import ray

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    # The startup probe is one block: Ray warns that a second actor has nothing to do, which is the point.
    warnings.filterwarnings("ignore", "The minimum number of concurrent actors", UserWarning)
    try:
        for actors in (1, 2):
            startup, _ = _on_ray(ray, args.model, rows[:8], actors, args.batch_size)
            seconds, records = _on_ray(ray, args.model, rows, actors, args.batch_size)
            by_id = {record["id"]: record["score"] for record in records}
            assert sorted(by_id) == list(range(len(rows))), "a row is missing or scored twice"
            diff = max(abs(by_id[i] - score) for i, score in enumerate(reference[1]))
            steady = len(rows) / max(seconds - startup, 1e-9)
            note = f"startup {startup:.1f} s, steady {steady:.0f} pairs/s, max |diff| {diff:.1e}"
            results.append((f"Ray, {actors} actor(s) of 1 CPU", seconds, note))
    finally:
        ray.shutdown()
    _report(args, cores, results)


def _report(args: argparse.Namespace, cores: int, results: list[tuple[str, float, str]]) -> None:
    print(f"model {args.model}, {args.pairs} pairs, batch size {args.batch_size}, {cores} cores\n")
    width = max(len(name) for name, _, _ in results)
    rates = {name: args.pairs / seconds for name, seconds, _ in results}
    for name, seconds, note in results:
        print(f"{name.ljust(width)}  {rates[name]:8.1f} pairs/s  {seconds:7.2f} s  {note}")
    single = rates["in-process, 1 torch thread(s)"]
    every_core = rates[f"in-process, {cores} torch thread(s)"]
    print()
    for actors, baseline, label in ((1, single, "1 thread"), (2, every_core, f"{cores} threads")):
        ray_rate = rates[f"Ray, {actors} actor(s) of 1 CPU"]
        ratio = ray_rate / baseline
        print(f"Ray, {actors} actor(s): {ratio:.2f}x in-process at {label}, an overhead of {1 - ratio:.0%}")


if __name__ == "__main__":
    main()
