"""The server counts and cuts pairs as the model lays them out, for the kinds whose layout adds to ``max_length``:
an LLM reranker (separator and prompt past ``max_length``, as FlagEmbedding) and Qwen3-Reranker (a chat template).
Real servers over the fixtures; whether the library reads a passage's end is told by its scores, not by the code
under test: appending words changes the score of a pair the model reads whole, and not of one it cuts."""

from __future__ import annotations

import pytest
from conftest import cached_reranker, fixture_path
from server_support import ServerProcess
from tokenizers import Tokenizer

httpx = pytest.importorskip("httpx")

LLM, QWEN3 = "llm/bge-reranker-v2-gemma", "qwen3/Qwen3-Reranker-0.6B"
QUERY = "what is a panda?"
TAIL = " and then some more words"
# The Qwen3-Reranker model card's prompt around "<Instruct>: ...\n<Query>: ...\n<Document>: ...".
CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def words(count: int) -> str:
    return " ".join(["word"] * count)


@pytest.fixture(scope="module", params=[(LLM, 505, 530), (QWEN3, 8000, 8150)], ids=["llm", "qwen3"])
def served(request):
    fixture, whole, cut = request.param
    server = ServerProcess.command(fixture_path(fixture))
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            yield fixture, client, words(whole), words(cut)
    finally:
        server.stop()


def test_the_library_reads_the_whole_passage_and_cuts_the_long_one(served):
    """The premise of the tests below, checked on the library's scores."""
    fixture, _, whole, cut = served
    library = cached_reranker(fixture)
    assert library.compute_score([(QUERY, whole)]) != library.compute_score([(QUERY, whole + TAIL)])
    assert library.compute_score([(QUERY, cut)]) == library.compute_score([(QUERY, cut + TAIL)])


def test_truncate_false_scores_a_pair_the_model_reads_whole_and_refuses_one_it_would_cut(served):
    fixture, client, whole, cut = served
    body = {"query": QUERY, "texts": [whole], "truncate": False, "raw_scores": True}
    response = client.post("/rerank", json=body)
    assert response.status_code == 200, response.text
    assert response.json()[0]["score"] == pytest.approx(
        cached_reranker(fixture).compute_score([(QUERY, whole)])[0], abs=1e-4
    )
    response = client.post("/rerank", json={**body, "texts": [cut]})
    assert response.status_code == 413, response.text
    assert "`texts[0]` with its query has more than" in response.json()["error"]


def test_left_truncation_keeps_the_end_of_a_long_passage(served):
    """Two long passages that differ only in their last words must score differently when their ends are kept."""
    _, client, _, cut = served
    body = {
        "query": QUERY,
        "texts": [cut + " pandas eat bamboo", cut + " cars need fuel"],
        "raw_scores": True,
    }
    scores = {
        item["index"]: item["score"]
        for item in client.post("/rerank", json={**body, "truncation_direction": "Left"}).json()
    }
    assert scores[0] != scores[1]
    right = {item["index"]: item["score"] for item in client.post("/rerank", json=body).json()}
    assert right[0] == right[1]  # cut at the end, the two are the same text


def test_usage_counts_the_qwen3_chat_template():
    """What the model card feeds the model: its prefix, the instructed pair, its suffix, tokenized apart."""
    tokenizer = Tokenizer.from_file(fixture_path(QWEN3) + "/tokenizer.json")
    document = "The giant panda is a bear."
    middle = f"<Instruct>: {CARD_INSTRUCTION}\n<Query>: {QUERY}\n<Document>: {document}"
    expected = sum(
        len(tokenizer.encode(text, add_special_tokens=False).ids)
        for text in (CARD_PREFIX, middle, CARD_SUFFIX)
    )
    server = ServerProcess.command(fixture_path(QWEN3))
    try:
        response = httpx.post(
            server.url + "/v1/score", json={"text_1": QUERY, "text_2": [document]}, timeout=60
        )
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == expected


def test_a_reranker_on_several_devices_counts_cross_encoder_pairs_as_the_model_lays_them_out():
    """With its model in worker processes the server counts from token counts alone: exact for cross-encoders, so
    it must agree with the count laid out by the loaded model, pair by pair, cut or not."""
    from autorerank import AutoReranker
    from autorerank.server.dialects import Scoring
    from autorerank.server.errors import PayloadTooLarge
    from autorerank.server.tokens import TokenCounter

    encoder = "enc/bge-reranker-v2-m3"
    passages = ["a panda", words(300), words(505), words(600), "bamboo " * 40]
    scoring = Scoring([QUERY] * len(passages), passages, "texts", passage_max_length=None, truncate_left=True)
    with AutoReranker.from_finetuned(fixture_path(encoder), devices=["cpu", "cpu"]) as spread:
        assert spread.input_lengths([QUERY], ["a panda"]) is None  # no model in this process
        estimated = TokenCounter(spread).prepare(scoring)
        with pytest.raises(PayloadTooLarge, match=r"`texts\[2\]`"):
            TokenCounter(spread).prepare(Scoring([QUERY] * 3, passages[:3], "texts", truncate=False))
    measured = TokenCounter(cached_reranker(encoder)).prepare(scoring)
    assert estimated.tokens == measured.tokens
    assert estimated.passages == measured.passages  # the same ends kept
    assert measured.passages[3] != passages[3] and measured.passages[0] == passages[0]
