"""Shared test helpers: where the fixtures are, the golden records, cached rerankers."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download; set before huggingface_hub is imported

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
GOLDEN_PATH = FIXTURES / "golden_public.json"


@functools.lru_cache(maxsize=1)
def golden() -> dict[str, Any]:
    with open(GOLDEN_PATH, encoding="utf-8") as handle:
        return json.load(handle)


def golden_records(prefix: str = "") -> list[dict[str, Any]]:
    """Golden records whose fixture folder starts with ``prefix``."""
    return [record for record in golden()["records"] if record["fixture"].startswith(prefix)]


def golden_case(case_id: str) -> dict[str, Any]:
    return next(record for record in golden()["records"] if record["case_id"] == case_id)


def tolerance(fixture: str) -> float:
    """The parity tolerance the fixtures README asks for: max(1e-4, suggested)."""
    suggested = golden()["meta"]["suggested_abs_tolerance"]
    return max(1e-4, suggested[fixture.rstrip("/")])


def write(path: Path, text: str | bytes) -> Path:
    """Write a test input file (bytes as given, text as UTF-8) and return its path."""
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation of two score lists (continuous scores: no ties to average)."""
    import numpy as np

    rank_a = np.argsort(np.argsort(a)).astype(float)
    rank_b = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def assert_int8_keeps_ranking(int8: list[float], fp32: list[float], label: str, min_spearman: float) -> None:
    """int8 scores rank like fp32 ones (Spearman printed for the log), and really were quantized."""
    import numpy as np

    rho = spearman(int8, fp32)
    print(f"{label}: Spearman(int8, fp32) = {rho:.4f} over {len(fp32)} pairs")
    assert rho >= min_spearman, f"int8 ranking drifted from fp32: Spearman {rho:.4f}"
    assert not np.allclose(int8, fp32, atol=1e-6), "int8 scores equal fp32: quantization did not happen"


def fixture_path(fixture: str) -> str:
    return str(FIXTURES / fixture)


def score_module(kind_name: str, fixture: str, *, scoring_only: bool = False):
    """A kind's score module over freshly loaded weights, as ``build_runtime`` hands it to other runtimes
    (``scoring_only``: as a reranker without an adapter loads it for the torch and OpenVINO backends)."""
    from autorerank.kinds.base import ModelSource
    from autorerank.registry import kind_named
    from autorerank.tokenization import load_tokenizer

    kind, path = kind_named(kind_name), fixture_path(fixture)
    model = kind.load(ModelSource(path, scoring_only=scoring_only))
    return kind.export_module(model, kind.prepare(load_tokenizer(path), model))


@functools.cache
def cached_reranker(fixture: str, **kwargs: Any):
    """One loaded reranker per fixture and options, shared across tests (scoring does not mutate it)."""
    from autorerank import AutoReranker

    return AutoReranker.from_finetuned(fixture_path(fixture), devices="cpu", **kwargs)


@pytest.fixture(scope="module")
def enc_reference():
    """The library itself on the encoder fixture: the scores the command line must reproduce."""
    return cached_reranker("enc/bge-reranker-v2-m3")


@pytest.fixture(scope="session")
def enc_path() -> str:
    return fixture_path("enc/bge-reranker-v2-m3")


@pytest.fixture(scope="module")
def enc_server():
    """A real server process over the encoder fixture that wants server_support.KEY (one per test module)."""
    pytest.importorskip("uvicorn", reason="the server tests need the server extra")
    from server_support import ENC, KEY, ServerProcess

    process = ServerProcess.command(ENC, env={"AUTORERANK_API_KEY": KEY})
    yield process
    process.stop()


@pytest.fixture(scope="module")
def enc_client(enc_server):
    """An httpx client of ``enc_server`` that sends the key."""
    httpx = pytest.importorskip("httpx")
    from server_support import KEY

    with httpx.Client(
        base_url=enc_server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
    ) as http:
        yield http


@pytest.fixture(scope="session")
def sample_pairs() -> list[list[str]]:
    return golden_case("enc-auto-default")["pairs"]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The fixture models are tiny: threads gain nothing, and idle OpenMP workers on a busy machine cost ~10x."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_configure(config: pytest.Config) -> None:
    if not GOLDEN_PATH.is_file():
        raise pytest.UsageError(f"Fixtures not found at {FIXTURES}; the repo must sit next to shared/.")
