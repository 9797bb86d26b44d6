"""Tokenizer loading and batched encoding.

The checkpoint's ``tokenizer.json`` is the source of truth for token ids: it is exactly what the
model was trained and scored with, whereas some ``AutoTokenizer`` releases rebuild tokenizers from
class defaults and change ids. We run it through the ``tokenizers`` library directly, which also
encodes whole batches in Rust.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import ModelLoadError
from .loading import read_json, resolve_file
from .ragged import Ragged

__all__ = ["PairTemplate", "TextTokenizer", "load_tokenizer", "truncate_second"]


@dataclass(frozen=True)
class PairTemplate:
    """Where a cross-encoder's special tokens go around a (query, passage) pair, and their type ids."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    first_type: int
    second_type: int

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


@dataclass(frozen=True)
class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the special token ids the rerankers need."""

    backend: Tokenizer
    bos_id: int | None
    pad_id: int
    truncation_side: str = "right"

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> Ragged:
        """Token ids without special tokens, each row cut to ``max_length`` as HF truncation does."""
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
        ids = Ragged.from_lists([encoding.ids for encoding in encodings])
        if max_length is None:
            return ids
        keep = np.full(len(ids), max_length, dtype=np.int64)
        return ids.tail(keep) if self.truncation_side == "left" else ids.head(keep)

    def ids(self, text: str) -> list[int]:
        """The ids of one short constant text (a separator, a prompt, a label word)."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def pair_template(self) -> PairTemplate:
        """Read the special-token layout of a pair off the tokenizer's post-processor."""
        return _template_from(self.backend.encode("a", "b", add_special_tokens=True))


def truncate_second(first_lengths: np.ndarray, second: Ragged, max_total: int, side: str = "right") -> Ragged:
    """Shorten each second text so the pair fits ``max_total`` tokens, as HF's ``only_second`` does.

    When the second text is too short to absorb the excess, the pair is left whole (the
    reference tokenizers log an error and do the same).
    """
    excess = first_lengths + second.lengths - max_total
    keep = np.where((excess > 0) & (second.lengths > excess), second.lengths - excess, second.lengths)
    return second.tail(keep) if side == "left" else second.head(keep)


def _template_from(merged: Encoding) -> PairTemplate:
    sequence_ids = merged.sequence_ids
    first_positions = [i for i, s in enumerate(sequence_ids) if s == 0]
    second_positions = [i for i, s in enumerate(sequence_ids) if s == 1]
    if not first_positions or not second_positions:
        raise ModelLoadError("The tokenizer's post-processor drops one text of a pair; cannot score pairs.")
    first_end, second_start = first_positions[-1] + 1, second_positions[0]
    second_end = second_positions[-1] + 1
    ids, types = merged.ids, merged.type_ids
    return PairTemplate(
        prefix=tuple(ids[: first_positions[0]]),
        middle=tuple(ids[first_end:second_start]),
        suffix=tuple(ids[second_end:]),
        prefix_types=tuple(types[: first_positions[0]]),
        middle_types=tuple(types[first_end:second_start]),
        suffix_types=tuple(types[second_end:]),
        first_type=types[first_positions[0]],
        second_type=types[second_start],
    )


def load_tokenizer(
    model_name_or_path: str, *, cache_dir: str | None = None, trust_remote_code: bool = False
) -> TextTokenizer:
    """Load the checkpoint's tokenizer, from ``tokenizer.json`` when it has one."""
    path = resolve_file(model_name_or_path, "tokenizer.json", cache_dir)
    settings = {
        **read_json(model_name_or_path, "special_tokens_map.json", cache_dir),
        **read_json(model_name_or_path, "tokenizer_config.json", cache_dir),
    }
    if path is not None:
        backend = Tokenizer.from_file(str(path))
    else:
        backend = _backend_from_transformers(model_name_or_path, cache_dir, trust_remote_code)
    backend.no_truncation()
    backend.no_padding()
    model_config = read_json(model_name_or_path, "config.json", cache_dir)
    bos_id = _special_id(backend, settings, model_config, "bos")
    pad_id = _special_id(backend, settings, model_config, "pad")
    return TextTokenizer(
        backend=backend,
        bos_id=bos_id,
        pad_id=pad_id if pad_id is not None else 0,
        truncation_side=settings.get("truncation_side", "right"),
    )


def _backend_from_transformers(
    model_name_or_path: str, cache_dir: str | None, trust_remote_code: bool
) -> Tokenizer:
    """Fallback for checkpoints without tokenizer.json: let transformers build a fast tokenizer."""
    from transformers import AutoTokenizer

    try:
        hf_tokenizer = AutoTokenizer.from_pretrained(
            model_name_or_path, cache_dir=cache_dir, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot load a tokenizer for {model_name_or_path!r}: {exc}") from exc
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelLoadError(
            f"{model_name_or_path!r} has no tokenizer.json and its tokenizer has no fast (Rust) version."
        )
    return backend


def _special_id(
    backend: Tokenizer, settings: dict[str, Any], model_config: dict[str, Any], name: str
) -> int | None:
    """Id of the ``bos``/``pad`` token named in the tokenizer settings, else in config.json."""
    token = settings.get(f"{name}_token")
    if isinstance(token, dict):
        token = token.get("content")
    if isinstance(token, str):
        token_id = backend.token_to_id(token)
        if token_id is not None:
            return token_id
    value = model_config.get(f"{name}_token_id")
    return value if isinstance(value, int) else None
