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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..errors import InvalidInputError, InvalidOptionError, ModelLoadError
from ..loading import dtype_kwargs, load_pretrained

__all__ = [
    "SUPPORTED_COMPRESS_RATIOS",
    "CostWiseGemmaConfig",
    "LightweightGemma2Reranker",
    "ScoringPlan",
    "compress_passages",
    "load_lightweight_model",
    "plan_scoring",
    "valid_cutoff_layers",
]

SUPPORTED_COMPRESS_RATIOS = (1, 2, 4, 8)

try:  # transformers >= 5: init helpers that leave already-loaded tensors alone
    from transformers import initialization as _init
except ImportError:  # transformers 4.x only initialises missing weights, so torch's helpers are safe
    _init = nn.init


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


def _as_list(layers: int | Iterable[int] | None) -> list[int]:
    return [] if layers is None else [layers] if isinstance(layers, int) else list(layers)


def _resolve_cutoff_layers(
    config: CostWiseGemmaConfig, cutoff_layers: int | Iterable[int] | None
) -> list[int]:
    """Requested cutoff layers in the order given, without repeats; None means the last layer."""
    valid = valid_cutoff_layers(config)
    if cutoff_layers is None:
        return [config.num_hidden_layers]
    requested = _as_list(cutoff_layers)
    bad = [layer for layer in requested if isinstance(layer, bool) or layer not in valid]
    if bad or not requested:
        raise InvalidOptionError(
            f"cutoff_layers {requested!r} contains layers this model cannot score after ({bad!r}); "
            f"choose from {valid} (start_layer + k * layer_sep)."
        )
    return list(dict.fromkeys(requested))


def _check_compress_ratio(compress_ratio: int) -> int:
    if isinstance(compress_ratio, bool) or compress_ratio not in SUPPORTED_COMPRESS_RATIOS:
        raise InvalidOptionError(
            f"compress_ratio must be one of {list(SUPPORTED_COMPRESS_RATIOS)}, got {compress_ratio!r}."
        )
    return int(compress_ratio)


def _resolve_compress_layers(
    config: CostWiseGemmaConfig, compress_layers: int | Iterable[int] | None
) -> set[int]:
    """Layers before which passages are compressed.

    Layer 0 is dropped (the embeddings are never pooled), and layers at or past the deepest cutoff simply never
    come, as in the reference; so the default ``[8]`` stays valid on models of any depth.
    """
    requested = _as_list(compress_layers)
    bad = [x for x in requested if isinstance(x, bool) or not isinstance(x, int) or x < 0]
    if bad:
        raise InvalidOptionError(f"compress_layers must be layer indices >= 0, got {requested!r}.")
    return {layer for layer in requested if 0 < layer < config.num_hidden_layers}


@dataclass(frozen=True)
class ScoringPlan:
    """Validated scoring options: where to read scores and where (and how hard) to compress."""

    cutoff_layers: tuple[int, ...]  # as requested, without repeats
    compress_layers: frozenset[int]  # empty when compress_ratio is 1
    compress_ratio: int


def plan_scoring(
    config: CostWiseGemmaConfig,
    cutoff_layers: int | Iterable[int] | None = None,
    compress_layers: int | Iterable[int] | None = None,
    compress_ratio: int = 1,
) -> ScoringPlan:
    """Check scoring options against the model before any work; raises :class:`InvalidOptionError`."""
    ratio = _check_compress_ratio(compress_ratio)
    compress_at = _resolve_compress_layers(config, compress_layers)
    return ScoringPlan(
        cutoff_layers=tuple(_resolve_cutoff_layers(config, cutoff_layers)),
        compress_layers=frozenset(compress_at if ratio > 1 else ()),
        compress_ratio=ratio,
    )


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


class Gemma2RMSNorm(nn.Module):
    """Gemma's RMSNorm: normalise in fp32 and scale by ``1 + weight`` (the weight is stored zero-centred)."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


class _MLP(nn.Module):
    def __init__(self, config: CostWiseGemmaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class _Attention(nn.Module):
    """Grouped-query attention through PyTorch SDPA (no logit soft-capping, as the published scores were made)."""

    def __init__(self, config: CostWiseGemmaConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        self.scaling = config.query_pre_attn_scalar**-0.5
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        batch, seq, _ = x.shape  # (B, S, H)
        q = self.q_proj(x).view(batch, seq, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, S, d)
        k = self.k_proj(x).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, S, d)
        v = self.v_proj(x).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, S, d)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        groups = self.heads // self.kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, nh, S, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)  # (B, nh, S, d)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, self.heads * self.head_dim))


class _DecoderLayer(nn.Module):
    def __init__(self, config: CostWiseGemmaConfig, index: int) -> None:
        super().__init__()
        self.is_sliding = index % 2 == 0  # Gemma2 alternates local (even) and global (odd) attention
        eps = config.rms_norm_eps
        self.input_layernorm = Gemma2RMSNorm(config.hidden_size, eps)
        self.self_attn = _Attention(config)
        self.post_attention_layernorm = Gemma2RMSNorm(config.hidden_size, eps)
        self.pre_feedforward_layernorm = Gemma2RMSNorm(config.hidden_size, eps)
        self.mlp = _MLP(config)
        self.post_feedforward_layernorm = Gemma2RMSNorm(config.hidden_size, eps)

    def forward(self, x: torch.Tensor, masks: _LayerInputs) -> torch.Tensor:
        mask = masks.sliding_mask if self.is_sliding else masks.full_mask
        x = x + self.post_attention_layernorm(
            self.self_attn(self.input_layernorm(x), mask, masks.cos, masks.sin)
        )
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class _LayerInputs:
    """Masks and rotary tables for one sequence length; rebuilt whenever compression changes the length."""

    def __init__(
        self, config: CostWiseGemmaConfig, lengths: torch.Tensor, seq: int, dtype: torch.dtype
    ) -> None:
        device = lengths.device
        pos = torch.arange(seq, device=device)
        inv_freq = 1.0 / (
            config.rope_theta
            ** (torch.arange(0, config.head_dim, 2, device=device).float() / config.head_dim)
        )
        angles = torch.outer(pos.float(), inv_freq)  # (S, d/2)
        table = torch.cat((angles, angles), dim=-1)  # (S, d)
        self.cos, self.sin = table.cos().to(dtype), table.sin().to(dtype)
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


class _ScoreHead(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear_head = nn.Linear(width, 1, bias=False)


class _Backbone(nn.Module):
    def __init__(self, config: CostWiseGemmaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(_DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Gemma2RMSNorm(config.hidden_size, config.rms_norm_eps)


class LightweightGemma2Reranker(PreTrainedModel):
    """The cost-wise Gemma2 reranker: a Gemma2 stack with one scalar head per valid cutoff layer."""

    config_class = CostWiseGemmaConfig
    base_model_prefix = "model"
    _no_split_modules: ClassVar[list[str]] = ["_DecoderLayer"]
    _supports_sdpa = True

    def __init__(self, config: CostWiseGemmaConfig) -> None:
        super().__init__(config)
        self.model = _Backbone(config)
        self.lm_head = nn.ModuleList(_ScoreHead(config.hidden_size) for _ in valid_cutoff_layers(config))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Gemma2RMSNorm):
            _init.zeros_(module.weight)

    @property
    def valid_cutoff_layers(self) -> list[int]:
        return valid_cutoff_layers(self.config)

    def layer_scores(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        query_lengths: torch.Tensor | Sequence[int],
        prompt_lengths: torch.Tensor | Sequence[int],
        *,
        cutoff_layers: int | Iterable[int] | None = None,
        compress_layers: int | Iterable[int] | None = None,
        compress_ratio: int = 1,
    ) -> torch.Tensor:
        """Score right-padded ``[bos query sep | sep passage | sep prompt]`` rows after each cutoff layer.

        ``query_lengths`` counts bos, query and the first separator; ``prompt_lengths`` the last separator and the
        prompt. Returns fp32 scores of shape ``(len(cutoffs), B)``, one row per requested layer in the order given
        (repeats dropped; None means the last layer). Layers after the deepest cutoff are not run. Heads go to the
        requested layers in ascending order, as the published scores were made: ``lm_head[0]`` for the shallowest.
        """
        plan = plan_scoring(self.config, cutoff_layers, compress_layers, compress_ratio)
        cutoffs = sorted(plan.cutoff_layers)
        lengths = _right_padded_lengths(attention_mask)  # (B,)
        query_lengths, prompt_lengths = self._span_lengths(query_lengths, prompt_lengths, lengths)

        hidden = self.model.embed_tokens(input_ids)  # (B, S, H)
        hidden = hidden * torch.tensor(math.sqrt(self.config.hidden_size), dtype=hidden.dtype)
        inputs = _LayerInputs(self.config, lengths, hidden.shape[1], hidden.dtype)
        last_tokens: dict[int, torch.Tensor] = {}
        for index in range(cutoffs[-1]):
            if index in cutoffs:
                last_tokens[index] = _last_token(hidden, lengths)
            if index in plan.compress_layers:
                hidden, lengths = compress_passages(
                    hidden, lengths, query_lengths, prompt_lengths, plan.compress_ratio
                )
                inputs = _LayerInputs(self.config, lengths, hidden.shape[1], hidden.dtype)
            hidden = self.model.layers[index](hidden, inputs)
        last_tokens[cutoffs[-1]] = _last_token(hidden, lengths)
        return torch.stack(
            [self._head_score(cutoffs.index(layer), last_tokens[layer]) for layer in plan.cutoff_layers]
        )

    def _head_score(self, position: int, last: torch.Tensor) -> torch.Tensor:
        """Head ``position`` (not the layer number, matching the published scores) on (B, H) -> (B,) fp32."""
        logits = self.lm_head[position].linear_head(self.model.norm(last))  # (B, 1)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits.float().squeeze(-1)

    @staticmethod
    def _span_lengths(
        query_lengths: torch.Tensor | Sequence[int],
        prompt_lengths: torch.Tensor | Sequence[int],
        lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        query = torch.as_tensor(query_lengths, dtype=torch.long, device=lengths.device)
        prompt = torch.as_tensor(prompt_lengths, dtype=torch.long, device=lengths.device)
        if query.shape != lengths.shape or prompt.shape != lengths.shape:
            raise InvalidInputError(
                f"query_lengths and prompt_lengths need one entry per row ({lengths.numel()}), "
                f"got shapes {tuple(query.shape)} and {tuple(prompt.shape)}."
            )
        if bool(((query < 0) | (prompt < 0) | (query + prompt > lengths)).any()):
            raise InvalidInputError(
                "Each row's query_length + prompt_length must fit within its real tokens."
            )
        return query, prompt


def _right_padded_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real lengths of a right-padded (B, S) mask; anything else is rejected because compression needs it."""
    lengths = attention_mask.sum(dim=1).long()  # (B,)
    expected = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None, :] < lengths[:, None]
    if not torch.equal(attention_mask.bool(), expected) or bool((lengths == 0).any()):
        raise InvalidInputError(
            "The lightweight reranker needs right-padded rows with at least one real token."
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
        kind="decoder-only-lightweight",
        config=config,
        cache_dir=cache_dir,
        **dtype_kwargs(dtype),
    )
    return model
