"""The server's wire formats, against a real server process, with real clients (httpx, the cohere SDK).

Every score the server returns is checked against the library in this process on the same pairs: sigmoid for
``relevance_score`` (and TEI's and vLLM's defaults), raw for TEI's ``raw_scores`` and vLLM's ``use_activation:
false``. Scores of one pair can differ by float32 rounding with what else is in its batch (see
test_invariance.py), hence the tolerance.
"""

from __future__ import annotations

import time

import pytest
from conftest import cached_reranker
from test_server_process import ENC, ServerProcess, metric

httpx = pytest.importorskip("httpx")
cohere = pytest.importorskip("cohere")

KEY = "sk-test-5e1b7c"  # given through AUTORERANK_API_KEY, the way the README recommends
ATOL = 2e-5
QUERY = "what is a giant panda?"
DOCUMENTS = [
    "The giant panda is a bear species endemic to China.",
    "Paris is the capital of France.",
    "Pandas eat bamboo almost exclusively.",
    "The stock market fell sharply on Monday.",
    "A red panda is not closely related to the giant panda.",
]
LONG = "The giant panda lives in mountain forests of bamboo in central China. " * 60


@pytest.fixture(scope="module")
def server():
    process = ServerProcess.command(ENC, env={"AUTORERANK_API_KEY": KEY})
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def reranker():
    return cached_reranker("enc/bge-reranker-v2-m3")


def pairs(query: str, documents: list[str]) -> list[tuple[str, str]]:
    return [(query, document) for document in documents]


def assert_ranked(results, key, expected):
    """Results best first, one per document, each with its document's expected score."""
    scores = [result[key] for result in results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(result["index"] for result in results) == list(range(len(expected)))
    for result in results:
        assert result[key] == pytest.approx(expected[result["index"]], abs=ATOL), result


# ----------------------------------------------------------------------------- Cohere and Jina
@pytest.mark.parametrize("route", ["/v1/rerank", "/v2/rerank"])
def test_cohere_relevance_scores_are_the_librarys_sigmoid_scores_best_first(client, reranker, route):
    documents = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, *DOCUMENTS[2:]]
    response = client.post(route, json={"model": "rerank-v3.5", "query": QUERY, "documents": documents})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = reranker.compute_score(pairs(QUERY, DOCUMENTS), normalize=True)
    assert_ranked(body["results"], "relevance_score", expected)
    assert all(0 < result["relevance_score"] < 1 and "document" not in result for result in body["results"])
    assert body["id"] and body["meta"]["api_version"]["version"] == route[2]
    assert body["meta"]["billed_units"]["search_units"] == 1


def test_cohere_top_n_and_return_documents(client, reranker):
    body = client.post(
        "/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": True}
    ).json()
    expected = reranker.compute_score(pairs(QUERY, DOCUMENTS), normalize=True)
    best = sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])[:2]
    assert [result["index"] for result in body["results"]] == best
    assert [result["document"] for result in body["results"]] == [{"text": DOCUMENTS[i]} for i in best]


def test_jina_fields_usage_and_model_count_the_tokens_the_model_reads(client, reranker):
    body = client.post(
        "/v1/rerank",
        json={
            "model": "jina-reranker-v2-base-multilingual",
            "query": QUERY,
            "documents": DOCUMENTS,
            "top_n": 3,
        },
    ).json()
    # The same count with the transformers tokenizer: query, document and the pair's special tokens.
    expected = sum(len(reranker.tokenizer(QUERY, document)["input_ids"]) for document in DOCUMENTS)
    assert body["usage"]["total_tokens"] == expected == body["meta"]["tokens"]["input_tokens"]
    assert body["model"] == ENC  # the served name: MODEL as given
    assert len(body["results"]) == 3


def test_cohere_max_tokens_per_doc_cuts_documents_as_the_librarys_passage_max_length(client, reranker):
    documents = [LONG, DOCUMENTS[0] + " " + LONG]
    body = client.post(
        "/v2/rerank", json={"query": QUERY, "documents": documents, "max_tokens_per_doc": 8}
    ).json()
    cut = reranker.compute_score(pairs(QUERY, documents), normalize=True, passage_max_length=8)
    whole = reranker.compute_score(pairs(QUERY, documents), normalize=True)
    assert_ranked(body["results"], "relevance_score", cut)
    assert abs(cut[0] - whole[0]) > 1e-4  # the cut changes the score, so the check above can fail


def test_the_cohere_sdk_v2_client_parses_the_response(server, reranker):
    co = cohere.ClientV2(api_key=KEY, base_url=server.url, timeout=120)
    response = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCUMENTS, top_n=3)
    expected = reranker.compute_score(pairs(QUERY, DOCUMENTS), normalize=True)
    assert len(response.results) == 3
    for result in response.results:
        assert result.relevance_score == pytest.approx(expected[result.index], abs=ATOL)
    assert response.results[0].index == max(range(len(DOCUMENTS)), key=lambda i: expected[i])


def test_the_cohere_sdk_v1_client_gets_its_documents_back(server, reranker):
    co = cohere.Client(api_key=KEY, base_url=server.url, timeout=120)
    response = co.rerank(query=QUERY, documents=DOCUMENTS, return_documents=True)
    expected = reranker.compute_score(pairs(QUERY, DOCUMENTS), normalize=True)
    assert [result.document.text for result in response.results] == [
        DOCUMENTS[result.index] for result in response.results
    ]
    for result in response.results:
        assert result.relevance_score == pytest.approx(expected[result.index], abs=ATOL)


# ----------------------------------------------------------------------------- text-embeddings-inference
@pytest.mark.parametrize("raw_scores", [False, True])
def test_tei_scores_follow_raw_scores(client, reranker, raw_scores):
    body = client.post(
        "/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": raw_scores, "return_text": True}
    ).json()
    assert isinstance(body, list)
    expected = reranker.compute_score(pairs(QUERY, DOCUMENTS), normalize=not raw_scores)
    assert_ranked(body, "score", expected)
    assert [rank["text"] for rank in body] == [DOCUMENTS[rank["index"]] for rank in body]
    if raw_scores:
        assert any(not 0 < rank["score"] < 1 for rank in body)  # really raw (the fixture's logits exceed 1)


@pytest.mark.parametrize("truncate", [None, True])
def test_tei_cuts_long_texts_as_the_library_does(client, reranker, truncate):
    request = {"query": QUERY, "texts": [LONG, DOCUMENTS[0]], "raw_scores": True}
    if truncate is not None:
        request["truncate"] = truncate
    body = client.post("/rerank", json=request).json()
    assert_ranked(body, "score", reranker.compute_score(pairs(QUERY, [LONG, DOCUMENTS[0]])))


def test_tei_truncate_false_refuses_a_text_longer_than_the_model_takes(client):
    response = client.post("/rerank", json={"query": QUERY, "texts": [DOCUMENTS[0], LONG], "truncate": False})
    assert response.status_code == 413
    assert response.json()["error_type"] == "PayloadTooLarge"
    assert "`texts[1]`" in response.json()["error"] and "truncate" in response.json()["error"]
    short = client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "truncate": False})
    assert short.status_code == 200


def test_tei_left_truncation_keeps_the_end_of_a_long_text(client, reranker):
    text = "Paris is the capital of France. " * 80 + "The giant panda is a bear."
    body = client.post(
        "/rerank", json={"query": QUERY, "texts": [text], "raw_scores": True, "truncation_direction": "Left"}
    ).json()
    # Cut independently with the transformers tokenizer's offsets: keep what fits after the query.
    tokenizer = reranker.tokenizer
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    room = reranker.max_length - len(tokenizer(QUERY, add_special_tokens=False)["input_ids"]) - 4
    tail = text[encoded["offset_mapping"][len(encoded["input_ids"]) - room][0] :]
    assert body[0]["score"] == pytest.approx(reranker.compute_score([(QUERY, tail)])[0], abs=ATOL)
    assert abs(body[0]["score"] - reranker.compute_score([(QUERY, text)])[0]) > 1e-4  # not the right cut


# ----------------------------------------------------------------------------- vLLM
@pytest.mark.parametrize("route", ["/score", "/v1/score"])
def test_vllm_scores_one_text_1_against_every_text_2_in_order(client, reranker, route):
    body = client.post(route, json={"model": "m", "text_1": QUERY, "text_2": DOCUMENTS}).json()
    expected = reranker.compute_score(pairs(QUERY, DOCUMENTS), normalize=True)
    assert body["object"] == "list" and body["id"].startswith("score-") and isinstance(body["created"], int)
    assert [item["index"] for item in body["data"]] == list(range(len(DOCUMENTS)))  # input order, not ranked
    assert all(item["object"] == "score" for item in body["data"])
    assert [item["score"] for item in body["data"]] == pytest.approx(expected, abs=ATOL)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


def test_vllm_pairs_two_lists_item_by_item_and_use_activation_false_is_raw(client, reranker):
    queries = [QUERY, "capital of France", QUERY]
    body = client.post(
        "/score", json={"text_1": queries, "text_2": DOCUMENTS[:3], "use_activation": False}
    ).json()
    expected = reranker.compute_score(list(zip(queries, DOCUMENTS[:3])))
    assert [item["score"] for item in body["data"]] == pytest.approx(expected, abs=ATOL)
    single = client.post("/score", json={"text_1": [QUERY], "text_2": DOCUMENTS[0]}).json()
    assert single["data"][0]["score"] == pytest.approx(
        reranker.compute_score([(QUERY, DOCUMENTS[0])], normalize=True)[0], abs=ATOL
    )


def test_vllm_lists_of_different_lengths_are_refused_naming_text_1(client):
    response = client.post("/score", json={"text_1": ["a", "b"], "text_2": ["c", "d", "e"]})
    assert response.status_code == 422
    body = response.json()
    assert body["object"] == "error" and body["param"] == "text_1" and body["code"] == 422
    assert "`text_1` has 2 texts and `text_2` 3" in body["message"]


# ----------------------------------------------------------------------------- every dialect
@pytest.mark.parametrize(
    ("route", "request_body", "empty"),
    [
        ("/v1/rerank", {"query": QUERY, "documents": []}, lambda body: body["results"]),
        ("/v2/rerank", {"query": QUERY, "documents": []}, lambda body: body["results"]),
        ("/rerank", {"query": QUERY, "texts": []}, lambda body: body),
        ("/score", {"text_1": QUERY, "text_2": []}, lambda body: body["data"]),
    ],
)
def test_no_documents_give_an_empty_result(client, route, request_body, empty):
    response = client.post(route, json=request_body)
    assert response.status_code == 200
    assert empty(response.json()) == []


@pytest.mark.parametrize(
    ("route", "request_body", "status", "message"),
    [
        ("/v1/rerank", {"documents": ["a"]}, 422, "`query` is required"),
        ("/v1/rerank", {"query": QUERY, "documents": "a"}, 422, "`documents` must be an array"),
        (
            "/v2/rerank",
            {"query": QUERY, "documents": ["a", 3]},
            422,
            "`documents[1]` must be a string or an object",
        ),
        ("/v2/rerank", {"query": QUERY, "documents": [{"title": "a"}]}, 422, 'without a "text" string'),
        ("/v1/rerank", {"query": QUERY, "documents": ["a"], "top_n": "2"}, 422, "`top_n` must be an integer"),
        ("/v1/rerank", {"query": QUERY, "documents": ["a"], "top_n": 0}, 422, "`top_n` must be at least 1"),
        ("/v1/rerank", {"query": 5, "documents": ["a"]}, 422, "`query` must be a string, got a number"),
        (
            "/v1/rerank",
            {"query": QUERY, "documents": ["a"], "return_documents": "yes"},
            422,
            "`return_documents`",
        ),
        ("/rerank", {"query": QUERY, "texts": [None]}, 422, "`texts[0]` must be a string, got null"),
        (
            "/rerank",
            {"query": QUERY, "texts": ["a"], "raw_scores": 1},
            422,
            "`raw_scores` must be true or false",
        ),
        (
            "/rerank",
            {"query": QUERY, "texts": ["a"], "truncation_direction": "up"},
            422,
            "`truncation_direction`",
        ),
        ("/score", {"text_1": QUERY}, 422, "`text_2` is required"),
        ("/score", [QUERY, "a"], 422, "must be a JSON object, got an array"),
    ],
)
def test_wrong_fields_are_refused_naming_the_field(client, route, request_body, status, message):
    response = client.post(route, json=request_body)
    assert response.status_code == status, response.text
    assert message in response.json()["message"]


@pytest.mark.parametrize("route", ["/v1/rerank", "/rerank", "/score"])
def test_malformed_json_is_a_400(client, route):
    response = client.post(
        route, content=b'{"query": "a", "documents": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.text


def test_fields_the_server_does_not_use_are_ignored(client):
    request = {
        "query": QUERY,
        "documents": DOCUMENTS,
        "rank_fields": ["text"],
        "priority": 3,
        "stream": False,
    }
    assert client.post("/v1/rerank", json=request).status_code == 200
    request = {"query": QUERY, "texts": DOCUMENTS, "prompt_name": None, "dimensions": 3}
    assert client.post("/rerank", json=request).status_code == 200


# ----------------------------------------------------------------------------- info, health, metrics, logs
def test_info_describes_the_model(client):
    info = client.get("/info").json()
    assert info["kind"] == "encoder-only-base" and info["detected_by"].startswith("config.json")
    assert (info["max_length"], info["dtype"], info["device"], info["backend"]) == (
        512,
        "float32",
        "cpu",
        "torch",
    )
    assert info["model"] == ENC and info["version"]


def test_metrics_count_requests_pairs_tokens_and_batches(client):
    before = client.get("/metrics").text
    client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS})
    client.post("/rerank", json={"query": QUERY, "texts": 7})
    after = client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("autorerank_requests_total", route="/rerank", status="200") == 1
    assert delta("autorerank_requests_total", route="/rerank", status="422") == 1
    assert delta("autorerank_pairs_total") == len(DOCUMENTS)
    assert delta("autorerank_tokens_total") > len(DOCUMENTS)
    assert delta("autorerank_batch_pairs_count") == 1
    assert delta("autorerank_request_seconds_count", route="/rerank") == 2
    assert "autorerank_queue_pairs" in after and "autorerank_requests_in_flight" in after


def test_one_json_log_line_per_request_and_never_the_key(client, server):
    marker = f"/rerank-{time.monotonic_ns()}"  # a path of its own (404), to find this request's line
    client.post(marker, json={})
    client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS[:2]})
    time.sleep(0.2)
    records = server.access_records()
    mine = [record for record in records if record["route"] == marker]
    assert len(mine) == 1 and mine[0]["status"] == 404
    scored = [record for record in records if record["route"] == "/rerank" and record["documents"] == 2]
    assert scored and set(scored[-1]) >= {"route", "status", "documents", "tokens", "latency_ms"}
    assert scored[-1]["tokens"] > 0
    assert all(KEY not in line for line in server.lines)
