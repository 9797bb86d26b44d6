"""Limits and failures of a real server process: the API key, request sizes, a full queue, clients that leave,
a model that raises, SIGTERM with a request in flight, and requests batched while the model is busy.

The server here serves the encoder fixture through a stand-in for a slow or broken model: its ``iter_scores``
sleeps on a chunk where a pair's passage is ``SLOW`` and raises on one where it is ``BROKEN`` (the way a model
fails: out of memory, a driver error), and otherwise is the reranker's own. It scores one chunk at a time, without
the library's read-ahead, so that what arrives while the model is busy stays in the queue, where these tests look
for it (test_server_batcher.py covers read-ahead). Everything else is the real server, started with
:func:`autorerank.server.serve`.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time

import pytest
from conftest import cached_reranker
from server_support import ENC, ServerProcess, metric, wait_for

httpx = pytest.importorskip("httpx")

KEY = "sk-limits-93ac1d"
SLOW, BROKEN = "the model is slow", "the model breaks"
SLOW_SECONDS = 3.0  # the window in which a test sees what waits behind the busy model: 1.5 s was once too short in CI
ATOL = 2e-5
QUERY = "what is a giant panda?"
DOCUMENTS = ["The giant panda is a bear.", "Paris is in France.", "Pandas eat bamboo."]
LAUNCHER = """
import sys, time
from autorerank import AutoReranker
from autorerank.server import ServerSettings, serve

model, key, slow, broken, seconds = sys.argv[1:6]
reranker = AutoReranker.from_finetuned(model, devices="cpu")
stream = reranker.iter_scores

def iter_scores(chunks, **options):
    for chunk in chunks:
        passages = {passage for _, passage in chunk}
        if broken in passages:
            raise RuntimeError("the model broke")
        if slow in passages:
            time.sleep(float(seconds))
        yield from stream([chunk], **options)

reranker.iter_scores = iter_scores
serve(reranker, ServerSettings(port=0, api_key=key or None, max_documents=8, max_body_bytes=4000, max_queued_pairs=8))
"""


def start(key: str = KEY) -> ServerProcess:
    return ServerProcess(["-c", LAUNCHER, ENC, key, SLOW, BROKEN, str(SLOW_SECONDS)])


@pytest.fixture(scope="module")
def server():
    process = start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
        yield http


def gauge(client, name: str) -> float:
    return metric(client.get("/metrics").text, name)


def in_background(call) -> tuple[threading.Thread, list]:
    """Run ``call`` on a thread; its result lands in the returned list."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result


def occupy_the_model(client) -> tuple[threading.Thread, list]:
    """Send a slow request and return once the model worker is busy with it (nothing left in the queue)."""
    thread, result = in_background(lambda: client.post("/rerank", json={"query": QUERY, "texts": [SLOW]}))
    wait_for(
        lambda: (
            gauge(client, "autorerank_requests_in_flight") >= 1
            and gauge(client, "autorerank_queue_requests") == 0
        ),
        what="the slow request to reach the model",
    )
    return thread, result


# ----------------------------------------------------------------------------- the API key
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}],
)
def test_requests_without_the_key_get_401(server, headers):
    for route, body in [
        ("/v2/rerank", {"query": QUERY, "documents": DOCUMENTS}),
        ("/score", {"text_1": "a", "text_2": "b"}),
    ]:
        response = httpx.post(server.url + route, json=body, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["message"]
    assert httpx.get(server.url + "/metrics", headers=headers).status_code == 401
    assert httpx.get(server.url + "/info", headers=headers).status_code == 401
    assert httpx.get(server.url + "/health", headers=headers).status_code == 200  # for load balancers


def test_the_right_key_is_accepted_and_never_logged(server, client):
    assert client.post("/v2/rerank", json={"query": QUERY, "documents": DOCUMENTS}).status_code == 200
    assert client.get("/info").status_code == 200
    time.sleep(0.1)
    assert server.access_records()
    assert all(KEY not in line for line in server.lines)


# ----------------------------------------------------------------------------- sizes
def test_too_many_documents_get_413_naming_the_limit(client):
    response = client.post("/v1/rerank", json={"query": QUERY, "documents": ["a"] * 9})
    assert response.status_code == 413
    assert (
        "`documents` has 9 texts" in response.json()["message"]
        and "--max-documents" in response.json()["message"]
    )
    assert client.post("/v1/rerank", json={"query": QUERY, "documents": ["a"] * 8}).status_code == 200


def test_a_body_over_the_byte_limit_gets_413_declared_or_streamed(client):
    body = json.dumps({"query": QUERY, "texts": ["x" * 5000]}).encode()
    declared = client.post("/rerank", content=body, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "--max-body-bytes" in declared.json()["error"]
    streamed = client.post("/rerank", content=iter([body[:2000], body[2000:]]))  # chunked: no Content-Length
    assert streamed.status_code == 413


# ----------------------------------------------------------------------------- the queue
def test_requests_that_arrive_while_the_model_is_busy_are_scored_in_one_call(client):
    reranker = cached_reranker("enc/bge-reranker-v2-m3")
    before = client.get("/metrics").text
    slow, _ = occupy_the_model(client)
    waiting = [
        in_background(
            lambda document=document: client.post("/score", json={"text_1": QUERY, "text_2": [document]})
        )
        for document in DOCUMENTS * 2
    ]
    wait_for(lambda: gauge(client, "autorerank_queue_requests") == 6, what="six queued requests")
    slow.join()
    for thread, result in waiting:
        thread.join()
    after = client.get("/metrics").text
    calls = metric(after, "autorerank_batch_requests_count") - metric(
        before, "autorerank_batch_requests_count"
    )
    requests = metric(after, "autorerank_batch_requests_sum") - metric(
        before, "autorerank_batch_requests_sum"
    )
    assert (calls, requests) == (2, 7)  # the slow one alone, then all six together
    expected = reranker.compute_score([(QUERY, document) for document in DOCUMENTS], normalize=True)
    for (_, result), want in zip(waiting, expected * 2):
        assert result[0].json()["data"][0]["score"] == pytest.approx(want, abs=ATOL)


def test_a_full_queue_answers_429_with_retry_after(client):
    slow, slow_result = occupy_the_model(client)
    queued, queued_result = in_background(
        lambda: client.post("/v2/rerank", json={"query": QUERY, "documents": ["a"] * 5})
    )
    wait_for(lambda: gauge(client, "autorerank_queue_pairs") == 5, what="five queued pairs")
    refused = client.post("/v2/rerank", json={"query": QUERY, "documents": ["b"] * 4})  # 5 + 4 > 8
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "the queue is full" in refused.json()["message"]
    slow.join()
    queued.join()
    assert slow_result[0].status_code == queued_result[0].status_code == 200


def test_a_request_whose_client_has_gone_is_dropped_before_scoring(server, client):
    before = client.get("/metrics").text
    slow, _ = occupy_the_model(client)
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"query": QUERY, "texts": ["a document nobody will read"] * 3}).encode()
    head = f"POST /rerank HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
    with socket.create_connection((host, int(port))) as gone:
        gone.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_for(lambda: gauge(client, "autorerank_queue_requests") == 1, what="the request to be queued")
    slow.join()
    wait_for(lambda: gauge(client, "autorerank_queue_requests") == 0, what="the queue to drain")
    after = client.get("/metrics").text
    assert (
        metric(after, "autorerank_requests_dropped_total")
        - metric(before, "autorerank_requests_dropped_total")
        == 1
    )
    assert (
        metric(after, "autorerank_pairs_total") - metric(before, "autorerank_pairs_total") == 1
    )  # the slow one
    wait_for(
        lambda: any(record["status"] == 499 for record in server.access_records()), what="the 499 log line"
    )


# ----------------------------------------------------------------------------- a failing model
def test_a_model_error_fails_its_batch_with_500_and_the_server_keeps_serving(client):
    reranker = cached_reranker("enc/bge-reranker-v2-m3")
    failed = client.post("/rerank", json={"query": QUERY, "texts": [DOCUMENTS[0], BROKEN]})
    assert failed.status_code == 500
    assert failed.json()["error_type"] == "Backend" and "the model broke" in failed.json()["error"]
    assert client.get("/health").json() == {"status": "ok"}
    body = client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True}).json()
    expected = reranker.compute_score([(QUERY, document) for document in DOCUMENTS])
    assert {rank["index"]: rank["score"] for rank in body} == pytest.approx(
        dict(enumerate(expected)), abs=ATOL
    )
    assert gauge(client, "autorerank_model_errors_total") >= 1


# ----------------------------------------------------------------------------- SIGTERM
def test_sigterm_answers_the_request_in_flight_then_exits():
    process = start(key="")
    try:
        with httpx.Client(base_url=process.url, timeout=60) as http:
            slow, result = occupy_the_model(http)
            process.process.send_signal(signal.SIGTERM)
            slow.join()
            assert result[0].status_code == 200
            assert [rank["index"] for rank in result[0].json()] == [0]
        process.process.wait(30)
        assert process.process.returncode in (0, -signal.SIGTERM)
        assert any(record.get("event") == "stopped" and record["served"] >= 1 for record in process.records())
        with pytest.raises(httpx.ConnectError):
            httpx.get(process.url + "/health")
    finally:
        process.stop(signal.SIGKILL)


if sys.platform == "win32":  # SIGTERM and the raw-socket client assume POSIX
    pytestmark = pytest.mark.skip("POSIX only")
