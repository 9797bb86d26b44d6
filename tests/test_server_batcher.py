"""The model worker on its own: the queue, chunks read ahead while the model scores, failures and shutdown.

A :class:`~autorerank.server.batcher.Batcher` drives the encoder fixture's real ``iter_scores`` (the library's
streaming scorer, which reads the next chunk while the model scores one), through a stand-in that holds each
chunk's scores until a gate opens: while it is closed the model is busy, so what the worker does meanwhile can be
watched. Every answer is compared with the library's own scores.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

import pytest
from conftest import cached_reranker
from server_support import ATOL, DOCUMENTS, QUERY, pairs

from autorerank.server.batcher import Batcher, Job
from autorerank.server.dialects import Scoring
from autorerank.server.errors import ModelFailed, NotServing
from autorerank.server.metrics import Metrics
from autorerank.server.tokens import Prepared, TokenCounter

pytest.importorskip("prometheus_client", reason="the server tests need the server extra")

BROKEN = "the model breaks on this passage"
WAIT = 30  # seconds any step may take on a busy machine


@pytest.fixture(scope="module")
def reranker():
    return cached_reranker("enc/bge-reranker-v2-m3")


class Model:
    """``reranker.iter_scores`` that holds each chunk's scores until ``gate`` opens, and raises on a chunk that
    holds ``BROKEN``; ``read`` counts the chunks the scorer has taken."""

    def __init__(self, reranker) -> None:
        self.reranker = reranker
        self.gate = threading.Event()
        self.read = 0

    def iter_scores(self, chunks, **options):
        waiting: deque = deque()

        def reading():
            for chunk in chunks:
                self.read += 1
                waiting.append(chunk)
                yield chunk

        for scores in self.reranker.iter_scores(reading(), **options):
            chunk = waiting.popleft()
            assert self.gate.wait(WAIT), "the test did not open the gate"
            if any(passage == BROKEN for _, passage in chunk):
                raise RuntimeError("the model broke")
            yield scores


def worker(reranker, model: Model, batch_tokens: int = 1) -> tuple[Batcher, Metrics]:
    """A started batcher over ``model``; batch_tokens=1 makes every request a chunk of its own."""
    metrics = Metrics()
    batcher = Batcher(model.iter_scores, max_queued_pairs=1000, batch_tokens=batch_tokens, metrics=metrics)
    batcher.start()
    return batcher, metrics


def prepared(reranker, documents: list[str], **options) -> Prepared:
    counted = TokenCounter(reranker).prepare(Scoring([QUERY] * len(documents), documents, "documents"))
    return Prepared(counted.queries, counted.passages, tuple(sorted(options.items())), counted.tokens)


def sample(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def until(condition, what: str) -> None:
    for _ in range(WAIT * 100):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def submit_all(batcher: Batcher, requests: list[Prepared], loop) -> list[Job]:
    jobs = [Job(request, loop.create_future()) for request in requests]
    for job in jobs:
        batcher.submit(job)
    return jobs


def test_requests_queued_while_the_model_is_busy_are_read_ahead_and_answered_in_order(reranker):
    model = Model(reranker)
    batcher, metrics = worker(reranker, model)
    requests = [prepared(reranker, DOCUMENTS[:2]), prepared(reranker, DOCUMENTS[2:])]

    async def run():
        jobs = submit_all(batcher, requests, asyncio.get_running_loop())
        # The model holds the first chunk; the second is taken off the queue and tokenized meanwhile.
        await until(lambda: model.read == 2, "the second chunk to be read ahead")
        assert sample(metrics, "autorerank_queue_requests") == 0
        assert not jobs[0].future.done()
        model.gate.set()
        return await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), WAIT)

    try:
        first, second = asyncio.run(run())
    finally:
        batcher.stop()
    expected = reranker.compute_score(pairs(QUERY, DOCUMENTS))
    assert first + second == pytest.approx(expected, abs=ATOL)
    assert sample(metrics, "autorerank_batch_requests_count") == 2
    assert sample(metrics, "autorerank_pairs_total") == len(DOCUMENTS)


def test_a_model_error_fails_its_chunk_only_and_the_chunk_read_ahead_is_scored_after_it(reranker):
    model = Model(reranker)
    batcher, metrics = worker(reranker, model)
    requests = [prepared(reranker, [DOCUMENTS[0], BROKEN]), prepared(reranker, DOCUMENTS[1:3])]

    async def run():
        jobs = submit_all(batcher, requests, asyncio.get_running_loop())
        await until(lambda: model.read == 2, "the second chunk to be read ahead")
        model.gate.set()
        return await asyncio.wait_for(
            asyncio.gather(*(job.future for job in jobs), return_exceptions=True), WAIT
        )

    try:
        failed, scored = asyncio.run(run())
        assert batcher.alive
    finally:
        batcher.stop()
    assert isinstance(failed, ModelFailed) and failed.status == 500 and "the model broke" in failed.message
    assert scored == pytest.approx(reranker.compute_score(pairs(QUERY, DOCUMENTS[1:3])), abs=ATOL)
    assert sample(metrics, "autorerank_model_errors_total") == 1
    assert model.read == 3  # the chunk read ahead went back to the queue and was read again


def test_requests_whose_client_has_gone_are_dropped_when_taken(reranker):
    model = Model(reranker)
    model.gate.set()
    batcher, metrics = worker(reranker, model, batch_tokens=10**6)

    async def run():
        loop = asyncio.get_running_loop()
        gone = Job(prepared(reranker, DOCUMENTS[:3]), loop.create_future())
        gone.gone = True  # its client left while it waited in the queue
        live = Job(prepared(reranker, DOCUMENTS[3:]), loop.create_future())
        batcher.submit(gone)
        batcher.submit(live)
        return await asyncio.wait_for(live.future, WAIT), gone

    try:
        scores, gone = asyncio.run(run())
    finally:
        batcher.stop()
    assert scores == pytest.approx(reranker.compute_score(pairs(QUERY, DOCUMENTS[3:])), abs=ATOL)
    assert not gone.future.done()
    assert sample(metrics, "autorerank_requests_dropped_total") == 1
    assert sample(metrics, "autorerank_pairs_total") == len(DOCUMENTS[3:])


def test_requests_with_other_library_options_are_scored_in_a_call_of_their_own(reranker):
    model = Model(reranker)
    model.gate.set()
    batcher, _ = worker(reranker, model, batch_tokens=10**6)
    long_documents = [document + " and more about it." * 20 for document in DOCUMENTS[:2]]

    async def run():
        requests = [
            prepared(reranker, long_documents),
            prepared(reranker, long_documents, passage_max_length=8),
            prepared(reranker, long_documents),
        ]
        jobs = submit_all(batcher, requests, asyncio.get_running_loop())
        return await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), WAIT)

    try:
        whole, cut, again = asyncio.run(run())
    finally:
        batcher.stop()
    assert whole == again == pytest.approx(reranker.compute_score(pairs(QUERY, long_documents)), abs=ATOL)
    expected = reranker.compute_score(pairs(QUERY, long_documents), passage_max_length=8)
    assert cut == pytest.approx(expected, abs=ATOL)
    assert abs(cut[0] - whole[0]) > 1e-4


def test_stop_answers_what_is_queued_then_refuses_new_requests(reranker):
    model = Model(reranker)
    batcher, _ = worker(reranker, model)

    async def run():
        loop = asyncio.get_running_loop()
        jobs = submit_all(batcher, [prepared(reranker, [document]) for document in DOCUMENTS], loop)
        stopping = asyncio.ensure_future(asyncio.to_thread(batcher.stop))
        await until(lambda: not batcher.alive, "the batcher to stop taking requests")
        with pytest.raises(NotServing):
            batcher.submit(Job(prepared(reranker, DOCUMENTS[:1]), loop.create_future()))
        model.gate.set()
        await asyncio.wait_for(stopping, WAIT)
        return [job.future.result() for job in jobs]

    scores = asyncio.run(run())
    expected = reranker.compute_score(pairs(QUERY, DOCUMENTS))
    assert [score for (score,) in scores] == pytest.approx(expected, abs=ATOL)
