"""The ONNX Runtime backend: ``from_finetuned(path, backend="onnx", quantize=None | "int8")``.

The kind's score module is exported once per weights (see :mod:`autorerank.backends.onnx_export` for the
cache) and run by an ``onnxruntime.InferenceSession`` on the CPU. Needs ``pip install 'autorerank[onnx]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..kinds.base import ScoreModule
from ..optional import require
from .base import ExportedRuntime, check_float32
from .onnx_export import cache_root, ensure_variant, export_folder

__all__ = ["OnnxRuntime", "load_onnx_runtime"]

_PURPOSE = "backend='onnx'"


def load_onnx_runtime(
    module: ScoreModule,
    model_name_or_path: str,
    *,
    quantize: str | None,
    onnx_dir: str | os.PathLike[str] | None,
) -> OnnxRuntime:
    """The ONNX Runtime twin of a loaded (and PEFT-merged) float32 score module.

    ``quantize="int8"`` adds dynamic int8 quantization of the linear layers. Exports are kept under
    ``onnx_dir`` (default: ``$AUTORERANK_CACHE/onnx`` or ``~/.cache/autorerank/onnx``), never in the
    checkpoint folder unless ``onnx_dir`` points there.
    """
    ort = require("onnxruntime", "onnx", _PURPOSE)
    require("onnx", "onnx", _PURPOSE)
    check_float32(module, "onnx")
    folder = export_folder(module, model_name_or_path, cache_root(onnx_dir))
    path = ensure_variant(module.eval(), folder, quantize)
    return OnnxRuntime(module, _session(ort, path), path)


def _session(ort: Any, path: Path) -> Any:
    """One CPU session: all graph optimisations, as many threads as torch would use."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRuntime(ExportedRuntime):
    """Scores in an ONNX Runtime session (CPU)."""

    backend = "onnx"

    def __init__(self, module: ScoreModule, session: Any, onnx_path: Path) -> None:
        super().__init__(module)
        self.session = session
        self.onnx_path = onnx_path
        self.input_names = tuple(item.name for item in session.get_inputs())

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (scores,) = self.session.run(["scores"], feeds)  # (B,)
        return np.asarray(scores)
