"""Many clients at once, and an LLM reranker, against real server processes (see test_server_api.py)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from conftest import cached_reranker, fixture_path
from server_support import ATOL, DOCUMENTS, KEY, QUERY, ServerProcess, assert_ranked, metric, pairs

httpx = pytest.importorskip("httpx")


# ----------------------------------------------------------------------------- many clients at once
CLIENTS = 32
REQUESTS = 2000


def test_32_concurrent_clients_get_their_own_scores_in_real_batches(enc_server, enc_client, enc_reference):
    """2,000 requests from 32 clients, 1-5 documents each from a pool, in every dialect: every answer is checked
    against in-process scores (nothing lost, nothing swapped between requests), and the model saw batches of
    several requests."""
    rng = random.Random(12)
    queries = [f"question {i} about giant pandas and bamboo" for i in range(8)]
    pool = [f"{DOCUMENTS[i % len(DOCUMENTS)]} Note {i}." for i in range(40)]
    raw = enc_reference.compute_score([(q, d) for q in queries for d in pool])
    expected = {(q, d): raw[i * len(pool) + j] for i, q in enumerate(queries) for j, d in enumerate(pool)}
    assert len({round(score, 4) for score in raw}) > 0.9 * len(raw)  # distinct: a swap would show
    sigmoid = dict(zip(expected, enc_reference.compute_score(list(expected), normalize=True)))
    requests = [
        (rng.choice(queries), rng.sample(pool, rng.randint(1, 5)), rng.randrange(3)) for _ in range(REQUESTS)
    ]
    before = enc_client.get("/metrics").text

    async def one(http, query, documents, dialect):
        if dialect == 0:
            body = (await http.post("/v2/rerank", json={"query": query, "documents": documents})).json()
            got = {result["index"]: result["relevance_score"] for result in body["results"]}
            want = [sigmoid[(query, document)] for document in documents]
        elif dialect == 1:
            body = (
                await http.post("/rerank", json={"query": query, "texts": documents, "raw_scores": True})
            ).json()
            got = {rank["index"]: rank["score"] for rank in body}
            want = [expected[(query, document)] for document in documents]
        else:
            body = (await http.post("/score", json={"text_1": query, "text_2": documents})).json()
            got = {item["index"]: item["score"] for item in body["data"]}
            want = [sigmoid[(query, document)] for document in documents]
        assert sorted(got) == list(range(len(documents)))
        return [got[index] - want[index] for index in range(len(documents))]

    async def run():
        queue = asyncio.Queue()
        for request in requests:
            queue.put_nowait(request)
        headers = {"Authorization": f"Bearer {KEY}"}
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(
            base_url=enc_server.url, headers=headers, timeout=120, limits=limits
        ) as http:

            async def worker():
                errors = []
                while not queue.empty():
                    errors.extend(await one(http, *queue.get_nowait()))
                return errors

            return await asyncio.gather(*(worker() for _ in range(CLIENTS)))

    started = time.perf_counter()
    errors = [error for worker in asyncio.run(run()) for error in worker]
    elapsed = time.perf_counter() - started
    after = enc_client.get("/metrics").text
    assert len(errors) == sum(len(documents) for _, documents, _ in requests)  # nothing lost
    assert max(abs(error) for error in errors) < ATOL  # nothing mixed
    batches = metric(after, "autorerank_batch_requests_count") - metric(
        before, "autorerank_batch_requests_count"
    )
    served = metric(after, "autorerank_batch_requests_sum") - metric(before, "autorerank_batch_requests_sum")
    assert served == REQUESTS
    # Batches grow with the model's share of the time; test_server_limits.py pins them with a slow model.
    assert served / batches > 1, f"{served / batches:.1f} requests per model call: requests were not batched"
    print(
        f"{REQUESTS} requests from {CLIENTS} clients in {elapsed:.1f} s, {served / batches:.1f} requests per call"
    )
    assert elapsed < 120


# ----------------------------------------------------------------------------- an LLM reranker
def test_an_llm_reranker_serves_the_librarys_scores():
    llm = fixture_path("llm/bge-reranker-v2-gemma")
    process = ServerProcess.command(llm)
    try:
        reranker = cached_reranker("llm/bge-reranker-v2-gemma")
        with httpx.Client(base_url=process.url, timeout=120) as http:
            body = http.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True}).json()
            assert_ranked(body, "score", reranker.compute_score(pairs(QUERY, DOCUMENTS)))
            body = http.post("/v2/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()
            assert_ranked(
                body["results"],
                "relevance_score",
                reranker.compute_score(pairs(QUERY, DOCUMENTS), normalize=True),
            )
            assert http.get("/info").json()["kind"] == "decoder-only-base"
    finally:
        process.stop()
