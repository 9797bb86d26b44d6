"""Runtimes that hold a loaded model's weights, behind one protocol (:class:`~autorerank.backends.base.Runtime`).

The runtime is chosen once, at load, from the (kind, backend) pair: a kind lists the backends it supports
(``Kind.backends``); this table says how each backend is built. Backends other than torch import their
packages lazily, through :func:`autorerank.optional.require`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InvalidOptionError
from ..kinds.base import Kind
from .base import Runtime, RuntimeInfo, check_cpu_devices

__all__ = ["Runtime", "RuntimeInfo", "build_runtime", "check_backend"]


def check_backend(
    kind: Kind, backend: str, quantize: str | None, onnx_dir: str | None, devices: list[str]
) -> None:
    """Refuse a (kind, backend, quantize, device) combination before anything slow is loaded."""
    if backend not in kind.backends:
        raise InvalidOptionError(
            f"backend={backend!r} is not available for {kind.name} rerankers; "
            f"choose one of {', '.join(map(repr, kind.backends))}."
        )
    if quantize is not None and backend == "torch":
        raise InvalidOptionError(
            f"quantize={quantize!r} needs backend='openvino' (most accurate) or backend='onnx'."
        )
    if onnx_dir is not None and backend != "onnx":
        raise InvalidOptionError(
            "onnx_dir is where backend='onnx' keeps its exports; it needs backend='onnx'."
        )
    if backend != "torch":
        check_cpu_devices(devices, backend)


def build_runtime(
    kind: Kind,
    model: torch.nn.Module,
    prepared: Any,
    *,
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    quantize: str | None = None,
    onnx_dir: str | None = None,
    model_name_or_path: str = "",
) -> Runtime:
    """The runtime that will score with ``model`` (already loaded in ``dtype``, PEFT merged)."""
    if backend == "torch":
        from .pytorch import TorchRuntime

        return TorchRuntime(kind, kind.torch_module(model, prepared), device, dtype)
    module = kind.export_module(model, prepared)
    if backend == "onnx":
        from .onnx import load_onnx_runtime

        return load_onnx_runtime(module, model_name_or_path, quantize=quantize, onnx_dir=onnx_dir)
    if backend == "openvino":
        from .openvino import load_openvino_runtime

        return load_openvino_runtime(module, quantize=quantize)
    raise InvalidOptionError(f"Unknown backend {backend!r}.")
