"""The last hidden state of each row of a left-padded batch through a causal LM, computing the rows' shared start once.

A reranking prompt starts the same way for every passage of a query: the system prompt, the instruction and the
query come before the passage (Qwen3-Reranker, bge-reranker-v2-gemma). Under causal attention the keys and values
of those tokens do not depend on anything after them, so they are computed once, kept, and every row of the batch
(and of later batches that start with the same tokens) runs only its own remaining tokens over them. Each row then
sees exactly the tokens and positions it would see alone, so scores are the unpadded ones up to float summation
order; a Qwen3-Reranker prompt of a 10-word query and a 100-word passage sends about a third fewer tokens through
the model.

The kept starts (keys and values of every layer, for one row) live in a small least-recently-used table: with
``capacity`` 8 and a 100-token start that is 8 x 25 MB for Qwen3-Reranker-0.6B in float32.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from typing import Any

import torch

from ..compat import cache_argument, cache_key_values, new_dynamic_cache

__all__ = ["SharedPrefixDecoder"]

logger = logging.getLogger(__name__)

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values (1, kv_heads, P, head_dim)


class SharedPrefixDecoder:
    """``last_hidden(input_ids, attention_mask)`` -> (B, H) for a transformers causal LM (or its sequence-
    classification conversion), reusing the keys and values of starts its rows share.

    A start is worth keeping from ``min_tokens`` tokens on; a batch of one row reuses a kept start but never adds
    one (its whole text would be the start). With ``enabled=False`` (a model being exported), or for a model
    whose forward does not take a cache (found on first use, then for good), it is the plain forward.
    """

    def __init__(self, model: Any, *, enabled: bool = True, capacity: int = 8, min_tokens: int = 16) -> None:
        self.model = model
        self.capacity, self.min_tokens = capacity, min_tokens
        self.enabled = enabled
        self._starts: OrderedDict[bytes, KeyValues] = OrderedDict()
        self._lock = threading.Lock()

    def last_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.enabled and not torch.jit.is_tracing() and input_ids.shape[1] > self.min_tokens:
            try:
                with torch.no_grad():
                    hidden = self._with_shared_start(input_ids, attention_mask)
                if hidden is not None:
                    return hidden
            except (TypeError, ValueError, NotImplementedError, AttributeError) as exc:
                self.enabled = False
                logger.info("%s takes no key/value cache (%s): no shared-start reuse.", type(self.model), exc)
        return self._plain(input_ids, attention_mask)

    def _plain(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state[:, -1]  # (B, H)

    def _with_shared_start(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor | None:
        """The last hidden states through a kept start, or None where no start is worth it."""
        batch, width = input_ids.shape
        window = getattr(self.model.config, "sliding_window", None)
        if isinstance(window, int) and width >= window:  # a kept start would have to slide: not handled
            return None
        lengths = attention_mask.sum(dim=1)  # (B,)
        shared = _common_start(input_ids, lengths)  # (P,) on the device; P < every row's length
        key = shared.cpu().numpy().tobytes()
        kept = self._longest_kept(key)
        have = 0 if kept is None else _length(kept)
        if batch > 1 and len(shared) - have >= self.min_tokens:
            longer = self._keep(key, shared, kept)
            if longer is not None:
                kept, have = longer, len(shared)
        if kept is None or have < self.min_tokens:
            return None
        rest_ids = input_ids[:, have:]  # (B, T - have): each row's own tokens, right-aligned
        rest_mask = attention_mask[:, : width - have]  # a row's tokens start where its padding ended
        starts = (width - lengths)[:, None]  # (B, 1) padding per row
        columns = torch.arange(width - have, device=input_ids.device)[None]  # (1, T - have)
        positions = have + (columns - starts).clamp(min=0)  # (B, T - have) the rows' own positions
        mask = torch.cat([attention_mask.new_ones(batch, have), rest_mask], dim=1)  # (B, T)
        out = self._decode_over(
            self._cache_of(kept, batch), input_ids=rest_ids, attention_mask=mask, position_ids=positions
        )
        return out.last_hidden_state[:, -1]  # (B, H)

    def _decode_over(self, cache: Any, **inputs: torch.Tensor) -> Any:
        """The decoder's forward on ``inputs`` after what ``cache`` holds (which it may extend)."""
        decoder: torch.nn.Module = self.model.get_decoder()
        return decoder(use_cache=True, **{cache_argument(type(decoder).forward): cache}, **inputs)

    def _longest_kept(self, key: bytes) -> KeyValues | None:
        """The longest kept start that ``key``'s tokens begin with."""
        with self._lock:
            best = max((k for k in self._starts if key.startswith(k)), key=len, default=None)
            if best is None:
                return None
            self._starts.move_to_end(best)
            return self._starts[best]

    def _keep(self, key: bytes, shared: torch.Tensor, kept: KeyValues | None) -> KeyValues | None:
        """Run ``shared`` (after the part ``kept`` already holds) and keep the keys and values of all of it; None
        where a layer kept fewer tokens (a sliding-window layer shorter than the start)."""
        have = 0 if kept is None else _length(kept)
        cache = self._new_cache()
        for layer, (keys, values) in enumerate(kept or ()):
            cache.update(keys, values, layer)
        positions = torch.arange(have, len(shared), device=shared.device)[None]
        self._decode_over(cache, input_ids=shared[None, have:], position_ids=positions)
        key_values = cache_key_values(cache)
        if any(keys.shape[2] != len(shared) for keys, _ in key_values):
            return None
        with self._lock:
            self._starts[key] = key_values
            while len(self._starts) > self.capacity:
                self._starts.popitem(last=False)
        return key_values

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return new_dynamic_cache(DynamicCache, self.model.config)

    def _cache_of(self, kept: KeyValues, batch: int) -> Any:
        """A cache that puts ``kept`` before each of ``batch`` rows' keys and values without storing theirs: as
        in a forward without a cache, each layer's keys and values are freed once the layer is done."""
        from transformers import DynamicCache

        cache = new_dynamic_cache(_kept_start_class(), self.model.config)
        cache.kept, cache.rows = kept, batch
        for layer, (keys, values) in enumerate(
            kept
        ):  # stored once, one row: the length the masks are sized by
            DynamicCache.update(cache, keys, values, layer)
        return cache


@functools.cache
def _kept_start_class() -> type:
    """transformers' DynamicCache whose ``update`` returns the kept start and the new keys and values together
    without storing the new ones (made on first use: transformers is imported only when needed)."""
    from transformers import DynamicCache

    class KeptStart(DynamicCache):
        kept: KeyValues
        rows: int

        def update(
            self,
            key_states: torch.Tensor,
            value_states: torch.Tensor,
            layer_idx: int,
            *args: Any,
            **kwargs: Any,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            keys, values = self.kept[layer_idx]
            return (
                torch.cat([keys.expand(self.rows, -1, -1, -1), key_states], dim=-2),
                torch.cat([values.expand(self.rows, -1, -1, -1), value_states], dim=-2),
            )

    return KeptStart


def _common_start(input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The tokens every row of a left-padded batch starts with, leaving each row at least one token of its own."""
    width = input_ids.shape[1]
    shortest = int(lengths.min())
    columns = (width - lengths)[:, None] + torch.arange(shortest, device=input_ids.device)[None]  # (B, m)
    heads = input_ids.gather(1, columns)  # (B, m) each row's first tokens
    agree = (heads == heads[:1]).all(dim=0)  # (m,)
    length = int(agree.long().cumprod(dim=0).sum())
    return heads[0, : min(length, shortest - 1)]


def _length(kept: KeyValues) -> int:
    return int(kept[0][0].shape[2])
