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
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN

from ..compat import dtype_kwargs
from ..errors import ModelLoadError
from ..loading import load_pretrained
from .decoder import GatedMLP, GroupedQueryAttention, RMSNorm, ScoreHead, rotary_table
from .linear import ACTIVATIONS, Activation

__all__ = [
    "MiniCPMLayerwiseConfig",
    "MiniCPMLayerwiseModel",
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
        kwargs.update(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
        super().__init__(**kwargs)


def head_dim(config: MiniCPMLayerwiseConfig) -> int:
    """Per-head width; MiniCPM configs do not store it (a property would clash with configs that do)."""
    return config.hidden_size // config.num_attention_heads


def valid_cutoff_layers(config: MiniCPMLayerwiseConfig) -> tuple[int, ...]:
    """Layers that have a score head: ``start_layer .. num_hidden_layers`` inclusive."""
    return tuple(range(config.start_layer, config.num_hidden_layers + 1))


class MiniCPMDecoderLayer(nn.Module):
    def __init__(self, config: MiniCPMLayerwiseConfig) -> None:
        super().__init__()
        width, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = GroupedQueryAttention(
            width,
            config.num_attention_heads,
            config.num_key_value_heads,
            head_dim(config),
            bias=config.attention_bias,
        )
        self.mlp = GatedMLP(width, config.intermediate_size, _activation(config.hidden_act))
        self.input_layernorm = RMSNorm(width, eps)
        self.post_attention_layernorm = RMSNorm(width, eps)
        # MiniCPM's depth-scaled residuals ("muP"): every branch is damped by the same constant.
        self.residual_scale = config.scale_depth / math.sqrt(config.num_hidden_layers)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """(B, T, H) -> (B, T, H), or (B, 1, H) for the last position only when ``last_only``."""
        residual = x[:, -1:] if last_only else x
        attn = self.self_attn(self.input_layernorm(x), cos, sin, mask, last_only=last_only)
        h = residual + attn * self.residual_scale
        return h + self.mlp(self.post_attention_layernorm(h)) * self.residual_scale


def _activation(hidden_act: str) -> Activation:
    """The config's activation, fused into the gate GEMM where oneDNN computes it (SiLU, the published one)."""
    return ACTIVATIONS.get(hidden_act) or Activation(ACT2FN[hidden_act])


class MiniCPMBackbone(nn.Module):
    """Embeddings, decoder layers and the final norm; lives under the ``model.`` prefix of the checkpoint."""

    def __init__(self, config: MiniCPMLayerwiseConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(MiniCPMDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class MiniCPMLayerwiseModel(PreTrainedModel):
    """MiniCPM decoder with one relevance head per cutoff layer; score with :meth:`layer_scores`."""

    config_class = MiniCPMLayerwiseConfig
    config: MiniCPMLayerwiseConfig
    base_model_prefix = "model"
    # whole layers per device (device_map); transformers types it as an instance attribute but reads the class's
    _no_split_modules: ClassVar[list[str]] = ["MiniCPMDecoderLayer"]  # type: ignore[misc]
    _supports_sdpa = True

    def __init__(self, config: MiniCPMLayerwiseConfig) -> None:
        super().__init__(config)
        _check_supported(config)
        self.model = MiniCPMBackbone(config)
        if config.head_multi:
            self.lm_head: nn.Module = nn.ModuleList(
                ScoreHead(config.hidden_size) for _ in valid_cutoff_layers(config)
            )
        else:
            self.lm_head = ScoreHead(config.hidden_size)
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
        (and repeats) of layers is honoured. Layers after the deepest requested one are not run. The layers are
        trusted to be entries of ``valid_cutoff_layers`` (the kind checks options before scoring).
        """
        # The kind pads on the left; the score is read at the last position, which must therefore be a token.
        assert bool(attention_mask[:, -1].all()), "layer_scores needs left-padded inputs"
        cos, sin = self._rope(attention_mask)
        mask = _padding_causal_mask(attention_mask)
        deepest, wanted = max(cutoff_layers), set(cutoff_layers)
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
            self.head_for(layer)(self.model.norm(last[layer])).squeeze(-1) for layer in cutoff_layers
        ]  # L x (B,)
        return torch.stack(scores).float()  # (L, B)

    def _rope(self, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """float32 cos/sin (B, 1, T, D), positions counted from each row's first real token.

        Counting from the first real token (not from the pad) makes a pair's score independent of how much padding
        its batch needed. The angles are computed in float64 on the CPU (a small (T, D) table, and fine on devices
        without float64): the reference's scores, which use float32 angles counted from the first pad, move by
        ~1e-4 with padding on the tiny fixture. Not kept as a buffer: transformers builds models on the meta
        device, which would leave a non-persistent buffer uninitialised.
        """
        spec = self.config.rope_scaling_spec or {}
        linear = spec.get("rope_type", spec.get("type")) == "linear"
        cos_table, sin_table = rotary_table(
            attention_mask.shape[-1],
            head_dim(self.config),
            self.config.rope_theta,
            dtype=torch.float64,
            position_scale=float(spec["factor"]) if linear else None,
        )  # (T, D) each
        cos_table = cos_table.float().to(attention_mask.device)
        sin_table = sin_table.float().to(attention_mask.device)
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

    The caller has checked that ``config.json`` describes a MiniCPM layerwise reranker. Weights missing from the
    checkpoint raise ModelLoadError (a re-initialised head would give plausible-looking but meaningless scores).
    """
    model = load_pretrained(
        MiniCPMLayerwiseModel,
        name_or_path,
        kind=MiniCPMLayerwiseModel.__name__,
        cache_dir=cache_dir,
        **dtype_kwargs(dtype),
    )
    return cast(MiniCPMLayerwiseModel, model)  # load_pretrained returns nn.Module for any class
