"""Devices and precision: resolution rules, and several devices scoring in worker processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FIXTURES, cached_reranker, fixture_path, golden_case

from autorerank import AutoReranker, InvalidOptionError, WorkerError, devices
from autorerank.devices import resolve_devices, resolve_dtype

ENC = "enc/bge-reranker-v2-m3"


def test_device_resolution_follows_flagembedding(monkeypatch):
    assert resolve_devices("cpu") == ["cpu"]
    assert resolve_devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    if not torch.cuda.is_available():
        assert resolve_devices(None) in (["cpu"], ["mps"])
        with pytest.raises(InvalidOptionError, match="no cuda device.*devices='cpu'"):
            resolve_devices(0)
    for bad in ([], [1.5], "no-such-device"):
        with pytest.raises(InvalidOptionError):
            resolve_devices(bad)
    # On a machine with two CUDA devices (the count is what torch would report there):
    monkeypatch.setattr(devices, "_device_count", lambda name: 2 if name == "cuda" else 0)
    assert resolve_devices(None) == ["cuda:0", "cuda:1"]
    assert resolve_devices(1) == ["cuda:1"]
    assert resolve_devices([0, 1]) == ["cuda:0", "cuda:1"]
    with pytest.raises(InvalidOptionError, match="has 2 cuda device"):
        resolve_devices("cuda:2")


def test_precision_rules():
    with pytest.warns(UserWarning, match="use_fp16"):
        assert resolve_dtype(True, False, ["cpu"]) is torch.float32
    assert resolve_dtype(True, False, ["cuda:0"]) is torch.float16
    assert resolve_dtype(False, True, ["cpu"]) is torch.bfloat16
    assert resolve_dtype(False, False, ["cuda:0"]) is torch.float32


def test_precision_names_the_same_choice_as_the_switches(monkeypatch):
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        assert resolve_dtype(False, False, ["cuda:0"], precision) is dtype
    with pytest.warns(UserWarning, match="use_fp16"):
        assert resolve_dtype(False, False, ["cpu"], "fp16") is torch.float32
    with pytest.raises(InvalidOptionError, match="precision='bf16' and use_fp16=True"):
        resolve_dtype(True, False, ["cuda:0"], "bf16")
    # auto: fp16 on CUDA; on a CPU, bf16 only where it is native; fp32 on the exported runtimes and mixed devices
    assert resolve_dtype(False, False, ["cuda:0", "cuda:1"], "auto") is torch.float16
    for native, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(devices, "native_cpu_bf16", lambda native=native: native)
        assert resolve_dtype(False, False, ["cpu"], "auto") is dtype
        assert resolve_dtype(False, False, ["cpu"], "auto", backend="openvino") is torch.float32
        assert resolve_dtype(False, False, ["cpu", "cuda:0"], "auto") is torch.float32


@pytest.mark.parametrize(
    "cpuinfo, native",
    [
        ("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_vnni avx512_bf16\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse avx512f amx_tile amx_bf16 amx_int8\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n", False),
        ("processor\t: 0\nFeatures\t: fp asimd sve i8mm bf16\n", True),
        ("processor\t: 0\nFeatures\t: fp asimd\nmodel name\t: bf16 in a name is no flag\n", False),
        (None, False),
    ],
)
def test_native_cpu_bf16_reads_the_cpu_flags(tmp_path, cpuinfo, native):
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo, encoding="utf-8")
    assert devices.native_cpu_bf16(path) is native


def test_auto_precision_loads_the_model_in_the_chosen_dtype():
    reranker = AutoReranker.from_finetuned(fixture_path(ENC), devices="cpu", precision="auto")
    assert reranker.info.dtype == ("bfloat16" if devices.native_cpu_bf16() else "float32")
    with pytest.raises(InvalidOptionError, match="precision must be one of"):
        AutoReranker.from_finetuned(fixture_path(ENC), devices="cpu", precision="int4")


def test_bf16_encoder_ranks_like_fp32():
    pairs = golden_case("enc-auto-default")["pairs"]
    bf16 = AutoReranker.from_finetuned(fixture_path(ENC), devices="cpu", use_bf16=True)
    assert bf16.info.dtype == "bfloat16"
    fp32 = np.array(cached_reranker(ENC).compute_score(pairs))
    low = np.array(bf16.compute_score(pairs))
    assert np.abs(low - fp32).max() < 0.1
    assert np.corrcoef(np.argsort(np.argsort(low)), np.argsort(np.argsort(fp32)))[0, 1] > 0.98


@pytest.mark.slow
def test_several_devices_score_in_worker_processes_like_one():
    pairs = golden_case("enc-auto-default")["pairs"]
    with AutoReranker.from_finetuned(fixture_path(ENC), devices=["cpu", "cpu"]) as reranker:
        assert reranker.model is None and reranker.runtime is None  # the workers own the model
        assert reranker.info.num_parameters == cached_reranker(ENC).info.num_parameters
        scores = reranker.compute_score(pairs)
        np.testing.assert_allclose(scores, cached_reranker(ENC).compute_score(pairs), atol=2e-5)
        assert reranker.compute_score(pairs[:1]) == pytest.approx(scores[:1], abs=2e-5)  # pool is reused
    assert reranker._pool is None


@pytest.mark.slow
def test_a_failing_worker_raises_in_the_caller_instead_of_hanging(tmp_path):
    """Weights that only the workers read (the parent holds no model) are broken: the pool fails at load."""
    for file in (FIXTURES / ENC).iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(WorkerError, match="failed"):
        AutoReranker.from_finetuned(str(tmp_path), devices=["cpu", "cpu"])
