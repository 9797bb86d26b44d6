"""The server's wire formats, against a real server process, with real clients (httpx, the cohere SDK).

Every score the server returns is checked against the library in this process on the same pairs: sigmoid for
``relevance_score`` (and TEI's and vLLM's defaults), raw for TEI's ``raw_scores`` and vLLM's ``use_activation:
false``. Scores of one pair can differ by float32 rounding with what else is in its batch (see
test_invariance.py), hence the tolerance. The server (``enc_server``, ``enc_client``) and the reference
(``enc_reference``) come from conftest.py.
"""

from __future__ import annotations

import time

import pytest
from server_support import ATOL, DOCUMENTS, ENC, KEY, QUERY, assert_ranked, metric, pairs

httpx = pytest.importorskip("httpx")
cohere = pytest.importorskip("cohere")

LONG = "The giant panda lives in mountain forests of bamboo in central China. " * 60


# ----------------------------------------------------------------------------- Cohere and Jina
@pytest.mark.parametrize("route", ["/v1/rerank", "/v2/rerank"])
def test_cohere_relevance_scores_are_the_librarys_sigmoid_scores_best_first(enc_client, enc_reference, route):
    documents = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, *DOCUMENTS[2:]]
    response = enc_client.post(route, json={"model": "rerank-v3.5", "query": QUERY, "documents": documents})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = enc_reference.compute_score(pairs(QUERY, DOCUMENTS), normalize=True)
    assert_ranked(body["results"], "relevance_score", expected)
    assert all(0 < result["relevance_score"] < 1 and "document" not in result for result in body["results"])
    assert body["id"] and body["meta"]["api_version"]["version"] == route[2]
    assert body["meta"]["billed_units"]["search_units"] == 1


def test_cohere_top_n_and_return_documents(enc_client, enc_reference):
    body = enc_client.post(
        "/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": True}
    ).json()
    expected = enc_reference.compute_score(pairs(QUERY, DOCUMENTS), normalize=True)
    best = sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])[:2]
    assert [result["index"] for result in body["results"]] == best
    assert [result["document"] for result in body["results"]] == [{"text": DOCUMENTS[i]} for i in best]


def test_jina_fields_usage_and_model_count_the_tokens_the_model_reads(enc_client, enc_reference):
    body = enc_client.post(
        "/v1/rerank",
        json={
            "model": "jina-reranker-v2-base-multilingual",
            "query": QUERY,
            "documents": DOCUMENTS,
            "top_n": 3,
        },
    ).json()
    # The same count with the transformers tokenizer: query, document and the pair's special tokens.
    expected = sum(len(enc_reference.tokenizer(QUERY, document)["input_ids"]) for document in DOCUMENTS)
    assert body["usage"]["total_tokens"] == expected == body["meta"]["tokens"]["input_tokens"]
    assert body["model"] == ENC  # the served name: MODEL as given
    assert len(body["results"]) == 3


def test_cohere_max_tokens_per_doc_cuts_documents_as_the_librarys_passage_max_length(
    enc_client, enc_reference
):
    documents = [LONG, DOCUMENTS[0] + " " + LONG]
    body = enc_client.post(
        "/v2/rerank", json={"query": QUERY, "documents": documents, "max_tokens_per_doc": 8}
    ).json()
    cut = enc_reference.compute_score(pairs(QUERY, documents), normalize=True, passage_max_length=8)
    whole = enc_reference.compute_score(pairs(QUERY, documents), normalize=True)
    assert_ranked(body["results"], "relevance_score", cut)
    assert abs(cut[0] - whole[0]) > 1e-4  # the cut changes the score, so the check above can fail


def test_the_cohere_sdk_v2_client_parses_the_response(enc_server, enc_reference):
    co = cohere.ClientV2(api_key=KEY, base_url=enc_server.url, timeout=120)
    response = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCUMENTS, top_n=3)
    expected = enc_reference.compute_score(pairs(QUERY, DOCUMENTS), normalize=True)
    assert len(response.results) == 3
    for result in response.results:
        assert result.relevance_score == pytest.approx(expected[result.index], abs=ATOL)
    assert response.results[0].index == max(range(len(DOCUMENTS)), key=lambda i: expected[i])


def test_the_cohere_sdk_v1_client_gets_its_documents_back(enc_server, enc_reference):
    co = cohere.Client(api_key=KEY, base_url=enc_server.url, timeout=120)
    response = co.rerank(query=QUERY, documents=DOCUMENTS, return_documents=True)
    expected = enc_reference.compute_score(pairs(QUERY, DOCUMENTS), normalize=True)
    assert [result.document.text for result in response.results] == [
        DOCUMENTS[result.index] for result in response.results
    ]
    for result in response.results:
        assert result.relevance_score == pytest.approx(expected[result.index], abs=ATOL)


# ----------------------------------------------------------------------------- text-embeddings-inference
@pytest.mark.parametrize("raw_scores", [False, True])
def test_tei_scores_follow_raw_scores(enc_client, enc_reference, raw_scores):
    body = enc_client.post(
        "/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": raw_scores, "return_text": True}
    ).json()
    assert isinstance(body, list)
    expected = enc_reference.compute_score(pairs(QUERY, DOCUMENTS), normalize=not raw_scores)
    assert_ranked(body, "score", expected)
    assert [rank["text"] for rank in body] == [DOCUMENTS[rank["index"]] for rank in body]
    if raw_scores:
        assert any(not 0 < rank["score"] < 1 for rank in body)  # really raw (the fixture's logits exceed 1)


@pytest.mark.parametrize("truncate", [None, True])
def test_tei_cuts_long_texts_as_the_library_does(enc_client, enc_reference, truncate):
    request = {"query": QUERY, "texts": [LONG, DOCUMENTS[0]], "raw_scores": True}
    if truncate is not None:
        request["truncate"] = truncate
    body = enc_client.post("/rerank", json=request).json()
    assert_ranked(body, "score", enc_reference.compute_score(pairs(QUERY, [LONG, DOCUMENTS[0]])))


def test_tei_truncate_false_refuses_a_text_longer_than_the_model_takes(enc_client):
    response = enc_client.post(
        "/rerank", json={"query": QUERY, "texts": [DOCUMENTS[0], LONG], "truncate": False}
    )
    assert response.status_code == 413
    assert response.json()["error_type"] == "PayloadTooLarge"
    assert "`texts[1]`" in response.json()["error"] and "truncate" in response.json()["error"]
    short = enc_client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "truncate": False})
    assert short.status_code == 200


def test_tei_left_truncation_keeps_the_end_of_a_long_text(enc_client, enc_reference):
    text = "Paris is the capital of France. " * 80 + "The giant panda is a bear."
    body = enc_client.post(
        "/rerank", json={"query": QUERY, "texts": [text], "raw_scores": True, "truncation_direction": "Left"}
    ).json()
    # Cut independently with the transformers tokenizer's offsets: keep what fits after the query.
    tokenizer = enc_reference.tokenizer
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    room = enc_reference.max_length - len(tokenizer(QUERY, add_special_tokens=False)["input_ids"]) - 4
    tail = text[encoded["offset_mapping"][len(encoded["input_ids"]) - room][0] :]
    assert body[0]["score"] == pytest.approx(enc_reference.compute_score([(QUERY, tail)])[0], abs=ATOL)
    assert abs(body[0]["score"] - enc_reference.compute_score([(QUERY, text)])[0]) > 1e-4  # not the right cut


# ----------------------------------------------------------------------------- vLLM
@pytest.mark.parametrize("route", ["/score", "/v1/score"])
def test_vllm_scores_one_text_1_against_every_text_2_in_order(enc_client, enc_reference, route):
    body = enc_client.post(route, json={"model": "m", "text_1": QUERY, "text_2": DOCUMENTS}).json()
    expected = enc_reference.compute_score(pairs(QUERY, DOCUMENTS), normalize=True)
    assert body["object"] == "list" and body["id"].startswith("score-") and isinstance(body["created"], int)
    assert [item["index"] for item in body["data"]] == list(range(len(DOCUMENTS)))  # input order, not ranked
    assert all(item["object"] == "score" for item in body["data"])
    assert [item["score"] for item in body["data"]] == pytest.approx(expected, abs=ATOL)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


def test_vllm_pairs_two_lists_item_by_item_and_use_activation_false_is_raw(enc_client, enc_reference):
    queries = [QUERY, "capital of France", QUERY]
    body = enc_client.post(
        "/score", json={"text_1": queries, "text_2": DOCUMENTS[:3], "use_activation": False}
    ).json()
    expected = enc_reference.compute_score(list(zip(queries, DOCUMENTS[:3])))
    assert [item["score"] for item in body["data"]] == pytest.approx(expected, abs=ATOL)
    single = enc_client.post("/score", json={"text_1": [QUERY], "text_2": DOCUMENTS[0]}).json()
    assert single["data"][0]["score"] == pytest.approx(
        enc_reference.compute_score([(QUERY, DOCUMENTS[0])], normalize=True)[0], abs=ATOL
    )


def test_vllm_lists_of_different_lengths_are_refused_naming_text_1(enc_client):
    response = enc_client.post("/score", json={"text_1": ["a", "b"], "text_2": ["c", "d", "e"]})
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
def test_no_documents_give_an_empty_result(enc_client, route, request_body, empty):
    response = enc_client.post(route, json=request_body)
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
        (
            "/v2/rerank",
            {"query": QUERY, "documents": ["a"], "max_tokens_per_doc": 10**30},
            422,
            "`max_tokens_per_doc` must be at most 9223372036854775807",
        ),
    ],
)
def test_wrong_fields_are_refused_naming_the_field(enc_client, route, request_body, status, message):
    response = enc_client.post(route, json=request_body)
    assert response.status_code == status, response.text
    assert message in response.json()["message"]


@pytest.mark.parametrize("route", ["/v1/rerank", "/rerank", "/score"])
def test_malformed_json_is_a_400(enc_client, route):
    response = enc_client.post(
        route, content=b'{"query": "a", "documents": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.text


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/v1/rerank", '{"query": "q", "documents": ["a", "b\\ud800c"]}', "documents[1]"),
        ("/v2/rerank", '{"query": "q", "documents": [{"text": "\\udfff"}]}', "documents[0].text"),
        ("/rerank", '{"query": "\\udfff", "texts": ["a"]}', "query"),
        ("/score", '{"text_1": "q", "text_2": ["a", "\\ud800"]}', "text_2[1]"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_field(enc_client, route, body, field):
    """A broken \\u escape is valid JSON but no text the tokenizer can take (it was a plain-text 500)."""
    response = enc_client.post(route, content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert f"`{field}` cannot be encoded as UTF-8: it holds a lone surrogate" in response.json()["message"]


def test_json_nested_past_the_parsers_depth_is_a_400(enc_client):
    body = b"[" * 100_000 + b"]" * 100_000
    response = enc_client.post("/v1/rerank", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "nests too deeply" in response.json()["message"]


def test_fields_the_server_does_not_use_are_ignored(enc_client):
    request = {
        "query": QUERY,
        "documents": DOCUMENTS,
        "rank_fields": ["text"],
        "priority": 3,
        "stream": False,
    }
    assert enc_client.post("/v1/rerank", json=request).status_code == 200
    request = {"query": QUERY, "texts": DOCUMENTS, "prompt_name": None, "dimensions": 3}
    assert enc_client.post("/rerank", json=request).status_code == 200


# ----------------------------------------------------------------------------- info, health, metrics, logs
def test_info_describes_the_model(enc_client):
    info = enc_client.get("/info").json()
    assert info["kind"] == "encoder-only-base" and info["detected_by"].startswith("config.json")
    assert (info["max_length"], info["dtype"], info["device"], info["backend"]) == (
        512,
        "float32",
        "cpu",
        "torch",
    )
    assert info["model"] == ENC and info["version"]


def test_metrics_count_requests_pairs_tokens_and_batches(enc_client):
    before = enc_client.get("/metrics").text
    enc_client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS})
    enc_client.post("/rerank", json={"query": QUERY, "texts": 7})
    after = enc_client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("autorerank_requests_total", route="/rerank", status="200") == 1
    assert delta("autorerank_requests_total", route="/rerank", status="422") == 1
    assert delta("autorerank_pairs_total") == len(DOCUMENTS)
    assert delta("autorerank_tokens_total") > len(DOCUMENTS)
    assert delta("autorerank_batch_pairs_count") == 1
    assert delta("autorerank_request_seconds_count", route="/rerank") == 2
    assert "autorerank_queue_pairs" in after and "autorerank_requests_in_flight" in after


def test_one_json_log_line_per_request_and_never_the_key(enc_client, enc_server):
    marker = f"/rerank-{time.monotonic_ns()}"  # a path of its own (404), to find this request's line
    enc_client.post(marker, json={})
    enc_client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS[:2]})
    time.sleep(0.2)
    records = enc_server.access_records()
    mine = [record for record in records if record["route"] == marker]
    assert len(mine) == 1 and mine[0]["status"] == 404
    scored = [record for record in records if record["route"] == "/rerank" and record["documents"] == 2]
    assert scored and set(scored[-1]) >= {"route", "status", "documents", "tokens", "latency_ms"}
    assert scored[-1]["tokens"] > 0
    assert all(KEY not in line for line in enc_server.lines)
