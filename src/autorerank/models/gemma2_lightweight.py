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

import logging
import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from ..errors import InvalidInputError, InvalidOptionError, ModelLoadError

__all__ = [
    "SUPPORTED_COMPRESS_RATIOS",
    "CostWiseGemmaConfig",
    "LightweightGemma2Reranker",
    "compress_passages",
    "load_lightweight_model",
    "valid_cutoff_layers",
]

logger = logging.getLogger(__name__)

SUPPORTED_COMPRESS_RATIOS = (1, 2, 4, 8)

try:  # transformers >= 5: init helpers that leave already-loaded tensors alone
    from transformers import initialization as _init
except ImportError:  # transformers 4.x only initialises missing weights, so torch's helpers are safe
    _init = nn.init


class CostWiseGemmaConfig(PretrainedConfig):
    """The checkpoint's ``config.json`` (model_type ``cost_wise_gemma``): Gemma2 fields plus the layer-wise grid."""

    model_type = "cost_wise_gemma"

    def __init__(
        self,
        vocab_size: int = 256000,
        hidden_size: int = 3584,
        intermediate_size: int = 14336,
        num_hidden_layers: int = 42,
        num_attention_heads: int = 16,
        num_key_value_heads: int = 8,
        head_dim: int = 256,
        hidden_activation: str = "gelu_pytorch_tanh",
        max_position_embeddings: int = 8192,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        attention_bias: bool = False,
        query_pre_attn_scalar: float = 256,
        sliding_window: int | None = 4096,
        final_logit_softcapping: float | None = 30.0,
        attn_logit_softcapping: float | None = 50.0,
        start_layer: int = 28,
        layer_sep: int = 28,
        layer_wise: bool = False,
        tie_word_embeddings: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        # Set after super().__init__ so that no base-class default can overwrite them (transformers 4 and 5 alike).
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.hidden_activation = hidden_activation
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.attention_bias = attention_bias
        self.query_pre_attn_scalar = query_pre_attn_scalar
        self.sliding_window = sliding_window
        self.final_logit_softcapping = final_logit_softcapping
        self.attn_logit_softcapping = attn_logit_softcapping
        self.start_layer = start_layer
        self.layer_sep = layer_sep
        self.layer_wise = layer_wise
        self.tie_word_embeddings = tie_word_embeddings


def valid_cutoff_layers(config: CostWiseGemmaConfig) -> list[int]:
    """The layers a score can be read after: ``start_layer + k * layer_sep`` up to ``num_hidden_layers``."""
    return list(range(config.start_layer, config.num_hidden_layers + 1, config.layer_sep))


def _resolve_cutoff_layers(config: CostWiseGemmaConfig, cutoff_layers: int | Iterable[int] | None) -> list[int]:
    """Requested cutoff layers, sorted and de-duplicated (the order the heads are assigned in)."""
    valid = valid_cutoff_layers(config)
    if cutoff_layers is None:
        return [config.num_hidden_layers]
    requested = [cutoff_layers] if isinstance(cutoff_layers, int) else list(cutoff_layers)
    bad = [layer for layer in requested if not isinstance(layer, int) or layer not in valid]
    if bad or not requested:
        raise InvalidOptionError(
            f"cutoff_layers {requested!r} contains layers this model cannot score after ({bad!r}); "
            f"choose from {valid} (start_layer + k * layer_sep)."
        )
    return sorted(set(requested))


def _check_compress_ratio(compress_ratio: int) -> int:
    if isinstance(compress_ratio, bool) or compress_ratio not in SUPPORTED_COMPRESS_RATIOS:
        raise InvalidOptionError(
            f"compress_ratio must be one of {list(SUPPORTED_COMPRESS_RATIOS)}, got {compress_ratio!r}."
        )
    return int(compress_ratio)


def _resolve_compress_layers(config: CostWiseGemmaConfig, compress_layers: int | Iterable[int] | None) -> set[int]:
    """Layers before which passages are compressed; layer 0 is dropped because the embeddings are never pooled."""
    requested = [] if compress_layers is None else (
        [compress_layers] if isinstance(compress_layers, int) else list(compress_layers)
    )
    bad = [x for x in requested if not isinstance(x, int) or not 0 <= x < config.num_hidden_layers]
    if bad:
        raise InvalidOptionError(
            f"compress_layers {requested!r} has layers outside 0..{config.num_hidden_layers - 1}: {bad!r}."
        )
    return {layer for layer in requested if layer != 0}


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
        t < q, t, torch.where(t < q + k, seq + t - q, torch.where(t < new_lengths[:, None], t - k + n, seq + groups))
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
            config.num_attention_heads, config.num_key_value_heads, config.head_dim
        )
        self.scaling = config.query_pre_attn_scalar**-0.5
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
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
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), mask, masks.cos, masks.sin))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class _LayerInputs:
    """Masks and rotary tables for one sequence length; rebuilt whenever compression changes the length."""

    def __init__(self, config: CostWiseGemmaConfig, lengths: torch.Tensor, seq: int, dtype: torch.dtype) -> None:
        device = lengths.device
        pos = torch.arange(seq, device=device)
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, config.head_dim, 2, device=device).float()
                                                / config.head_dim))
        angles = torch.outer(pos.float(), inv_freq)  # (S, d/2)
        table = torch.cat((angles, angles), dim=-1)  # (S, d)
        self.cos, self.sin = table.cos().to(dtype), table.sin().to(dtype)
        visible = (pos[None, :] <= pos[:, None])[None] & (pos[None, None, :] < lengths[:, None, None])  # (B, S, S)
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
    _no_split_modules = ["_DecoderLayer"]
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
        prompt. Returns fp32 scores of shape ``(len(cutoffs), B)``, rows in ascending layer order (``cutoff_layers``
        is sorted and de-duplicated; None means the last layer). Layers after the deepest cutoff are not run.
        """
        cutoffs = _resolve_cutoff_layers(self.config, cutoff_layers)
        ratio = _check_compress_ratio(compress_ratio)
        compress_at = _resolve_compress_layers(self.config, compress_layers) if ratio > 1 else set()
        lengths = _right_padded_lengths(attention_mask)  # (B,)
        query_lengths, prompt_lengths = self._span_lengths(query_lengths, prompt_lengths, lengths)

        hidden = self.model.embed_tokens(input_ids)  # (B, S, H)
        hidden = hidden * torch.tensor(math.sqrt(self.config.hidden_size), dtype=hidden.dtype)
        inputs = _LayerInputs(self.config, lengths, hidden.shape[1], hidden.dtype)
        last_tokens: dict[int, torch.Tensor] = {}
        for index in range(cutoffs[-1]):
            if index in cutoffs:
                last_tokens[index] = _last_token(hidden, lengths)
            if index in compress_at:
                hidden, lengths = compress_passages(hidden, lengths, query_lengths, prompt_lengths, ratio)
                inputs = _LayerInputs(self.config, lengths, hidden.shape[1], hidden.dtype)
            hidden = self.model.layers[index](hidden, inputs)
        last_tokens[cutoffs[-1]] = _last_token(hidden, lengths)
        return torch.stack([self._head_score(i, last_tokens[layer]) for i, layer in enumerate(cutoffs)])

    def _head_score(self, position: int, last: torch.Tensor) -> torch.Tensor:
        """Head ``position`` (not the layer number, matching the published scores) on (B, H) -> (B,) fp32."""
        logits = self.lm_head[position].linear_head(self.model.norm(last))  # (B, 1)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits.float().squeeze(-1)

    @staticmethod
    def _span_lengths(
        query_lengths: torch.Tensor | Sequence[int], prompt_lengths: torch.Tensor | Sequence[int], lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        query = torch.as_tensor(query_lengths, dtype=torch.long, device=lengths.device)
        prompt = torch.as_tensor(prompt_lengths, dtype=torch.long, device=lengths.device)
        if query.shape != lengths.shape or prompt.shape != lengths.shape:
            raise InvalidInputError(
                f"query_lengths and prompt_lengths need one entry per row ({lengths.numel()}), "
                f"got shapes {tuple(query.shape)} and {tuple(prompt.shape)}."
            )
        if bool(((query < 0) | (prompt < 0) | (query + prompt > lengths)).any()):
            raise InvalidInputError("Each row's query_length + prompt_length must fit within its real tokens.")
        return query, prompt


def _right_padded_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real lengths of a right-padded (B, S) mask; anything else is rejected because compression needs it."""
    lengths = attention_mask.sum(dim=1).long()  # (B,)
    expected = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None, :] < lengths[:, None]
    if not torch.equal(attention_mask.bool(), expected) or bool((lengths == 0).any()):
        raise InvalidInputError("The lightweight reranker needs right-padded rows with at least one real token.")
    return lengths


def _last_token(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, S, H) -> (B, H): each row's last real token."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]


def load_lightweight_model(
    name_or_path: str, *, dtype: torch.dtype = torch.float32, cache_dir: str | None = None
) -> LightweightGemma2Reranker:
    """Load a cost-wise Gemma2 checkpoint (local folder or hub name) natively, in eval mode.

    Raises :class:`ModelLoadError` when the checkpoint cannot be read, is not layer-wise, or leaves any parameter
    missing or mis-shaped, because silently random heads would score plausibly but wrongly.
    """
    try:
        config = CostWiseGemmaConfig.from_pretrained(name_or_path, cache_dir=cache_dir)
    except OSError as exc:
        raise ModelLoadError(f"Cannot read the config of {name_or_path!r}: {exc}") from exc
    if not config.layer_wise:
        raise ModelLoadError(f"{name_or_path!r} is not layer-wise (layer_wise=false); it has no per-layer heads.")
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        model, info = LightweightGemma2Reranker.from_pretrained(
            name_or_path, config=config, cache_dir=cache_dir, output_loading_info=True, **{dtype_key: dtype}
        )
    except (OSError, RuntimeError) as exc:
        raise ModelLoadError(f"Cannot load the weights of {name_or_path!r}: {exc}") from exc
    missing = list(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
    if missing:
        raise ModelLoadError(f"{name_or_path!r} lacks or mis-shapes parameters {sorted(missing)[:10]} (of "
                             f"{len(missing)}); it is not a cost-wise Gemma2 reranker checkpoint.")
    if info.get("unexpected_keys"):
        logger.warning("Ignoring unexpected parameters in %s: %s", name_or_path, sorted(info["unexpected_keys"]))
    return model.eval()
