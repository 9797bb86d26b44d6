"""Native PyTorch code for BAAI's "cost-wise" Gemma2 reranker (bge-reranker-v2.5-gemma2-lightweight).

The published checkpoint ships with an ``auto_map`` to remote code that only runs on transformers 4.46, so this
module re-implements the architecture with parameter names that match the checkpoint exactly:

* Gemma2 decoder blocks (four RMSNorms per block, GeGLU MLP, grouped-query attention, RoPE, sliding window on even
  layers) topped by one scalar head per *cutoff layer* (``lm_head.{i}.linear_head``).
* **Early exit**: scoring stops after the deepest requested cutoff layer; later layers never run.
* **Token compression**: before chosen layers, the passage tokens are mean-pooled in groups of ``compress_ratio``,
  shrinking the sequence while the query and prompt tokens stay intact.

Two behaviours follow the published scores rather than the config (both are what FlagEmbedding 1.4.2 produced with
PyTorch's SDPA attention): the attention logits are **not** soft-capped (``attn_logit_softcapping`` is read but
unused), while the head logits are; and the heads are picked by position among the requested cutoff layers, so the
shallowest requested layer always uses ``lm_head[0]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..compat import dtype_kwargs, init_zeros_
from ..errors import ModelLoadError
from ..loading import load_pretrained
from .decoder import GatedMLP, GroupedQueryAttention, RMSNorm, ScoreHead, rotary_table
from .linear import ACTIVATIONS

__all__ = [
    "CostWiseGemmaConfig",
    "LightweightGemma2Reranker",
    "compress_passages",
    "load_lightweight_model",
    "valid_cutoff_layers",
]


# Every config.json field the model reads, with Gemma2-9B-sized defaults (a checkpoint's config.json sets them all).
_CONFIG_DEFAULTS: dict[str, Any] = {
    "vocab_size": 256000,
    "hidden_size": 3584,
    "intermediate_size": 14336,
    "num_hidden_layers": 42,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 8192,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "attention_bias": False,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "final_logit_softcapping": 30.0,
    "attn_logit_softcapping": 50.0,  # read for completeness; not applied (see the module docstring)
    "start_layer": 28,
    "layer_sep": 28,
    "layer_wise": False,
}


class CostWiseGemmaConfig(PretrainedConfig):
    """The checkpoint's ``config.json`` (model_type ``cost_wise_gemma``): Gemma2 fields plus the layer-wise grid."""

    model_type = "cost_wise_gemma"

    def __init__(self, **kwargs: Any) -> None:
        fields = {name: kwargs.pop(name, default) for name, default in _CONFIG_DEFAULTS.items()}
        kwargs.setdefault("tie_word_embeddings", False)  # the score heads are not the embeddings
        super().__init__(**kwargs)
        # Set after super().__init__ so that no base-class default overwrites them (transformers 4 and 5 alike).
        for name, value in fields.items():
            setattr(self, name, value)


def valid_cutoff_layers(config: CostWiseGemmaConfig) -> list[int]:
    """The layers a score can be read after: ``start_layer + k * layer_sep`` up to ``num_hidden_layers``."""
    return list(range(config.start_layer, config.num_hidden_layers + 1, config.layer_sep))


def compress_passages(
    hidden: torch.Tensor,
    lengths: torch.Tensor,
    query_lengths: torch.Tensor,
    prompt_lengths: torch.Tensor,
    ratio: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pool each passage in groups of ``ratio`` tokens (the last group may be partial).

    Each right-padded row is ``[query | passage | prompt | pad]``; the result is ``[query | pooled passage | prompt
    | zero pad]`` with new lengths. Padding is zero so nothing non-finite can leak through masked attention.
    """
    batch, seq, width = hidden.shape  # (B, S, H)
    passage = lengths - query_lengths - prompt_lengths  # (B,)
    kept = (passage + ratio - 1) // ratio  # (B,)
    new_lengths = query_lengths + kept + prompt_lengths  # (B,)
    groups = int(kept.max())

    offsets = torch.arange(groups * ratio, device=hidden.device)  # (G*r,)
    in_passage = offsets[None, :] < passage[:, None]  # (B, G*r)
    source = (query_lengths[:, None] + offsets[None, :]).clamp(max=seq - 1)  # (B, G*r)
    tokens = hidden.gather(1, source[..., None].expand(-1, -1, width)).view(batch, groups, ratio, width)
    members = in_passage.view(batch, groups, ratio).to(hidden.dtype)  # (B, G, r)
    weights = members / members.sum(-1, keepdim=True).clamp(min=1)  # (B, G, r): 1/count per member
    pooled = (tokens * weights[..., None]).sum(2)  # (B, G, H)

    # Gather the new rows from [original tokens | pooled groups | one zero row].
    pool = torch.cat([hidden, pooled, hidden.new_zeros(batch, 1, width)], dim=1)  # (B, S+G+1, H)
    t = torch.arange(int(new_lengths.max()), device=hidden.device)[None, :]  # (1, T)
    q, k, n = query_lengths[:, None], kept[:, None], passage[:, None]
    index = torch.where(
        t < q,
        t,
        torch.where(t < q + k, seq + t - q, torch.where(t < new_lengths[:, None], t - k + n, seq + groups)),
    )  # (B, T)
    return pool.gather(1, index[..., None].expand(-1, -1, width)), new_lengths


# Gemma2's GeGLU activation, fixed (not read from ``hidden_activation``) as the published scores were made.
_gelu_tanh = ACTIVATIONS["gelu_pytorch_tanh"]


class _DecoderLayer(nn.Module):
    def __init__(self, config: CostWiseGemmaConfig, index: int) -> None:
        super().__init__()
        self.is_sliding = index % 2 == 0  # Gemma2 alternates local (even) and global (odd) attention
        width, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = RMSNorm(width, eps, zero_centred=True)
        # Logits are not soft-capped (attn_logit_softcapping unused), as the published scores were made.
        self.self_attn = GroupedQueryAttention(
            width,
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
            bias=config.attention_bias,
            scale=config.query_pre_attn_scalar**-0.5,
        )
        self.post_attention_layernorm = RMSNorm(width, eps, zero_centred=True)
        self.pre_feedforward_layernorm = RMSNorm(width, eps, zero_centred=True)
        self.mlp = GatedMLP(width, config.intermediate_size, _gelu_tanh)
        self.post_feedforward_layernorm = RMSNorm(width, eps, zero_centred=True)

    def forward(self, x: torch.Tensor, masks: _LayerInputs) -> torch.Tensor:
        mask = masks.sliding_mask if self.is_sliding else masks.full_mask
        x = x + self.post_attention_layernorm(
            self.self_attn(self.input_layernorm(x), masks.cos, masks.sin, mask)
        )
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class _LayerInputs:
    """Masks and rotary tables for one sequence length; rebuilt whenever compression changes the length."""

    def __init__(
        self, config: CostWiseGemmaConfig, lengths: torch.Tensor, seq: int, dtype: torch.dtype
    ) -> None:
        device = lengths.device
        pos = torch.arange(seq, device=device)
        # float32 angles, rotation in the model's dtype: what the published scores were made with.
        cos, sin = rotary_table(seq, config.head_dim, config.rope_theta, dtype=torch.float32, device=device)
        self.cos, self.sin = cos.to(dtype), sin.to(dtype)  # (S, d) each
        visible = (pos[None, :] <= pos[:, None])[None] & (
            pos[None, None, :] < lengths[:, None, None]
        )  # (B, S, S)
        self.full_mask = self._additive(visible, dtype)
        window = config.sliding_window
        if window is not None and seq > window:
            near = (pos[:, None] - pos[None, :]) < window  # (S, S)
            self.sliding_mask = self._additive(visible & near[None], dtype)
        else:
            self.sliding_mask = self.full_mask

    @staticmethod
    def _additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # A large finite negative (not -inf) keeps rows of padding finite, as the reference's masks did.
        mask = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
        return mask.masked_fill(~visible, torch.finfo(dtype).min)[:, None]  # (B, 1, S, S)


class _Backbone(nn.Module):
    def __init__(self, config: CostWiseGemmaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(_DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, zero_centred=True)


class LightweightGemma2Reranker(PreTrainedModel):
    """The cost-wise Gemma2 reranker: a Gemma2 stack with one scalar head per valid cutoff layer."""

    config_class = CostWiseGemmaConfig
    config: CostWiseGemmaConfig
    base_model_prefix = "model"
    # whole layers per device (device_map); transformers types it as an instance attribute but reads the class's
    _no_split_modules: ClassVar[list[str]] = ["_DecoderLayer"]  # type: ignore[misc]
    _supports_sdpa = True

    def __init__(self, config: CostWiseGemmaConfig) -> None:
        super().__init__(config)
        self.model = _Backbone(config)
        self.lm_head = nn.ModuleList(ScoreHead(config.hidden_size) for _ in valid_cutoff_layers(config))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RMSNorm) and module.zero_centred:
            init_zeros_(module.weight)

    @property
    def valid_cutoff_layers(self) -> list[int]:
        return valid_cutoff_layers(self.config)

    def layer_scores(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        query_lengths: torch.Tensor,
        prompt_lengths: torch.Tensor,
        *,
        cutoff_layers: Sequence[int],
        compress_layers: frozenset[int],
        compress_ratio: int,
    ) -> torch.Tensor:
        """Score right-padded ``[bos query sep | sep passage | sep prompt]`` rows after each cutoff layer.

        ``query_lengths`` (B,) counts bos, query and the first separator; ``prompt_lengths`` (B,) the last separator
        and the prompt. The plan is trusted as resolved by the kind: ``cutoff_layers`` are valid cutoff layers,
        ``compress_layers`` lie in ``1 .. num_hidden_layers - 1`` (empty when ``compress_ratio`` is 1). Returns fp32
        scores ``(len(cutoff_layers), B)``, one row per entry in the order given, repeats kept. Layers after the
        deepest cutoff are not run. Heads go to the distinct requested layers in ascending order, as the published
        scores were made: ``lm_head[0]`` for the shallowest requested layer, whatever its number.
        """
        heads = sorted(set(cutoff_layers))  # heads[i] is scored by lm_head[i]
        lengths = _right_padded_lengths(attention_mask)  # (B,)
        query_lengths = query_lengths.to(device=lengths.device, dtype=torch.long)  # (B,)
        prompt_lengths = prompt_lengths.to(device=lengths.device, dtype=torch.long)  # (B,)
        # Compression locates each passage from these spans; the kind builds them from the same tokens.
        assert bool((query_lengths + prompt_lengths <= lengths).all()), "query + prompt spans exceed a row"

        hidden = self.model.embed_tokens(input_ids)  # (B, S, H)
        hidden = hidden * torch.tensor(math.sqrt(self.config.hidden_size), dtype=hidden.dtype)
        inputs = _LayerInputs(self.config, lengths, hidden.shape[1], hidden.dtype)
        last_tokens: dict[int, torch.Tensor] = {}
        for index in range(heads[-1]):
            if index in heads:
                last_tokens[index] = _last_token(hidden, lengths)
            if index in compress_layers:
                hidden, lengths = compress_passages(
                    hidden, lengths, query_lengths, prompt_lengths, compress_ratio
                )
                inputs = _LayerInputs(self.config, lengths, hidden.shape[1], hidden.dtype)
            hidden = self.model.layers[index](hidden, inputs)
        last_tokens[heads[-1]] = _last_token(hidden, lengths)
        scores = {
            layer: self._head_score(i, last_tokens[layer]) for i, layer in enumerate(heads)
        }  # each (B,)
        return torch.stack([scores[layer] for layer in cutoff_layers])  # (L, B)

    def _head_score(self, position: int, last: torch.Tensor) -> torch.Tensor:
        """Head ``position`` (not the layer number, matching the published scores) on (B, H) -> (B,) fp32."""
        logits = self.lm_head[position](self.model.norm(last))  # (B, 1)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits.float().squeeze(-1)


def _right_padded_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real lengths (B,) of a right-padded (B, S) mask; the kind pads on the right because compression needs it."""
    lengths = attention_mask.sum(dim=1).long()  # (B,)
    expected = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None, :] < lengths[:, None]
    assert torch.equal(attention_mask.bool(), expected) and bool((lengths > 0).all()), (
        "layer_scores needs right-padded rows with at least one real token"
    )
    return lengths


def _last_token(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, S, H) -> (B, H): each row's last real token."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]


def load_lightweight_model(
    name_or_path: str, *, dtype: torch.dtype = torch.float32, cache_dir: str | None = None
) -> LightweightGemma2Reranker:
    """Load a cost-wise Gemma2 checkpoint (local folder or hub name) natively, in eval mode.

    Never runs the checkpoint's remote code. Raises :class:`ModelLoadError` when the checkpoint cannot be read,
    is not layer-wise, or leaves any parameter missing or mis-shaped (random heads would score plausibly but
    wrongly).
    """
    try:
        config = CostWiseGemmaConfig.from_pretrained(name_or_path, cache_dir=cache_dir)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read the config of {name_or_path!r}: {exc}") from exc
    if not config.layer_wise:
        raise ModelLoadError(
            f"{name_or_path!r} has layer_wise=false, so it has no per-layer score heads; "
            "only the layer-wise cost-wise Gemma2 rerankers can be scored."
        )
    model = load_pretrained(
        LightweightGemma2Reranker,
        name_or_path,
        kind=LightweightGemma2Reranker.__name__,
        config=config,
        cache_dir=cache_dir,
        **dtype_kwargs(dtype),
    )
    return cast(LightweightGemma2Reranker, model)  # load_pretrained returns nn.Module for any class
