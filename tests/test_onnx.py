"""The ONNX Runtime backend: fp32 parity with torch, int8 ranking, the export cache, refused options."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_int8_keeps_ranking, fixture_path, golden_case, score_module

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import torch

from autorerank import AutoReranker
from autorerank.backends import onnx_export
from autorerank.backends.onnx import OnnxRuntime, load_onnx_runtime
from autorerank.batching import Batch
from autorerank.errors import InvalidOptionError, MissingDependencyError, ModelLoadError
from autorerank.kinds.base import Plan, ScoreModule

pytestmark = pytest.mark.onnx

CASES = {"enc": "enc-auto-default", "enc-bert": "bert-auto-default"}
# int8 may reorder near-ties; on the tiny random fixtures it keeps Spearman ~0.99 (measured 0.991-0.993).
MIN_INT8_SPEARMAN = 0.98


@pytest.fixture(scope="module")
def onnx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def rerankers(onnx_root: Path):
    """One reranker per (fixture, backend, quantize), exported once into the module's cache folder."""

    @functools.cache
    def get(name: str, backend: str = "torch", quantize: str | None = None):
        fixture = golden_case(CASES[name])["fixture"]
        extra = (
            {}
            if backend == "torch"
            else {"backend": backend, "quantize": quantize, "onnx_dir": str(onnx_root)}
        )
        return AutoReranker.from_finetuned(fixture_path(fixture), devices="cpu", **extra)

    return get


def _score_module(fixture: str) -> ScoreModule:
    return score_module("encoder-only-base", fixture)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fp32_scores_match_torch_and_golden(name, rerankers):
    record = golden_case(CASES[name])
    reranker = rerankers(name, "onnx")
    onnx_scores = reranker.compute_score(record["pairs"])
    torch_scores = rerankers(name).compute_score(record["pairs"])
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=0, atol=1e-3)
    np.testing.assert_allclose(onnx_scores, record["scores"], rtol=0, atol=1e-3)
    assert isinstance(reranker.runtime, OnnxRuntime) and reranker.model is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_int8_keeps_the_fp32_ranking(name, rerankers):
    pairs = golden_case(CASES[name])["pairs"]
    fp32 = rerankers(name, "onnx").compute_score(pairs)
    int8 = rerankers(name, "onnx", "int8").compute_score(pairs)
    assert_int8_keeps_ranking(int8, fp32, f"{name} onnx", MIN_INT8_SPEARMAN)


def test_batching_and_padding_do_not_change_fp32_scores(rerankers):
    pairs = golden_case(CASES["enc-bert"])["pairs"]
    reranker = rerankers("enc-bert", "onnx")
    together = reranker.compute_score(pairs, batch_size=64)
    alone = reranker.compute_score(pairs, batch_size=1)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


def test_info_reads_like_the_torch_model(rerankers):
    onnx_info, torch_info = rerankers("enc", "onnx", "int8").info, rerankers("enc").info
    assert onnx_info.num_parameters == torch_info.num_parameters > 0
    assert onnx_info.architecture == torch_info.architecture == "XLMRobertaForSequenceClassification"
    assert onnx_info.dtype == "float32"
    assert (onnx_info.backend, torch_info.backend) == ("onnx", "torch")


def test_second_load_reuses_the_export(rerankers, onnx_root, monkeypatch):
    first = rerankers("enc-bert", "onnx", "int8").runtime.onnx_path
    stamps = {path: path.stat().st_mtime_ns for path in first.parents[1].rglob("*") if path.is_file()}

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this model")

    monkeypatch.setattr(onnx_export, "_trace", no_export)
    monkeypatch.setattr(onnx_export, "_quantize_int8", no_export)
    again = AutoReranker.from_finetuned(
        fixture_path(golden_case(CASES["enc-bert"])["fixture"]),
        devices="cpu",
        backend="onnx",
        quantize="int8",
        onnx_dir=str(onnx_root),
    )
    assert again.runtime.onnx_path == first
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    assert not list(first.parents[1].glob(".partial-*"))


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An onnx_dir holding the BERT fixture's fp32 export, to copy for tests that damage it."""
    root = tmp_path_factory.mktemp("built-onnx-cache")
    _load_bert_onnx(root)
    return root


def _load_bert_onnx(onnx_dir: Path) -> AutoReranker:
    fixture = golden_case(CASES["enc-bert"])["fixture"]
    return AutoReranker.from_finetuned(
        fixture_path(fixture), devices="cpu", backend="onnx", onnx_dir=str(onnx_dir)
    )


def _damage(path: Path, how: str) -> None:
    """Flip every bit pattern of the largest weight (the file still parses), cut the file in half, or empty it."""
    data = path.read_bytes()
    if how == "flipped":
        import onnx

        weight = max((tensor.raw_data for tensor in onnx.load(str(path)).graph.initializer), key=len)
        start = data.find(weight)
        flipped = (np.frombuffer(weight, dtype=np.uint8) ^ 0x40).tobytes()  # float exponents: values change
        data = data[:start] + flipped + data[start + len(weight) :]
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"" if how == "empty" else data)


@pytest.mark.parametrize("how", ["flipped", "truncated", "empty"])
def test_a_damaged_cached_model_is_rebuilt_with_a_warning(built_cache, tmp_path, how):
    shutil.copytree(built_cache, tmp_path, dirs_exist_ok=True)
    (path,) = tmp_path.rglob("fp32/model.onnx")
    _damage(path, how)
    with pytest.warns(RuntimeWarning, match=f"{re.escape(str(path))} .*Rebuilding"):
        reranker = _load_bert_onnx(tmp_path)
    record = golden_case(CASES["enc-bert"])
    np.testing.assert_allclose(reranker.compute_score(record["pairs"]), record["scores"], rtol=0, atol=1e-3)
    assert reranker.runtime.onnx_path == path
    assert sorted(item.name for item in path.parents[1].iterdir()) == ["fp32"]  # nothing broken left behind


def test_a_damaged_weights_side_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    side = _load_bert_onnx(tmp_path).runtime.onnx_path.with_name("model.onnx.data")
    side.write_bytes(side.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match=re.escape(str(side))):
        reranker = _load_bert_onnx(tmp_path)
    record = golden_case(CASES["enc-bert"])
    np.testing.assert_allclose(reranker.compute_score(record["pairs"]), record["scores"], rtol=0, atol=1e-3)


def test_an_export_without_checksums_is_rebuilt(built_cache, tmp_path):
    shutil.copytree(built_cache, tmp_path, dirs_exist_ok=True)
    (report,) = tmp_path.rglob("fp32/export.json")
    report.write_text(json.dumps({k: v for k, v in json.loads(report.read_text()).items() if k != "files"}))
    with pytest.warns(RuntimeWarning, match="no checksum"):
        _load_bert_onnx(tmp_path)
    assert "sha256" in json.loads(report.read_text())["files"]["model.onnx"]


def test_a_verified_export_is_hashed_once_per_process(built_cache, tmp_path, monkeypatch):
    shutil.copytree(built_cache, tmp_path, dirs_exist_ok=True)
    _load_bert_onnx(tmp_path)  # verifies the checksum

    def no_hash(path):
        raise AssertionError(f"hashed {path} again although it is unchanged")

    monkeypatch.setattr(onnx_export, "_sha256", no_hash)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load_bert_onnx(tmp_path)


def test_changed_weights_get_a_new_cache_folder(tmp_path):
    module = _score_module("enc-bert/bge-reranker-base")
    before = onnx_export.export_folder(module, "bge-reranker-base", tmp_path)
    with torch.no_grad():
        module.model.classifier.bias += 0.5
    after = onnx_export.export_folder(module, "bge-reranker-base", tmp_path)
    assert before != after and before.parent == after.parent == tmp_path


def test_a_failed_build_leaves_nothing_that_loads(tmp_path, monkeypatch):
    module = _score_module("enc-bert/bge-reranker-base")
    monkeypatch.setattr(onnx_export, "_max_error", lambda model, path: float("inf"))
    with pytest.raises(ModelLoadError, match="does not reproduce"):
        load_onnx_runtime(module, "bge-reranker-base", quantize=None, onnx_dir=tmp_path)
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []
    monkeypatch.undo()
    runtime = load_onnx_runtime(module, "bge-reranker-base", quantize=None, onnx_dir=tmp_path)
    assert runtime.onnx_path.is_file() and runtime.onnx_path.parent.name == "fp32"


def test_large_models_keep_weights_in_one_side_file(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    module = _score_module("enc-bert/bge-reranker-base")
    runtime = load_onnx_runtime(module, "bge-reranker-base", quantize="int8", onnx_dir=tmp_path)
    fp32_file = runtime.onnx_path.parents[1] / "fp32" / "model.onnx"
    assert (fp32_file.parent / "model.onnx.data").stat().st_size > fp32_file.stat().st_size
    ids = torch.tensor([[2, 5, 6, 3, 7, 8, 3]])  # (1, 7), inside the tiny vocabulary
    batch = Batch(ids, torch.ones_like(ids), torch.tensor([7]), token_type_ids=ids * 0)
    scores = runtime.score(batch, Plan())
    assert scores.shape == (1, 1) and torch.isfinite(scores).all()


def test_default_cache_is_outside_the_model_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORERANK_CACHE", str(tmp_path))
    assert onnx_export.cache_root(None) == tmp_path / "onnx"
    assert onnx_export.cache_root(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("AUTORERANK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_export.cache_root(None) == tmp_path / "xdg" / "autorerank" / "onnx"


def test_bf16_with_onnx_is_refused_before_exporting(tmp_path):
    with pytest.raises(InvalidOptionError, match="float32"):
        AutoReranker.from_finetuned(
            fixture_path("enc-bert/bge-reranker-base"),
            devices="cpu",
            use_bf16=True,
            backend="onnx",
            onnx_dir=str(tmp_path),
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "options, message",
    [
        ({"quantize": "int8"}, "needs backend='openvino'"),
        ({"backend": "onnx", "quantize": "int4"}, "quantize must be"),
        ({"backend": "tensorrt"}, "backend must be"),
    ],
)
def test_bad_option_combinations_are_refused(options, message, tmp_path):
    with pytest.raises(InvalidOptionError, match=message):
        AutoReranker.from_finetuned(
            fixture_path("enc-bert/bge-reranker-base"), devices="cpu", onnx_dir=str(tmp_path), **options
        )


def test_cuda_devices_are_refused_before_exporting(tmp_path):
    with pytest.raises(InvalidOptionError, match="CPU only|no cuda device"):  # (the latter on CPU machines)
        AutoReranker.from_finetuned(
            fixture_path("enc/bge-reranker-v2-m3"), devices="cuda:0", backend="onnx", onnx_dir=str(tmp_path)
        )
    assert list(tmp_path.iterdir()) == []


def test_missing_onnxruntime_names_the_extra(monkeypatch, tmp_path):
    module = _score_module("enc/bge-reranker-v2-m3")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"autorerank\[onnx\]"):
        load_onnx_runtime(module, "bge-reranker-v2-m3", quantize=None, onnx_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_scores_are_plain_floats_in_input_order(rerankers):
    pairs = golden_case(CASES["enc"])["pairs"][:5]
    reranker = rerankers("enc", "onnx")
    forward = reranker.compute_score(pairs)
    backward = reranker.compute_score(pairs[::-1])
    assert all(isinstance(score, float) for score in forward)
    np.testing.assert_allclose(forward, backward[::-1], rtol=0, atol=1e-5)
    query, documents = pairs[0][0], [pair[1] for pair in pairs]
    expected = reranker.compute_score([(query, document) for document in documents])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ranked = reranker.rerank(query, documents)
    assert [result.relevance_score for result in ranked] == sorted(expected, reverse=True)
    assert os.fspath(reranker.runtime.onnx_path).endswith(os.path.join("fp32", "model.onnx"))
