"""Decoder building blocks shared by the native layer-wise rerankers (MiniCPM and cost-wise Gemma2).

Both checkpoints are Llama-family decoders that transformers cannot load without remote code, so autorerank builds
them from these blocks. Parameter names (``weight``, ``q_proj`` .. ``o_proj``, ``gate_proj`` .. ``down_proj``,
``linear_head``) are the checkpoints' own, so ``from_pretrained`` maps every tensor by name. Where the two models'
numerics differ (RMSNorm's weight convention, the precision of the rotary angles), the difference is a parameter
rather than a second copy of the block, and each default is the one that reproduces a published model's scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .linear import Activation, activated_linear, gated_linear, linear

__all__ = [
    "GatedMLP",
    "GroupedQueryAttention",
    "RMSNorm",
    "ScoreHead",
    "apply_rotary",
    "repeat_kv",
    "rotary_table",
    "rotate_half",
]


class RMSNorm(nn.Module):
    """RMSNorm normalised in float32 whatever the weights' dtype, as both models were trained.

    ``zero_centred=False`` (MiniCPM, Llama): cast back to the input dtype, then scale by ``weight`` (stored around 1).
    ``zero_centred=True`` (Gemma): scale by ``1 + weight`` in float32, then cast (the weight is stored around 0).
    The class name keeps "RMSNorm" so transformers' default ``_init_weights`` recognises it as a norm.
    """

    def __init__(self, width: int, eps: float, *, zero_centred: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.zero_centred = zero_centred
        self.weight = nn.Parameter(torch.zeros(width) if zero_centred else torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        if self.zero_centred:
            return (normed * (1.0 + self.weight.float())).type_as(x)
        return normed.to(x.dtype) * self.weight


def rotate_half(x: Tensor) -> Tensor:
    """(..., D) -> (..., D): ``[a, b] -> [-b, a]`` on the two halves of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (B, heads, T, D) by cos/sin tables broadcastable to it ((T, D) or (B, 1, T, D)).

    The maths runs in the tables' dtype and the result comes back in ``x``'s: float32 tables keep a bf16 model's
    rotation in float32 (MiniCPM), tables cast to the model's dtype reproduce an all-bf16 rotation (Gemma2).
    """
    xr = x.to(cos.dtype)
    return (xr * cos + rotate_half(xr) * sin).to(x.dtype)


def rotary_table(
    length: int,
    dim: int,
    theta: float,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    position_scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """cos and sin (T, D) of the rotary angles for positions ``0 .. length - 1``, computed in ``dtype``.

    ``position_scale`` divides the positions (linear RoPE scaling). float64 angles (the default, computed on the
    CPU) are exact to float32 precision at any position; a float32 angle at position p is off by up to ~p * 6e-8
    rad. Callers cast the tables to the dtype the rotation should run in (see :func:`apply_rotary`).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=dtype, device=device) / dim))  # (D/2,)
    positions = torch.arange(length, dtype=dtype, device=device)  # (T,)
    if position_scale is not None:
        positions = positions / position_scale
    freqs = torch.outer(positions, inv_freq)  # (T, D/2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (T, D)
    return angles.cos(), angles.sin()


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """(B, kv, T, D) -> (B, kv * groups, T, D): each key/value head serves ``groups`` query heads.

    Written out rather than using SDPA's ``enable_gqa``, which needs torch 2.5.
    """
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


class GatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))``, bias-free: SwiGLU with SiLU (MiniCPM), GeGLU with tanh-GELU (Gemma2).

    On CPUs the activation rides on the gate GEMM and the product on the up GEMM (``autorerank.models.linear``).
    """

    def __init__(self, width: int, intermediate: int, activation: Activation) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, intermediate, bias=False)
        self.up_proj = nn.Linear(width, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, width, bias=False)
        self.activation = activation  # parameter-free: adds nothing to the state dict

    def forward(self, x: Tensor) -> Tensor:
        gate = activated_linear(x, self.gate_proj.weight, None, self.activation)  # (..., I)
        return linear(gated_linear(x, self.up_proj.weight, gate), self.down_proj.weight)  # (..., H)


class GroupedQueryAttention(nn.Module):
    """Rotary grouped-query attention through PyTorch SDPA, without logit soft-capping.

    ``scale`` is the softmax scale (None: ``1 / sqrt(head_dim)``). With ``last_only`` only the last position
    queries, which is all a score read at the last token needs from the deepest layer.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        kv_heads: int,
        head_dim: int,
        *,
        bias: bool = False,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.scale = heads, kv_heads, head_dim, scale
        self.q_proj = nn.Linear(width, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(width, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(width, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * head_dim, width, bias=bias)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, *, last_only: bool = False
    ) -> Tensor:
        """(B, T, H) -> (B, T, H), or (B, 1, H) with ``last_only``.

        ``cos``/``sin``: (T, D) or (B, 1, T, D); ``mask``: (B, 1, T, T), boolean (True = attend) or additive.
        """
        batch = x.shape[0]
        q_in, q_cos, q_sin, q_mask = x, cos, sin, mask
        if last_only:
            q_in, q_cos, q_sin, q_mask = x[:, -1:], cos[..., -1:, :], sin[..., -1:, :], mask[..., -1:, :]
        q_len = q_in.shape[1]
        q = _split_heads(_project(self.q_proj, q_in), self.heads)  # (B, h, Tq, D)
        k = _split_heads(_project(self.k_proj, x), self.kv_heads)  # (B, kv, T, D)
        v = _split_heads(_project(self.v_proj, x), self.kv_heads)  # (B, kv, T, D)
        q, k = apply_rotary(q, q_cos, q_sin), apply_rotary(k, cos, sin)
        groups = self.heads // self.kv_heads
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)  # (B, h, T, D)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=q_mask, scale=self.scale)  # (B, h, Tq, D)
        return _project(self.o_proj, out.transpose(1, 2).reshape(batch, q_len, self.heads * self.head_dim))


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, heads * D) -> (B, heads, T, D)."""
    batch, length, _ = x.shape
    return x.view(batch, length, heads, -1).transpose(1, 2)


def _project(projection: nn.Linear, x: Tensor) -> Tensor:
    """``projection(x)`` through :func:`autorerank.models.linear.linear` (oneDNN on CPUs)."""
    return linear(x, projection.weight, projection.bias)


class ScoreHead(nn.Module):
    """A bias-free hidden -> 1 relevance projection; the ``linear_head`` name matches both checkpoints."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear_head = nn.Linear(width, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_head(x)  # (..., 1)
