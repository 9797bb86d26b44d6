"""The ONNX Runtime backend for cross-encoders: ``from_finetuned(path, backend="onnx", quantize=None | "int8")``.

The model is exported once per weights (see :mod:`autorerank.backends.onnx_export` for the cache) and
then run by an ``onnxruntime.InferenceSession`` on the CPU, wrapped in a ``torch.nn.Module`` that the
encoder kind calls exactly like the transformers model it replaces: keyword tensors in, an object
with ``.logits`` out. Needs ``pip install 'autorerank[onnx]'``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidOptionError, ModelLoadError
from ..optional import require
from .onnx_export import cache_root, ensure_variant, export_folder

__all__ = ["OnnxOutput", "OnnxSequenceClassifier", "load_onnx_model"]

logger = logging.getLogger(__name__)

_PURPOSE = "backend='onnx'"
_FEED_NAMES = ("input_ids", "attention_mask", "token_type_ids")


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
    for device in devices or ():
        _check_device(torch.device(device))
    _check_dtypes(torch_model)
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


@dataclass(frozen=True)
class OnnxOutput:
    """What the encoder kind reads from a model call."""

    logits: torch.Tensor  # (B, num_labels)


class OnnxSequenceClassifier(torch.nn.Module):
    """A sequence-classification model whose forward pass runs in ONNX Runtime (CPU, float32 inputs and outputs).

    It keeps the torch model's ``config`` and reports its parameter count (the weights themselves
    live in the session), so ``reranker.info`` reads the same as with ``backend="torch"``.
    """

    def __init__(
        self, session: Any, config: Any, parameter_shapes: list[tuple[int, ...]], onnx_path: Path
    ) -> None:
        super().__init__()
        self.session = session
        self.config = config
        self.onnx_path = onnx_path
        self._parameter_shapes = parameter_shapes
        self._input_names = [item.name for item in session.get_inputs()]
        unknown = set(self._input_names) - set(_FEED_NAMES)
        if unknown:
            raise ModelLoadError(
                f"The ONNX model at {onnx_path} expects unsupported inputs {sorted(unknown)}."
            )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> OnnxOutput:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feeds = {}
        for name in self._input_names:
            tensor = given[name] if given[name] is not None else torch.zeros_like(input_ids)
            feeds[name] = _as_int64_array(tensor)  # (B, T)
        (logits,) = self.session.run(["logits"], feeds)  # (B, num_labels)
        return OnnxOutput(torch.from_numpy(logits))

    # The weights live in the session: moving or casting is refused rather than silently ignored.
    def to(self, *args: Any, **kwargs: Any) -> OnnxSequenceClassifier:
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)  # the parser nn.Module.to uses
        if device is not None:
            _check_device(torch.device(device))
        if dtype is not None and dtype != torch.float32:
            raise InvalidOptionError(
                f"backend='onnx' computes in float32 (int8 weights with quantize='int8'), not {dtype}: "
                "drop use_fp16/use_bf16, or use backend='torch'."
            )
        return self

    def cuda(self, device: Any = None) -> OnnxSequenceClassifier:
        return self.to(
            "cuda" if device is None else torch.device("cuda", device) if isinstance(device, int) else device
        )

    def half(self) -> OnnxSequenceClassifier:
        return self.to(torch.float16)

    def bfloat16(self) -> OnnxSequenceClassifier:
        return self.to(torch.bfloat16)

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        """Shape-only (meta) stand-ins for the exported weights, so parameter counts match the torch model."""
        for shape in self._parameter_shapes:
            yield torch.nn.Parameter(torch.empty(shape, device="meta"), requires_grad=False)

    def extra_repr(self) -> str:
        return f"onnx_path={str(self.onnx_path)!r}"


def _as_int64_array(tensor: torch.Tensor) -> np.ndarray:
    if tensor.device.type != "cpu":
        raise InvalidOptionError("backend='onnx' takes CPU tensors.")
    return tensor.detach().to(torch.int64).contiguous().numpy()


def _check_device(device: torch.device) -> None:
    if device.type != "cpu":
        raise InvalidOptionError(
            f"backend='onnx' runs on the CPU only, not on {device}: pass devices='cpu', or use backend='torch' there."
        )


def _check_dtypes(model: torch.nn.Module) -> None:
    dtypes = {parameter.dtype for parameter in model.parameters()}
    if dtypes - {torch.float32}:
        found = ", ".join(sorted(str(dtype).removeprefix("torch.") for dtype in dtypes))
        raise InvalidOptionError(
            f"backend='onnx' exports float32 weights, but the model was loaded in {found}: "
            "drop use_fp16/use_bf16 (use quantize='int8' for a smaller, faster model), or use backend='torch'."
        )
