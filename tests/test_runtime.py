"""What the ONNX and OpenVINO wrappers share (``backends.runtime``), checked once on a minimal real subclass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig

from autorerank.backends.runtime import RuntimeClassifier, check_cpu_devices
from autorerank.errors import InvalidOptionError, ModelLoadError


class RowSums(RuntimeClassifier):
    """A runtime whose 'model' sums each row's ids: enough to see what the base class feeds it."""

    backend = "rowsums"

    def __init__(self, input_names: list[str]) -> None:
        super().__init__(BertConfig(), [(3, 4), (5,)], input_names)
        self.fed: dict[str, np.ndarray] = {}

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.fed = feeds
        return sum(feed.sum(axis=1, keepdims=True) for feed in feeds.values())  # (B, 1)


def test_feeds_are_int64_and_missing_token_types_are_zeros():
    model = RowSums(["input_ids", "attention_mask", "token_type_ids"])
    ids = torch.tensor([[5, 6, 0], [7, 0, 0]], dtype=torch.int32)
    out = model(input_ids=ids, attention_mask=(ids > 0).long())
    assert {name: feed.dtype for name, feed in model.fed.items()} == dict.fromkeys(model.fed, np.int64)
    np.testing.assert_array_equal(model.fed["token_type_ids"], np.zeros((2, 3)))
    assert out.logits.dtype == torch.float32
    assert out.logits.view(-1).tolist() == [11 + 2, 7 + 1]


def test_it_reports_the_torch_parameter_shapes_without_holding_weights():
    shapes = [tuple(p.shape) for p in RowSums(["input_ids", "attention_mask"]).parameters()]
    assert shapes == [(3, 4), (5,)]
    assert all(p.device.type == "meta" for p in RowSums(["input_ids", "attention_mask"]).parameters())


def test_cuda_or_half_precision_is_refused_naming_the_backend():
    model = RowSums(["input_ids", "attention_mask"])
    assert model.to(device="cpu", dtype=torch.float32) is model
    for request in ({"device": "cuda:0"}, {"dtype": torch.float16}, {"dtype": torch.bfloat16}):
        with pytest.raises(InvalidOptionError, match="backend='rowsums'"):
            model.to(**request)
    with pytest.raises(InvalidOptionError, match="CPU only"):
        check_cpu_devices(["cpu", "cuda:1"], "rowsums")


def test_unsupported_model_inputs_are_refused():
    with pytest.raises(ModelLoadError, match="position_ids"):
        RowSums(["input_ids", "position_ids"])
