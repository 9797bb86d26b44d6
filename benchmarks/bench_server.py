"""Server throughput and latency against the library in-process, on the same model and pairs.

    python benchmarks/bench_server.py                              # MiniLM-shaped cross-encoder, CPU
    python benchmarks/bench_server.py --shape base --device cuda:0 --requests 2000 --client-processes 4

Scores the same pairs (``--requests`` rerank requests of ``--documents`` passages each, from bench_pairs: 5-15
word queries, 30-200 word passages) three ways and prints one table:

1. in-process ``compute_score`` on all pairs in one call (the library's best case, the better of two runs: the
   goal's baseline), and in one call per request (what a caller without a server does);
2. a real server process (``python -m autorerank.server``) driven by 1, 8 and 32 concurrent httpx clients
   sending every request: pairs/s and the share of in-process throughput (goal: >= 85% with 32 clients), and the
   requests per model call the server formed;
3. latency p50/p99 at a fixed request rate (``--rate``; default half the 32-client rate), open loop.

It ends with a summary: in-process and server pairs/s at the highest concurrency, their ratio against the goal,
the latencies, and two checks of the scores: every score the server returned against the library's in-process
score of the same pair (they differ only by float rounding with what else shares a batch), and, on a device other
than the CPU, the device's in-process scores of a few pairs against the CPU's in float32. ``--device cuda:0`` and
``--bf16`` go to both the library and the server; the server needs the ``server`` extra (Starlette, uvicorn) in
the same environment.

The model is built from a config with seeded random weights (speed does not depend on the weights) and the
``enc-bert`` fixture's WordPiece tokenizer: ``--shape minilm`` (6 layers, 384 wide: cross-encoder/ms-marco-MiniLM
size) or ``base`` (12 layers, 768 wide: bge-reranker-base size); or pass ``--model PATH``. Clients can run in
several processes (``--client-processes``) so that the load generator is not what is measured; on a 2-core machine
client and server share the cores, which this benchmark then also measures, unless ``--model-cpus`` gives the
model its own cores: the in-process runs and the server process are then pinned to those CPUs and the clients to
the others (a CPU server whose clients live on other machines), so both sides of the ratio get the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_pairs import generate_pairs

TOKENIZER_FIXTURE = REPO.parent / "shared" / "fixtures" / "enc-bert" / "bge-reranker-base"
SHAPES = {"minilm": (6, 384, 12, 1536), "base": (12, 768, 12, 3072)}  # layers, hidden, heads, intermediate
GOAL = 0.85


def build_model(shape: str, folder: Path, tokenizer: Path = TOKENIZER_FIXTURE) -> str:
    """A one-label BERT cross-encoder of ``shape`` with seeded random weights and ``tokenizer``'s files."""
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    layers, hidden, heads, intermediate = SHAPES[shape]
    fixture_config = json.loads((tokenizer / "config.json").read_text())
    config = BertConfig(
        vocab_size=fixture_config["vocab_size"],
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
        num_labels=1,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(tokenizer / name, folder / name)
    return str(folder)


def make_requests(count: int, documents: int, seed: int) -> list[tuple[str, list[str]]]:
    pairs = generate_pairs(count * documents, seed)
    return [
        (pairs[i * documents][0], [passage for _, passage in pairs[i * documents : (i + 1) * documents]])
        for i in range(count)
    ]


def model_options(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The same load options for the library call and the server's flags."""
    kwargs: dict[str, Any] = {"devices": args.device}
    flags = ["--device", args.device]
    if args.bf16:
        kwargs["use_bf16"] = True
        flags.append("--bf16")
    return kwargs, flags


CPU_CHECK_PAIRS = 64


def in_process(
    model: str, requests: list[tuple[str, list[str]]], kwargs: dict[str, Any]
) -> tuple[dict[str, float], list[float]]:
    """Pairs/s in-process, and the raw scores of every pair (request by request, document by document)."""
    from autorerank import AutoReranker

    reranker = AutoReranker.from_finetuned(model, **kwargs)
    pairs = [(query, passage) for query, passages in requests for passage in passages]
    reranker.compute_score(pairs[:256], show_progress=False)  # warm up (lazy initialisation, kernels)
    one_call, scores = 0.0, []
    for _ in range(2):  # the better of two: the second runs with every batch shape's kernels already built
        started = time.perf_counter()
        scores = reranker.compute_score(pairs, show_progress=False)
        one_call = max(one_call, len(pairs) / (time.perf_counter() - started))
    subset = requests[: max(1, len(requests) // 4)]
    started = time.perf_counter()
    for query, passages in subset:
        reranker.compute_score([(query, passage) for passage in passages], show_progress=False)
    per_request = sum(len(passages) for _, passages in subset) / (time.perf_counter() - started)
    reranker.close()
    del reranker
    gc.collect()
    _free_device_memory()
    stats = {"one_call": one_call, "per_request": per_request, "pairs": float(len(pairs))}
    if kwargs["devices"] != "cpu":
        on_cpu = AutoReranker.from_finetuned(model, devices="cpu")
        reference = on_cpu.compute_score(pairs[:CPU_CHECK_PAIRS], show_progress=False)
        stats["device_vs_cpu"] = max(abs(a - b) for a, b in zip(scores[:CPU_CHECK_PAIRS], reference))
    return stats, list(scores)


def _free_device_memory() -> None:
    """Give this process's cached GPU memory back before the server process loads its copy of the model."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def parse_cpus(text: str | None) -> set[int] | None:
    """``"0"``, ``"0,1"`` or ``"0-3"`` as a set of CPU numbers (None: no pinning)."""
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def pin(cpus: set[int] | None) -> None:
    """Keep this process (and the threads and processes it starts from now on) on ``cpus``; None: leave it."""
    if cpus:
        os.sched_setaffinity(0, cpus)


class Server:
    """``python -m autorerank.server`` on a free port (on ``cpus`` when given); ``url`` once ready."""

    def __init__(self, model: str, flags: list[str], cpus: set[int] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autorerank.server", model, "--port", "0", *flags],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])
                ),
            },
        )
        if cpus:  # before the interpreter has started torch's threads, which inherit it
            os.sched_setaffinity(self.process.pid, cpus)
        self.url = ""
        ready = threading.Event()

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:  # keep draining, or the server blocks on a full pipe
                if '"event": "ready"' in line:
                    self.url = json.loads(line)["url"]
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(600)
        if not self.url:
            raise RuntimeError("the server did not start")

    def metrics(self) -> dict[str, float]:
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(self.url + "/metrics").text
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if not sample.labels
        }

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


Numbered = list[tuple[int, str, list[str]]]  # (request number, query, documents)


async def _drive(url: str, requests: Numbered, clients: int, start_at: float) -> dict[int, list[float]]:
    """Send ``requests`` over ``clients`` connections (closed loop), starting at ``start_at``; the scores of
    each request, by number, in document order."""
    import httpx

    queue = list(reversed(requests))
    scores: dict[int, list[float]] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        await http.get("/health")
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def client() -> None:
            while queue:
                number, query, documents = queue.pop()
                response = await http.post("/v2/rerank", json={"query": query, "documents": documents})
                response.raise_for_status()
                results = sorted(response.json()["results"], key=lambda result: result["index"])
                scores[number] = [result["relevance_score"] for result in results]

        await asyncio.gather(*(client() for _ in range(clients)))
    return scores


def _client_process(job: tuple[str, Numbered, int, float]) -> tuple[float, dict[int, list[float]]]:
    url, requests, clients, start_at = job
    scores = asyncio.run(_drive(url, requests, clients, start_at))
    return time.time(), scores


def closed_loop(
    server: Server, requests: list[tuple[str, list[str]]], clients: int, processes: int
) -> tuple[dict[str, float], dict[int, list[float]]]:
    """Pairs/s with ``clients`` concurrent clients, spread over ``processes`` client processes, and the
    (normalized) scores the server returned for each request, by its index in ``requests``."""
    processes = max(1, min(processes, clients))
    numbered = [(number, query, documents) for number, (query, documents) in enumerate(requests)]
    before = server.metrics()
    start_at = time.time() + 2.0  # every client process connected before the clock starts
    if processes == 1:
        finished = [_client_process((server.url, numbered, clients, start_at))]
    else:
        shares = [numbered[i::processes] for i in range(processes)]
        counts = [clients // processes + (i < clients % processes) for i in range(processes)]
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            finished = pool.map(
                _client_process, [(server.url, s, c, start_at) for s, c in zip(shares, counts)]
            )
    elapsed = max(end for end, _ in finished) - start_at
    after = server.metrics()
    calls = after["autorerank_batch_requests_count"] - before["autorerank_batch_requests_count"]
    served = after["autorerank_batch_requests_sum"] - before["autorerank_batch_requests_sum"]
    pairs = sum(len(documents) for _, documents in requests)
    scores = {number: got for _, part in finished for number, got in part.items()}
    return {"pairs_per_s": pairs / elapsed, "requests_per_call": served / max(calls, 1)}, scores


def largest_difference(
    requests: list[tuple[str, list[str]]], served: dict[int, list[float]], raw: list[float]
) -> float:
    """The largest difference between a score the server returned and the library's sigmoid of the same pair."""
    starts = itertools.accumulate((len(documents) for _, documents in requests), initial=0)
    worst = 0.0
    for number, start in zip(range(len(requests)), starts):
        for offset, got in enumerate(served[number]):
            worst = max(worst, abs(got - 1.0 / (1.0 + math.exp(-raw[start + offset]))))
    return worst


async def _open_loop(url: str, requests: list[tuple[str, list[str]]], rate: float) -> list[float]:
    import httpx

    latencies: list[float] = []
    async with httpx.AsyncClient(
        base_url=url, timeout=600, limits=httpx.Limits(max_connections=1000)
    ) as http:
        await http.get("/health")
        started = time.perf_counter()

        async def one(index: int, query: str, documents: list[str]) -> None:
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
            sent = time.perf_counter()
            response = await http.post("/v2/rerank", json={"query": query, "documents": documents})
            response.raise_for_status()
            latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(one(i, q, d) for i, (q, d) in enumerate(requests)))
    return latencies


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(share * 1000) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a checkpoint folder (default: one built with --shape)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="minilm")
    parser.add_argument(
        "--tokenizer-from",
        type=Path,
        default=TOKENIZER_FIXTURE,
        help="a BERT checkpoint whose tokenizer to use",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--requests", type=int, default=400, help="requests per throughput run (default 400)")
    parser.add_argument("--documents", type=int, default=5, help="documents per request (default 5)")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    parser.add_argument("--client-processes", type=int, default=max(1, min(4, (os.cpu_count() or 1) // 4)))
    parser.add_argument(
        "--rate", type=float, help="requests/s of the latency run (default: half the 32-client rate)"
    )
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--model-cpus",
        help="CPUs for the model (in-process runs and the server), e.g. 0 or 0-3; the clients get the others",
    )
    args = parser.parse_args()
    model_cpus = parse_cpus(args.model_cpus)
    client_cpus = (os.sched_getaffinity(0) - model_cpus) if model_cpus else None
    if model_cpus is not None and not client_cpus:
        raise SystemExit("--model-cpus must leave at least one CPU for the clients")

    pin(model_cpus)  # before torch starts its threads: the in-process runs get the model's cores
    with tempfile.TemporaryDirectory() as folder:
        model = args.model or build_model(args.shape, Path(folder), args.tokenizer_from)
        requests = make_requests(args.requests, args.documents, seed=7)
        kwargs, flags = model_options(args)
        baseline, raw = in_process(model, requests, kwargs)
        pin(client_cpus)  # the client processes inherit it
        server = Server(model, flags, model_cpus)
        try:
            closed_loop(server, requests[: max(8, len(requests) // 10)], 8, 1)  # warm up the server
            runs, difference = {}, 0.0
            for clients in (int(text) for text in args.clients.split(",")):
                runs[clients], served = closed_loop(server, requests, clients, args.client_processes)
                difference = max(difference, largest_difference(requests, served, raw))
            top = runs[max(runs)]
            rate = args.rate or top["pairs_per_s"] / args.documents / 2
            timed = make_requests(args.latency_requests, args.documents, seed=8)
            latencies = asyncio.run(_open_loop(server.url, timed, rate))
        finally:
            server.stop()

    name = args.model or f"{args.shape}-shaped BERT cross-encoder (random weights)"
    setup = (
        f"model: {name}; device {args.device}{', bf16' if args.bf16 else ''}; {int(baseline['pairs'])} pairs in "
        f"{args.requests} requests of {args.documents} documents; {args.client_processes} client process(es)"
        + (f"; model on CPUs {args.model_cpus}, clients on {sorted(client_cpus or ())}" if model_cpus else "")
    )
    print(setup)
    print("| run | pairs/s | share of in-process | requests per model call |")
    print("| --- | --- | --- | --- |")
    print(f"| in-process compute_score, all pairs in one call | {baseline['one_call']:.1f} | 100% | - |")
    print(
        f"| in-process compute_score, one call per request | {baseline['per_request']:.1f} | "
        f"{baseline['per_request'] / baseline['one_call']:.0%} | - |"
    )
    for clients, run in runs.items():
        print(
            f"| server, {clients} concurrent client{'s' * (clients > 1)} | {run['pairs_per_s']:.1f} | "
            f"{run['pairs_per_s'] / baseline['one_call']:.0%} | {run['requests_per_call']:.1f} |"
        )
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    print(
        f"latency at {rate:.1f} requests/s ({len(latencies)} requests, open loop): p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )
    share = top["pairs_per_s"] / baseline["one_call"]
    verdict = "met" if share >= GOAL else "MISSED"
    print()
    print("summary:")
    print(f"  {setup}")
    print(
        f"  throughput: server with {max(runs)} clients {top['pairs_per_s']:.1f} pairs/s, in-process (one call) "
        f"{baseline['one_call']:.1f} pairs/s: ratio {share:.2f} (goal {GOAL:.2f}: {verdict}); "
        f"{top['requests_per_call']:.1f} requests per model call"
    )
    print(f"  latency at {rate:.1f} requests/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"  scores: server against in-process, largest difference {difference:.2e} (normalized)", end="")
    if "device_vs_cpu" in baseline:
        print(
            f"; {args.device} against CPU float32 on {CPU_CHECK_PAIRS} pairs {baseline['device_vs_cpu']:.2e} (raw)"
        )
    else:
        print()
    if args.json:
        result = {
            "baseline": baseline,
            "runs": runs,
            "rate": rate,
            "p50_ms": p50,
            "p99_ms": p99,
            "share": share,
            "largest_difference": difference,
        }
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
