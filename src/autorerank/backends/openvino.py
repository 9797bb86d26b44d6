"""The OpenVINO backend: ``from_finetuned(path, backend="openvino", quantize=None | "int8")``.

The kind's score module (cross-encoders' logit, LLM rerankers' answer logit) over the loaded (and
PEFT-merged) float32 model is converted in memory when the reranker is built (about
a second for MiniLM; nothing is written to disk) and checked against torch on a padded batch.
Computation stays float32 (``INFERENCE_PRECISION_HINT``), even on CPUs where OpenVINO would pick
bf16 by itself, except under ``quantize="int8"`` (below).

``quantize="int8"`` stores every linear layer's weights as int8 with one scale per output channel. What
OpenVINO then computes depends on the CPU:

- without native bf16, it quantizes the activations at run time to int8 with one scale per group of 64 values of
  each token and runs the integer dot products on VNNI. Scales that fine keep the ranking where one scale per
  tensor does not: on the benchmark's MiniLM-L6 cross-encoder, Spearman 0.996 against fp32 scores, where ONNX
  Runtime's per-tensor dynamic int8 (``backend="onnx"``) reaches 0.965;
- with native bf16 (OpenVINO's ``BF16`` capability: AVX512-BF16 or AMX) the inference precision is bf16, and
  OpenVINO does not quantize activations in bf16: the GEMMs run in bf16 on the int8 weights, and attention, softmax
  and norms in bf16 too. Measured on the benchmark's MiniLM-L6 (512 pairs): on a 2-core AVX512-BF16 machine, 69
  pairs/s with f32 and dynamic int8 activations against 88 in bf16 (Spearman 0.996 and 0.995 against fp32); on a
  2-core AMX machine the group size moved neither speed nor scores in bf16 (Spearman 0.9990 with groups of 64,
  128 or whole tokens), dynamic int8 in f32 ran 87-102 pairs/s (Spearman 0.9956), bf16 on int8 weights 139, and
  bf16 on the float32 weights (torch's ``use_bf16=True`` does the same) 170-175: there int8 saves memory, not time.

Needs ``pip install 'autorerank[openvino]'``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch

from ..compat import eager_attention
from ..errors import ModelLoadError
from ..kinds.base import ScoreModule
from ..optional import require
from .base import ExportedRuntime, check_float32, max_score_error, sample_inputs

__all__ = ["OpenVinoRuntime", "load_openvino_runtime"]

logger = logging.getLogger(__name__)

_PURPOSE = "backend='openvino'"
# Activation values sharing one int8 scale: 32 ranks a little closer to fp32, 128 runs a little faster.
ACTIVATION_GROUP = 64


def load_openvino_runtime(module: ScoreModule, *, quantize: str | None) -> OpenVinoRuntime:
    """The OpenVINO twin of a float32 score module, compiled for this machine's CPU."""
    ov = require("openvino", "openvino", _PURPOSE)
    check_float32(module, "openvino")
    module = module.eval()
    converted = _convert(ov, module)
    core = ov.Core()
    runtime = OpenVinoRuntime(module, core.compile_model(converted, "CPU", _compile_config(None, core)), None)
    error = max_score_error(module, runtime.run_known)  # the conversion itself, before any rounding
    if error > 1e-3:
        raise ModelLoadError(
            f"The OpenVINO conversion of {type(module.model).__name__} does not reproduce the torch scores "
            f"(max error {error:.3g}); use backend='torch' for this model."
        )
    if quantize != "int8":
        return runtime
    del runtime  # the float32 compiled model has served its check; not held while the int8 one compiles
    logger.info("int8 weights for %d linear layers", _int8_weights(ov, converted))
    return OpenVinoRuntime(
        module, core.compile_model(converted, "CPU", _compile_config(quantize, core)), quantize
    )


def _convert(ov: Any, module: ScoreModule) -> Any:
    """Trace the score module on a padded batch (so no mask shortcut is traced)."""
    inputs = sample_inputs(module, batch=2, length=8)
    with eager_attention(module.model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notices about code paths we do not take
        try:
            return ov.convert_model(module, example_input=inputs)
        except Exception as exc:  # the converter raises its own OpConversionFailure types, and RuntimeError
            raise ModelLoadError(
                f"Cannot convert {type(module.model).__name__} to OpenVINO ({type(exc).__name__}: {exc}); "
                "use backend='torch'."
            ) from exc


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


def _compile_config(quantize: str | None, core: Any) -> dict[str, Any]:
    """f32 throughout; under int8, bf16 on int8 weights where the CPU has native bf16, else f32 with the
    activations quantized per 64 values (module docstring)."""
    native_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return {
        "INFERENCE_PRECISION_HINT": "bf16" if quantize == "int8" and native_bf16 else "f32",
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": ACTIVATION_GROUP if quantize == "int8" else 0,
    }


class OpenVinoRuntime(ExportedRuntime):
    """Scores in an OpenVINO compiled model (CPU)."""

    backend = "openvino"

    def __init__(self, module: ScoreModule, compiled: Any, quantize: str | None) -> None:
        super().__init__(module)
        self.compiled = compiled
        self.quantize = quantize
        self.input_names = tuple(port.get_any_name() for port in compiled.inputs)
        self._request = compiled.create_infer_request()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        result = self._request.infer(feeds)
        return np.array(
            result[self.compiled.output(0)], dtype=np.float32
        )  # a copy: the request reuses its buffer

    def run_known(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """``run`` on the inputs this model takes, dropping others (for checks fed every possible input)."""
        return self.run({name: feeds[name] for name in self.input_names})
