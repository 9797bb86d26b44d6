"""The runtime protocol (``backends.base.Runtime``): every runtime scores the same batch alike and describes
itself; the (kind, backend) table refuses what cannot run, naming the fix."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fixture_path, golden_case
from transformers import BertConfig

from autorerank import AutoReranker
from autorerank.backends import Runtime, RuntimeInfo, build_runtime, check_backend
from autorerank.backends.base import ExportedRuntime, check_cpu_devices, check_float32
from autorerank.batching import Batch, Features, collate
from autorerank.errors import InvalidOptionError
from autorerank.kinds.base import ModelSource, Plan, ScoreModule
from autorerank.options import constructor_options
from autorerank.registry import kind_named
from autorerank.tokenization import load_tokenizer

ENCODER, LLM, LAYERWISE = "encoder-only-base", "decoder-only-base", "decoder-only-layerwise"
# (kind, fixture, golden case whose pairs make the batch, runtimes to compare)
SUBJECTS = {
    "encoder": (ENCODER, "enc-bert/bge-reranker-base", "bert-auto-default", ("torch", "onnx", "openvino")),
    "llm": (LLM, "llm/bge-reranker-v2-gemma", "llm-auto-default", ("torch", "openvino")),
}
PACKAGES = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino",)}
CPU = torch.device("cpu")


def _require(backend: str) -> None:
    for package in PACKAGES.get(backend, ()):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"backend={backend!r} needs {package}")


@functools.cache
def _features(subject: str) -> tuple[Features, int, str]:
    """Eight golden pairs tokenized by the kind's own hooks, with the pad id and the side they are padded on."""
    name, fixture, case, _ = SUBJECTS[subject]
    kind, path = kind_named(name), fixture_path(fixture)
    tokenizer = load_tokenizer(path)
    prepared = kind.prepare(tokenizer, kind.load(ModelSource(path)))
    options = constructor_options("test", kind.features, kind.defaults, {})
    queries, passages = (list(texts) for texts in zip(*golden_case(case)["pairs"][:8]))
    return kind.encode(prepared, queries, passages, options), tokenizer.pad_id, kind.padding_side


def _batch(subject: str, rows: list[int]) -> Batch:
    features, pad_id, side = _features(subject)
    return collate(features, np.asarray(rows), pad_id=pad_id, side=side, device=CPU)


def _runtime(subject: str, backend: str, onnx_dir: Path) -> Runtime:
    """A runtime built as the reranker builds it, from freshly loaded weights."""
    name, fixture, _, _ = SUBJECTS[subject]
    kind, path = kind_named(name), fixture_path(fixture)
    model = kind.load(ModelSource(path))
    prepared = kind.prepare(load_tokenizer(path), model)
    cache = str(onnx_dir) if backend == "onnx" else None
    return build_runtime(
        kind,
        model,
        prepared,
        backend=backend,
        device=CPU,
        dtype=torch.float32,
        onnx_dir=cache,
        model_name_or_path=path,
    )


@pytest.mark.parametrize(
    "subject, backend", [(subject, backend) for subject, spec in SUBJECTS.items() for backend in spec[3]]
)
def test_every_runtime_scores_a_batch_like_torch_and_describes_itself(subject, backend, tmp_path):
    _require(backend)
    batch = _batch(subject, list(range(8)))
    assert not batch.attention_mask.all(), "the batch should hold padding"
    reference = _runtime(subject, "torch", tmp_path).score(batch, Plan())
    runtime = _runtime(subject, backend, tmp_path)
    scores = runtime.score(batch, Plan())
    assert scores.shape == (Plan().n_outputs, len(batch)) == (1, 8)
    assert scores.dtype == torch.float32 and scores.device == runtime.device == CPU
    torch.testing.assert_close(scores, reference, rtol=0, atol=1e-4)
    alone = torch.cat([runtime.score(_batch(subject, [row]), Plan()) for row in range(8)], dim=1)  # (1, 8)
    torch.testing.assert_close(alone, scores, rtol=0, atol=1e-5)
    assert runtime.backend == backend and runtime.padded
    info = runtime.describe()
    assert isinstance(info, RuntimeInfo)
    assert (info.backend, info.device, info.dtype) == (backend, "cpu", "float32")
    expected = "BertForSequenceClassification" if subject == "encoder" else "GemmaForCausalLM"
    assert info.architecture == expected and info.num_parameters > 0


class _Tiny(torch.nn.Module):
    config = BertConfig(architectures=["TinyForSequenceClassification"])

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)


class RowSums(ExportedRuntime):
    """A runtime whose 'model' sums each row's ids: enough to see what the shared base feeds it."""

    backend = "rowsums"

    def __init__(self) -> None:
        super().__init__(ScoreModule(_Tiny(), ("input_ids", "attention_mask", "token_type_ids")))
        self.fed: dict[str, np.ndarray] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.fed = feeds
        return sum(feed.sum(axis=1) for feed in feeds.values())  # (B,)


def test_exported_runtimes_get_int64_feeds_and_zeros_for_missing_token_types():
    runtime = RowSums()
    ids = torch.tensor([[5, 6, 0], [7, 0, 0]], dtype=torch.int32)  # (B, T)
    batch = Batch(input_ids=ids, attention_mask=(ids > 0).int(), lengths=torch.tensor([2, 1]))
    scores = runtime.score(batch, Plan())
    assert {name: feed.dtype for name, feed in runtime.fed.items()} == dict.fromkeys(runtime.fed, np.int64)
    np.testing.assert_array_equal(runtime.fed["token_type_ids"], np.zeros((2, 3)))
    assert scores.dtype == torch.float32 and scores.tolist() == [[11 + 2, 7 + 1]]
    parameters = 4 * 3 + 3
    assert runtime.describe() == RuntimeInfo(
        "rowsums", "cpu", "float32", "TinyForSequenceClassification", parameters
    )


@pytest.mark.parametrize(
    "kind, backend, options, message",
    [
        (
            LAYERWISE,
            "openvino",
            {},
            r"not available for decoder-only-layerwise rerankers; choose one of 'torch'\.$",
        ),
        (LLM, "onnx", {}, r"choose one of 'torch', 'openvino'"),
        (ENCODER, "torch", {"quantize": "int8"}, r"needs backend='openvino' .* or backend='onnx'"),
        (ENCODER, "openvino", {"onnx_dir": "/tmp"}, r"onnx_dir .* needs backend='onnx'"),
        (ENCODER, "onnx", {"devices": ["cpu", "cuda:0"]}, r"CPU only, not on cuda:0: pass devices='cpu'"),
        (LLM, "openvino", {"devices": ["mps"]}, r"CPU only, not on mps: pass devices='cpu'"),
    ],
)
def test_check_backend_refuses_what_cannot_run_naming_the_fix(kind, backend, options, message):
    given = {"quantize": None, "onnx_dir": None, "devices": ["cpu"], **options}
    with pytest.raises(InvalidOptionError, match=message):
        check_backend(kind_named(kind), backend, given["quantize"], given["onnx_dir"], given["devices"])


@pytest.mark.parametrize("kind, backend", [(ENCODER, "onnx"), (ENCODER, "openvino"), (LLM, "openvino")])
def test_check_backend_accepts_the_table(kind, backend):
    check_backend(kind_named(kind), backend, "int8", "/tmp" if backend == "onnx" else None, ["cpu"])


def test_the_reranker_refuses_a_backend_before_loading(monkeypatch):
    layerwise = kind_named(LAYERWISE)
    monkeypatch.setattr(type(layerwise), "load", lambda self, source: pytest.fail("loaded the weights"))
    with pytest.raises(InvalidOptionError, match="choose one of 'torch'"):
        AutoReranker.from_finetuned(
            fixture_path("layerwise/bge-reranker-v2-minicpm-layerwise"), devices="cpu", backend="openvino"
        )


def test_cpu_and_float32_checks_name_the_backend_and_the_fix():
    check_cpu_devices(["cpu", torch.device("cpu")], "rowsums")
    with pytest.raises(InvalidOptionError, match=r"backend='rowsums' runs on the CPU only, not on cuda:1"):
        check_cpu_devices(["cpu", "cuda:1"], "rowsums")
    model = _Tiny()
    check_float32(model, "rowsums")
    refused = r"backend='rowsums' takes float32 .* bfloat16: drop use_fp16/use_bf16"
    with pytest.raises(InvalidOptionError, match=refused):
        check_float32(model.to(torch.bfloat16), "rowsums")
