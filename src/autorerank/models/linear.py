"""Linear layers through oneDNN's fused CPU linear where it serves, ``F.linear`` everywhere else.

On this project's CPUs oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``, the op torch.compile emits) runs
reranker GEMM shapes 15-30% faster than the MKL GEMM behind ``F.linear`` (measured: (1600 x 1024) @ (1024 x 2560)
208 GFLOP/s against 175, in float32), and it applies the bias, an activation, a residual addition or a gating
product to the result in the same pass. The lean BERT-family classifier and the native decoder blocks share these
helpers; every function returns what its ``F.linear`` expression returns, up to float summation order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..compat import onednn_linear

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "activated_linear",
    "gated_linear",
    "linear",
    "padded_rows",
    "rows_of",
]

_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class Activation:
    """An activation as torch computes it, and the oneDNN post-op (name, algorithm) computing the same function."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    onednn: tuple[str, str] | None = None


# By the names config.json files use (transformers' ACT2FN keys) for the functions these models apply.
ACTIVATIONS: dict[str, Activation] = {
    "gelu": Activation(F.gelu, ("gelu", "none")),
    "relu": Activation(F.relu, ("relu", "")),
    "silu": Activation(F.silu, ("swish", "")),
    "gelu_pytorch_tanh": Activation(functools.partial(F.gelu, approximate="tanh"), ("gelu", "tanh")),
}


def _fused_for(tensor: torch.Tensor) -> Any | None:
    """oneDNN's fused linear where it serves ``tensor`` (CPU, float32 or bfloat16), else None.

    ``onednn_linear`` is cached, so this costs a dictionary lookup per GEMM; the op itself is not stored on modules
    because it cannot be pickled.
    """
    if tensor.device.type != "cpu" or tensor.dtype not in _ONEDNN_DTYPES or torch.jit.is_tracing():
        return None  # a tracer (OpenVINO's converter) records F.linear, which every runtime knows
    return onednn_linear()


def padded_rows(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` (N, K) followed by zero rows up to a size from a short ladder, where oneDNN computes its GEMMs.

    oneDNN builds (JIT-compiles) a kernel for every new GEMM shape: on CPUs with AMX, building the bfloat16 kernel
    costs more than running it (a (2484 x 384) @ (384 x 1536) GEMM: 1,900 GFLOP/s when its shape repeats, 430 when
    every call has a new row count, as a reranker's length-sorted batches do). Rounding the row count up to eight
    sizes per octave (under an eighth more rows, or 8; 16 at least) makes shapes repeat across batches, so the
    kernels come from oneDNN's cache. Rows never mix in a linear layer or a norm, so the zero rows change no real row;
    callers slice them off where rows meet (attention, the head). Elsewhere ``rows`` is returned as it is.
    """
    if _fused_for(rows) is None:
        return rows
    count = rows.shape[0]
    step = max(8, 1 << max(0, count.bit_length() - 4))
    target = max(16, -(-count // step) * step)
    if target == count:
        return rows.contiguous()
    padded = rows.new_empty((target, rows.shape[1]))
    padded[:count] = rows
    padded[count:] = 0
    return padded


def rows_of(values: torch.Tensor, count: int) -> torch.Tensor:
    """``values`` (B, T, *F) as ``count`` rows of F: its B x T rows, then the zero rows :func:`padded_rows` added.

    One copy, as the ``reshape`` of a transposed attention output costs anyway.
    """
    width = values.shape[2:].numel()
    if _fused_for(values) is None:  # padded_rows added no rows
        return values.reshape(-1, width)
    tokens = values.shape[0] * values.shape[1]
    rows = values.new_empty((count, width))
    rows[:tokens].view(values.shape).copy_(values)
    rows[tokens:] = 0
    return rows


def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ weight.T (+ bias) (+ residual)``, in one oneDNN call on CPUs."""
    fused = _fused_for(x)
    if fused is not None:
        if residual is not None:
            return fused.binary(x, residual.contiguous(), weight, bias, "add")
        return fused(x, weight, bias, "none", [], "")
    out = F.linear(x, weight, bias)
    return out if residual is None else out + residual


def activated_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: Activation
) -> torch.Tensor:
    """``activation(x @ weight.T (+ bias))``, the activation fused into the GEMM where oneDNN computes it."""
    fused = _fused_for(x) if activation.onednn is not None else None
    if fused is not None and activation.onednn is not None:
        name, algorithm = activation.onednn
        return fused(x, weight, bias, name, [], algorithm)
    return activation.fn(linear(x, weight, bias))


def gated_linear(x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``(x @ weight.T) * gate``: the up projection of a gated MLP times its activated gate, in one pass."""
    fused = _fused_for(x)
    if fused is not None:
        return fused.binary(x, gate.contiguous(), weight, None, "mul")
    return F.linear(x, weight) * gate
