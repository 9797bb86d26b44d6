"""The OpenVINO backend for cross-encoders: ``from_finetuned(path, backend="openvino", quantize=None | "int8")``.

The loaded (and PEFT-merged) float32 model is converted in memory when the reranker is built (about
a second for MiniLM; nothing is written to disk) and checked against torch on a padded batch.
Computation stays float32 (``INFERENCE_PRECISION_HINT``), even on CPUs where OpenVINO would pick
bf16 by itself.

``quantize="int8"`` stores every linear layer's weights as int8 with one scale per output channel,
and OpenVINO quantizes the activations at run time to int8 with one scale per group of 64 values of
each token, running the integer dot products on VNNI/AMX. Scales that fine keep the ranking where
one scale per tensor does not: on the benchmark's MiniLM-L6 cross-encoder, Spearman 0.996 against
fp32 scores, where ONNX Runtime's per-tensor dynamic int8 (``backend="onnx"``) reaches 0.965. Needs
``pip install 'autorerank[openvino]'``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InvalidOptionError, ModelLoadError
from ..optional import require
from .runtime import (
    RuntimeClassifier,
    check_cpu_devices,
    check_float32,
    eager_attention,
    max_logit_error,
    sample_inputs,
)

__all__ = ["OpenVinoSequenceClassifier", "load_openvino_model"]

logger = logging.getLogger(__name__)

_PURPOSE = "backend='openvino'"
# Activation values sharing one int8 scale: 32 ranks a little closer to fp32, 128 runs a little faster.
ACTIVATION_GROUP = 64


def load_openvino_model(
    torch_model: torch.nn.Module, *, quantize: str | None, devices: Sequence[str] | None = None
) -> OpenVinoSequenceClassifier:
    """The OpenVINO twin of a loaded float32 cross-encoder, compiled for this machine's CPU."""
    ov = require("openvino", "openvino", _PURPOSE)
    if quantize not in (None, "int8"):
        raise InvalidOptionError(f"quantize must be None or 'int8', got {quantize!r}.")
    check_cpu_devices(devices, "openvino")
    check_float32(torch_model, "openvino")
    torch_model = torch_model.eval()
    converted = _convert(ov, torch_model)
    core = ov.Core()
    shapes = [tuple(parameter.shape) for parameter in torch_model.parameters()]
    wrapper = OpenVinoSequenceClassifier(
        core.compile_model(converted, "CPU", _compile_config(None)), torch_model.config, shapes, None
    )
    error = max_logit_error(torch_model, wrapper._run_known)  # the conversion itself, before any rounding
    if error > 1e-3:
        raise ModelLoadError(
            f"The OpenVINO conversion of {type(torch_model).__name__} does not reproduce the torch scores "
            f"(max error {error:.3g}); use backend='torch' for this model."
        )
    if quantize == "int8":
        logger.info("int8 weights for %d linear layers", _int8_weights(ov, converted))
        compiled = core.compile_model(converted, "CPU", _compile_config(quantize))
        wrapper = OpenVinoSequenceClassifier(compiled, torch_model.config, shapes, quantize)
    return wrapper


def _convert(ov: Any, model: torch.nn.Module) -> Any:
    """Trace through a module returning the logits alone, on a padded batch (so no mask shortcut is traced)."""
    inputs = sample_inputs(model, batch=2, length=8)
    with eager_attention(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notices about code paths we do not take
        try:
            return ov.convert_model(_LogitsOnly(model), example_input=inputs)
        except Exception as exc:  # the converter raises its own OpConversionFailure types, and RuntimeError
            raise ModelLoadError(
                f"Cannot convert {type(model).__name__} to OpenVINO ({type(exc).__name__}: {exc}); "
                "use backend='torch'."
            ) from exc


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.model(**inputs).logits  # (B, num_labels)


def _int8_weights(ov: Any, model: Any) -> int:
    """Replace each float32 MatMul weight by int8 values times a per-output-channel scale, in place.

    OpenVINO's CPU plugin reads this decompression pattern as an int8-weight linear layer, and
    quantizes its input at run time (``DYNAMIC_QUANTIZATION_GROUP_SIZE``).
    """
    from openvino import opset13 as ops

    replaced = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "MatMul":
            continue
        source = node.input_value(1).get_node()
        if source.get_type_name() != "Constant" or source.get_element_type() != ov.Type.f32:
            continue
        weight = source.get_data()
        if weight.ndim != 2:
            continue
        transposed = bool(node.get_attributes().get("transpose_b", False))
        rows = weight if transposed else weight.T  # (N, K): one row per output channel
        scale = np.abs(rows).max(axis=1, keepdims=True) / 127.0  # (N, 1)
        scale[scale == 0] = 1.0
        values = np.clip(np.round(rows / scale), -127, 127).astype(np.int8)
        restored = ops.multiply(
            ops.convert(ops.constant(values), ov.Type.f32), ops.constant(scale.astype(np.float32))
        )
        if not transposed:
            restored = ops.transpose(restored, ops.constant(np.array([1, 0], dtype=np.int64)))
        node.input(1).replace_source_output(restored.output(0))
        replaced += 1
    return replaced


def _compile_config(quantize: str | None) -> dict[str, Any]:
    return {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": ACTIVATION_GROUP if quantize == "int8" else 0,
    }


class OpenVinoSequenceClassifier(RuntimeClassifier):
    """A sequence-classification model whose forward pass runs in an OpenVINO compiled model (CPU)."""

    backend = "openvino"

    def __init__(
        self, compiled: Any, config: Any, parameter_shapes: list[tuple[int, ...]], quantize: str | None
    ) -> None:
        super().__init__(config, parameter_shapes, [port.get_any_name() for port in compiled.inputs])
        self.compiled = compiled
        self.quantize = quantize
        self._request = compiled.create_infer_request()

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        result = self._request.infer(feeds)
        return np.array(
            result[self.compiled.output(0)], dtype=np.float32
        )  # a copy: the request reuses its buffer

    def _run_known(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """``_run`` on the inputs this model takes, dropping others (for checks fed every possible input)."""
        return self._run({name: feeds[name] for name in self._input_names})

    def extra_repr(self) -> str:
        return f"quantize={self.quantize!r}"
