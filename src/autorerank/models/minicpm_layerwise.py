"""Native PyTorch MiniCPM layerwise reranker (``bge-reranker-v2-minicpm-layerwise``).

The published checkpoint ships only an ``auto_map`` to remote code. This module re-implements the architecture so
the checkpoint loads with plain ``transformers`` and no ``trust_remote_code``:

- a Llama-style decoder (RMSNorm, rotary attention, SwiGLU MLP) with MiniCPM's two scalings: token embeddings are
  multiplied by ``scale_emb`` and every residual branch by ``scale_depth / sqrt(num_hidden_layers)``;
- one score head per cutoff layer (``lm_head[i]`` scores layer ``start_layer + i``) that maps the final-normed
  hidden state of the last token to a single logit (``head_type == "simple"``).

Parameter names and shapes match the published checkpoint exactly, so ``from_pretrained`` loads sharded safetensors,
hub names, ``dtype`` and ``cache_dir`` as for any other transformers model.

Scoring differs from the reference implementation on purpose: each requested layer is always scored with its own
head (the reference pairs heads with layers by position, which mixes them up for unsorted requests), layers after the
deepest requested one never run, and heads are applied only at the last position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN

from ..errors import InvalidInputError, InvalidOptionError, ModelLoadError
from ..loading import dtype_kwargs, load_pretrained, read_json

__all__ = [
    "MiniCPMLayerwiseConfig",
    "MiniCPMLayerwiseModel",
    "check_cutoff_layers",
    "load_layerwise_model",
    "valid_cutoff_layers",
]

_SUPPORTED_HEAD_TYPES = ("simple",)
_SUPPORTED_ROPE_TYPES = ("default", "linear")


class MiniCPMLayerwiseConfig(PretrainedConfig):
    """Configuration read from the checkpoint's ``config.json`` (``model_type == "minicpm"``).

    Written with an explicit ``__init__`` (rather than transformers 5 dataclass fields) so the same class works on
    transformers 4.x and 5.x. ``rope_theta`` and ``rope_scaling`` are kept by this class instead of being handed to
    the base class, whose rotary-parameter handling differs between major versions.
    """

    model_type = "minicpm"

    def __init__(
        self,
        vocab_size: int = 122753,
        hidden_size: int = 2304,
        intermediate_size: int = 5760,
        num_hidden_layers: int = 40,
        num_attention_heads: int = 36,
        num_key_value_heads: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-5,
        attention_bias: bool = False,
        rope_theta: float = 10000.0,
        rope_scaling: dict[str, Any] | None = None,
        scale_emb: float = 1.0,
        scale_depth: float = 1.0,
        dim_model_base: float = 1.0,
        start_layer: int = 8,
        head_type: str = "simple",
        head_multi: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.attention_bias = attention_bias
        self.rope_theta = rope_theta
        # Stored under another name: ``rope_scaling`` is a property with version-specific behaviour in
        # transformers 5. A config saved by this class carries ``rope_scaling_spec`` and round-trips.
        rope_scaling = rope_scaling or kwargs.pop("rope_scaling_spec", None)
        kwargs.pop("rope_scaling_spec", None)
        self.rope_scaling_spec = dict(rope_scaling) if rope_scaling else None
        self.scale_emb = scale_emb
        self.scale_depth = scale_depth
        self.dim_model_base = dim_model_base
        self.start_layer = start_layer
        self.head_type = head_type
        self.head_multi = head_multi
        # The checkpoint has no tied weights; the reference config defaulted to True but never tied anything real.
        kwargs["tie_word_embeddings"] = False
        # Training-time knobs of the reference that do not change inference maths.
        for unused in ("pretraining_tp", "use_cache", "attention_dropout"):
            kwargs.pop(unused, None)
        super().__init__(
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs
        )


def head_dim(config: MiniCPMLayerwiseConfig) -> int:
    """Per-head width; MiniCPM configs do not store it (a property would clash with configs that do)."""
    return config.hidden_size // config.num_attention_heads


def valid_cutoff_layers(config: MiniCPMLayerwiseConfig) -> tuple[int, ...]:
    """Layers that have a score head: ``start_layer .. num_hidden_layers`` inclusive."""
    return tuple(range(config.start_layer, config.num_hidden_layers + 1))


def check_cutoff_layers(cutoff_layers: Sequence[int], valid: Sequence[int]) -> list[int]:
    """Return ``cutoff_layers`` as a list, or raise InvalidOptionError (a ValueError) naming the valid layers.

    Silently dropping invalid layers (as the reference does) would change the output's shape behind the caller's
    back, so any invalid entry rejects the whole request.
    """
    layers = list(cutoff_layers)
    bad = [
        layer
        for layer in layers
        if isinstance(layer, bool) or not isinstance(layer, int) or layer not in valid
    ]
    if not layers or bad:
        problem = "no cutoff layer was given" if not layers else f"invalid cutoff layer(s) {bad}"
        raise InvalidOptionError(
            f"{problem}; valid cutoff layers for this model are {list(valid)} "
            f"(integers from {min(valid)} to {max(valid)})."
        )
    return layers


class MiniCPMRMSNorm(nn.Module):
    """RMSNorm computed in float32 whatever the weights' dtype, as MiniCPM was trained."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (B, heads, T, D) by angles given as (B, 1, T, D) float32 cos/sin; maths in float32."""
    x32 = x.float()
    return (x32 * cos + _rotate_half(x32) * sin).to(x.dtype)


class MiniCPMAttention(nn.Module):
    def __init__(self, config: MiniCPMLayerwiseConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = head_dim(config)
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, last_only: bool) -> Tensor:
        """Attend over all of ``x`` (B, T, H); with ``last_only`` only the last position queries (B, 1, H)."""
        bsz, seq, _ = x.shape
        q_in, q_cos, q_sin, q_mask = x, cos, sin, mask
        if last_only:
            q_in, q_cos, q_sin, q_mask = x[:, -1:], cos[:, :, -1:], sin[:, :, -1:], mask[:, :, -1:]
        q_len = q_in.shape[1]
        q = self.q_proj(q_in).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, Tq, D)
        k = self.k_proj(x).view(bsz, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, kv, T, D)
        v = self.v_proj(x).view(bsz, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, kv, T, D)
        q = _apply_rope(q, q_cos, q_sin)
        k = _apply_rope(k, cos, sin)
        if self.num_kv_heads != self.num_heads:  # grouped-query attention; SDPA's enable_gqa needs torch 2.5
            k = k.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)  # (B, h, T, D)
            v = v.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)  # (B, h, T, D)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=q_mask)  # (B, h, Tq, D)
        return self.o_proj(out.transpose(1, 2).reshape(bsz, q_len, self.num_heads * self.head_dim))


class MiniCPMMLP(nn.Module):
    def __init__(self, config: MiniCPMLayerwiseConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class MiniCPMDecoderLayer(nn.Module):
    def __init__(self, config: MiniCPMLayerwiseConfig) -> None:
        super().__init__()
        self.self_attn = MiniCPMAttention(config)
        self.mlp = MiniCPMMLP(config)
        self.input_layernorm = MiniCPMRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = MiniCPMRMSNorm(config.hidden_size, config.rms_norm_eps)
        # MiniCPM's depth-scaled residuals ("muP"): every branch is damped by the same constant.
        self.residual_scale = config.scale_depth / math.sqrt(config.num_hidden_layers)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """(B, T, H) -> (B, T, H), or (B, 1, H) for the last position only when ``last_only``."""
        residual = x[:, -1:] if last_only else x
        attn = self.self_attn(self.input_layernorm(x), cos, sin, mask, last_only)
        h = residual + attn * self.residual_scale
        return h + self.mlp(self.post_attention_layernorm(h)) * self.residual_scale


class MiniCPMBackbone(nn.Module):
    """Embeddings, decoder layers and the final norm; lives under the ``model.`` prefix of the checkpoint."""

    def __init__(self, config: MiniCPMLayerwiseConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(MiniCPMDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = MiniCPMRMSNorm(config.hidden_size, config.rms_norm_eps)


class LayerScoreHead(nn.Module):
    """A bias-free hidden -> 1 projection; the ``linear_head`` name matches the checkpoint."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear_head = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_head(x)


class MiniCPMLayerwiseModel(PreTrainedModel):
    """MiniCPM decoder with one relevance head per cutoff layer; score with :meth:`layer_scores`."""

    config_class = MiniCPMLayerwiseConfig
    base_model_prefix = "model"
    _no_split_modules: ClassVar[list[str]] = ["MiniCPMDecoderLayer"]  # whole layers per device (device_map)
    _supports_sdpa = True

    def __init__(self, config: MiniCPMLayerwiseConfig) -> None:
        super().__init__(config)
        _check_supported(config)
        self.model = MiniCPMBackbone(config)
        if config.head_multi:
            self.lm_head: nn.Module = nn.ModuleList(
                LayerScoreHead(config.hidden_size) for _ in valid_cutoff_layers(config)
            )
        else:
            self.lm_head = LayerScoreHead(config.hidden_size)
        self.post_init()

    @property
    def valid_cutoff_layers(self) -> tuple[int, ...]:
        return valid_cutoff_layers(self.config)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> None:
        """None: the score heads are not a vocabulary projection, so nothing may tie or resize them."""

    def head_for(self, layer: int) -> nn.Module:
        """The score head of ``layer`` (an entry of ``valid_cutoff_layers``)."""
        if isinstance(self.lm_head, nn.ModuleList):
            return self.lm_head[layer - self.config.start_layer]
        return self.lm_head

    @torch.no_grad()
    def layer_scores(self, input_ids: Tensor, attention_mask: Tensor, cutoff_layers: Sequence[int]) -> Tensor:
        """Score a LEFT-padded batch at each requested layer: (B, T) ids and mask -> (len(cutoff_layers), B) float32.

        Row ``i`` of the result is layer ``cutoff_layers[i]``'s score, from that layer's own head, so any order
        (and repeats) of layers is honoured. Layers after the deepest requested one are not run.
        """
        layers = check_cutoff_layers(cutoff_layers, self.valid_cutoff_layers)
        if not bool(attention_mask[:, -1].all()):
            raise InvalidInputError(
                "layer_scores needs left-padded inputs: each row's last position must be a token."
            )
        cos, sin = self._rope(attention_mask)
        mask = _padding_causal_mask(attention_mask)
        deepest, wanted = max(layers), set(layers)
        hidden = self.model.embed_tokens(input_ids) * self.config.scale_emb  # (B, T, H)
        last: dict[int, Tensor] = {}
        for index in range(deepest + 1):
            if index in wanted:
                last[index] = hidden[:, -1]  # (B, H)
            if index == deepest:
                break
            # The deepest layer feeds only the score of its last position, so it runs for that position alone.
            hidden = self.model.layers[index](hidden, cos, sin, mask, last_only=index + 1 == deepest)
        scores = [
            self.head_for(layer)(self.model.norm(last[layer])).squeeze(-1) for layer in layers
        ]  # L x (B,)
        return torch.stack(scores).float()  # (L, B)

    def _rope(self, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """float32 cos/sin (B, 1, T, D), positions counted from each row's first real token.

        Counting from the first real token (not from the pad) makes a pair's score independent of how much padding
        its batch needed. The angles are computed in float64 on the CPU (a small (T, D) table, and fine on devices
        without float64): a float32 angle at position p is off by up to ~p * 6e-8 rad, and the reference's scores,
        which use float32 angles counted from the first pad, move by ~1e-4 with padding on the tiny fixture. Not
        kept as a buffer: transformers builds models on the meta device, which would leave a non-persistent buffer
        uninitialised.
        """
        seq, dim = attention_mask.shape[-1], head_dim(self.config)
        inv_freq = 1.0 / (
            self.config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        )  # (D/2,)
        table_positions = torch.arange(seq, dtype=torch.float64)  # (T,)
        spec = self.config.rope_scaling_spec
        if spec and spec.get("rope_type", spec.get("type")) == "linear":
            table_positions = table_positions / float(spec["factor"])
        freqs = torch.outer(table_positions, inv_freq)  # (T, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (T, D)
        cos_table = angles.cos().float().to(attention_mask.device)
        sin_table = angles.sin().float().to(attention_mask.device)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        return cos_table[positions][:, None], sin_table[positions][:, None]  # (B, 1, T, D) each


def _padding_causal_mask(attention_mask: Tensor) -> Tensor:
    """Boolean (B, 1, T, T) mask: causal, real keys only; pad queries see themselves so no row is empty (no NaN)."""
    seq = attention_mask.shape[-1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=attention_mask.device).tril()  # (T, T)
    keys = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    diagonal = torch.eye(seq, dtype=torch.bool, device=attention_mask.device)  # (T, T)
    return (causal & keys) | diagonal


def _check_supported(config: MiniCPMLayerwiseConfig) -> None:
    """Reject configurations this native port does not implement, before any weight is read."""
    if config.head_type not in _SUPPORTED_HEAD_TYPES:
        raise ModelLoadError(
            f"MiniCPM layerwise head_type {config.head_type!r} is not supported (only {_SUPPORTED_HEAD_TYPES}); "
            "the published rerankers use 'simple'."
        )
    spec = config.rope_scaling_spec
    rope_type = spec.get("rope_type", spec.get("type", "default")) if spec else "default"
    if rope_type not in _SUPPORTED_ROPE_TYPES:
        raise ModelLoadError(
            f"rope scaling {spec} is not supported (supported types: {_SUPPORTED_ROPE_TYPES})."
        )
    if config.hidden_size % config.num_attention_heads:
        raise ModelLoadError(
            f"hidden_size {config.hidden_size} is not divisible by num_attention_heads {config.num_attention_heads}."
        )


def load_layerwise_model(
    name_or_path: str, *, dtype: torch.dtype, cache_dir: str | None = None
) -> MiniCPMLayerwiseModel:
    """Load a MiniCPM layerwise reranker checkpoint (local folder or hub name) in eval mode.

    The checkpoint's ``config.json`` is checked first so that another architecture gets a clear ModelLoadError
    instead of a half-built model; weights missing from the checkpoint raise ModelLoadError too (a re-initialised
    head would give plausible-looking but meaningless scores).
    """
    raw = read_json(name_or_path, "config.json", cache_dir)
    if raw.get("model_type") != MiniCPMLayerwiseConfig.model_type or "start_layer" not in raw:
        raise ModelLoadError(
            f"{name_or_path!r} is not a MiniCPM layerwise reranker: its config.json has model_type "
            f"{raw.get('model_type')!r} and {'a' if 'start_layer' in raw else 'no'} start_layer, where "
            "model_type 'minicpm' with a start_layer is expected. Pass the right model_class= or drop it."
        )
    return load_pretrained(
        MiniCPMLayerwiseModel,
        name_or_path,
        kind="decoder-only-layerwise",
        cache_dir=cache_dir,
        **dtype_kwargs(dtype),
    )
