"""The ONNX Runtime backend for cross-encoders: ``from_finetuned(path, backend="onnx", quantize=None | "int8")``.

The model is exported once per weights (see :mod:`autorerank.backends.onnx_export` for the cache) and
then run by an ``onnxruntime.InferenceSession`` on the CPU, wrapped in a ``torch.nn.Module`` that the
encoder kind calls exactly like the transformers model it replaces: keyword tensors in, an object
with ``.logits`` out. Needs ``pip install 'autorerank[onnx]'``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidOptionError
from ..optional import require
from .onnx_export import cache_root, ensure_variant, export_folder
from .runtime import RuntimeClassifier, check_cpu_devices, check_float32

__all__ = ["OnnxSequenceClassifier", "load_onnx_model"]

logger = logging.getLogger(__name__)

_PURPOSE = "backend='onnx'"


def load_onnx_model(
    torch_model: torch.nn.Module,
    model_name_or_path: str,
    *,
    quantize: str | None,
    onnx_dir: str | os.PathLike[str] | None,
    devices: Sequence[str] | None = None,
) -> OnnxSequenceClassifier:
    """The ONNX Runtime twin of a loaded (and PEFT-merged) float32 cross-encoder.

    ``quantize="int8"`` adds dynamic int8 quantization of the linear layers. Exports are kept under
    ``onnx_dir`` (default: ``$AUTORERANK_CACHE/onnx`` or ``~/.cache/autorerank/onnx``), never in the
    checkpoint folder unless ``onnx_dir`` points there. ``devices``, when given, is checked first so
    that an impossible request fails before the export.
    """
    ort = require("onnxruntime", "onnx", _PURPOSE)
    require("onnx", "onnx", _PURPOSE)
    if quantize not in (None, "int8"):
        raise InvalidOptionError(f"quantize must be None or 'int8', got {quantize!r}.")
    check_cpu_devices(devices, "onnx")
    check_float32(torch_model, "onnx")
    folder = export_folder(torch_model, model_name_or_path, cache_root(onnx_dir))
    path = ensure_variant(torch_model.eval(), folder, quantize)
    shapes = [tuple(parameter.shape) for parameter in torch_model.parameters()]
    return OnnxSequenceClassifier(_session(ort, path), torch_model.config, shapes, path)


def _session(ort: Any, path: Path) -> Any:
    """One CPU session: all graph optimisations, as many threads as torch would use."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxSequenceClassifier(RuntimeClassifier):
    """A sequence-classification model whose forward pass runs in an ONNX Runtime session (CPU)."""

    backend = "onnx"

    def __init__(
        self, session: Any, config: Any, parameter_shapes: list[tuple[int, ...]], onnx_path: Path
    ) -> None:
        super().__init__(config, parameter_shapes, [item.name for item in session.get_inputs()])
        self.session = session
        self.onnx_path = onnx_path

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (logits,) = self.session.run(["logits"], feeds)  # (B, num_labels)
        return logits

    def extra_repr(self) -> str:
        return f"onnx_path={str(self.onnx_path)!r}"
