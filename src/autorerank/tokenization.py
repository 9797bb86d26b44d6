"""Tokenizer loading and batched encoding.

The checkpoint's ``tokenizer.json`` is the source of truth for token ids: it is exactly what the
model was trained and scored with, whereas some ``AutoTokenizer`` releases rebuild tokenizers from
class defaults and change ids. We run it through the ``tokenizers`` library directly, which also
encodes whole batches in Rust.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import ModelLoadError
from .loading import read_json, resolve_file
from .ragged import Ragged

__all__ = [
    "PairTemplate",
    "TextTokenizer",
    "bounded_ids",
    "cut_margin",
    "cuts_locally",
    "first_cut",
    "load_tokenizer",
    "plain_text_backend",
    "truncate_second",
]


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
    """A ``tokenizers.Tokenizer`` with the special token ids the rerankers need.

    ``backend`` tokenizes the library's own constant texts (separators, prompts, label words), where text that
    spells a special token is that token. ``text_backend``, when set, tokenizes queries and passages instead (see
    :func:`plain_text_backend`).
    """

    backend: Tokenizer
    bos_id: int | None
    pad_id: int
    truncation_side: str = "right"
    text_backend: Tokenizer | None = None

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> Ragged:
        """Token ids of queries or passages without special tokens, each row cut to ``max_length`` as HF
        truncation does. Long texts are cut before tokenizing (see :func:`bounded_ids`), with the same ids."""
        backend = self.text_backend or self.backend
        if max_length is None or not self._cuts_locally:
            rows = [encoding.ids for encoding in backend.encode_batch(list(texts), add_special_tokens=False)]
        else:
            rows = bounded_ids(
                backend, list(texts), max_length, self.truncation_side, margin=self._cut_margin
            )
        ids = Ragged.from_lists(rows)
        if max_length is None:
            return ids
        keep = np.full(len(ids), max_length, dtype=np.int64)
        return ids.tail(keep) if self.truncation_side == "left" else ids.head(keep)

    def ids(self, text: str) -> list[int]:
        """The ids of one short constant text (a separator, a prompt, a label word)."""
        return self.backend.encode(text, add_special_tokens=False).ids

    @cached_property
    def _cuts_locally(self) -> bool:
        return cuts_locally(self.text_backend or self.backend)

    @cached_property
    def _cut_margin(self) -> int:
        return cut_margin(self.text_backend or self.backend)

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


# ----------------------------------------------------------------------------- cutting long texts
# Tokenizing a whole text to keep its first max_length tokens costs time and memory in the text's length (a 50 MB
# passage: 9.7 GB, 82 s). So a text is cut first, to first_cut(limit) characters, and the cut is kept only where
# the tokens kept lie at least cut_margin() pre-tokenized words away from the cut.
#
# Why that gives the ids of the whole text: every tokenizer model (BPE, WordPiece, Unigram, WordLevel) segments
# each pre-tokenized word on its own, so a token can only change if its word does. The normalizers and
# pre-tokenizers listed below act on a character, a whitespace run or one short regex match at a time, so a cut
# changes only the words it touches: the word it falls in (a long word that WordPiece would read as [UNK], a
# multi-character token, NFKC on a split combining sequence), one next to it (a whitespace run that a
# look-ahead splits differently), and, cutting from the left, the first word (where a prefix space is added).
# An added token (``</s>``, ``<|im_start|>``) that the cut splits is read as its pieces instead, at most one
# word per character, and the whitespace it strips is left (words after the kept ones): hence a margin of the
# longest added token's length plus CUT_MARGIN_WORDS. Splitting regexes (Split, Replace) are trusted to match
# within a word or a whitespace run, as those of published tokenizers do. Anything else (a pre-tokenizer that
# keeps the text whole, FixedLength, an unknown type) gets no cut; nor does a text whose cut does not leave the
# margin, which is retried four times longer, up to the whole text.
CHARS_PER_TOKEN = 8  # above the 3-5 characters per token of natural text, so the first cut nearly always does
CUT_MARGIN_WORDS = 2
# A tokenizer that knows fewer than 1/10 of the model's vocabulary rows is not the model's (real ones know them all,
# up to the rows a checkpoint pads its embedding table with).
_MIN_VOCABULARY_SHARE = 10
_LOCAL_NORMALIZERS = frozenset(
    {"BertNormalizer", "ByteLevel", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "Nmt", "Precompiled", "Prepend",
     "Replace", "Strip", "StripAccents", "Sequence"}
)  # fmt: skip
_LOCAL_PRE_TOKENIZERS = frozenset(
    {"BertPreTokenizer", "ByteLevel", "CharDelimiterSplit", "Digits", "Metaspace", "Punctuation", "Split",
     "UnicodeScripts", "Whitespace", "WhitespaceSplit", "Sequence"}
)  # fmt: skip


def first_cut(limit: int) -> int:
    """Characters of a text tokenized first to find its first (or last) ``limit`` tokens."""
    return CHARS_PER_TOKEN * (limit + 16)


def cut_margin(backend: Tokenizer) -> int:
    """Pre-tokenized words between the tokens kept from a cut text and the cut (see above)."""
    added = backend.get_added_tokens_decoder().values()
    return CUT_MARGIN_WORDS + max((len(token.content) for token in added), default=0)


def cuts_locally(backend: Tokenizer) -> bool:
    """Whether the tokenizer's normalizer and pre-tokenizer change only the words a cut touches."""
    return (
        set(_types(backend.normalizer)) <= _LOCAL_NORMALIZERS
        and set(_types(backend.pre_tokenizer)) <= _LOCAL_PRE_TOKENIZERS
    )


def _types(component: Any) -> Iterator[str]:
    """The type names of a normalizer or pre-tokenizer and of everything in it (none for None)."""
    if component is None:
        return
    stack = [json.loads(component.__getstate__())]
    while stack:
        spec = stack.pop()
        yield str(spec.get("type"))
        stack.extend(spec.get("normalizers") or spec.get("pretokenizers") or [])


def bounded_ids(
    backend: Tokenizer,
    texts: list[str],
    limit: int,
    side: str = "right",
    *,
    margin: int | None = None,
    chars: int | None = None,
) -> list[list[int]]:
    """Ids of each text, holding at least its first ``limit`` tokens (its last with ``side="left"``) exactly as
    tokenizing the whole text gives them. Long texts are tokenized from a cut of ``chars`` characters (default
    :func:`first_cut`), grown until the kept tokens lie ``margin`` words (default :func:`cut_margin`) from the
    cut. Only texts longer than the cut cost Python work per text."""
    rows: list[list[int]] = [[] for _ in texts]
    margin = cut_margin(backend) if margin is None else margin
    pending, chars = list(range(len(texts))), chars or first_cut(limit)
    while pending:
        cuts = [_cut(texts[i], chars, side) for i in pending]
        encodings = backend.encode_batch(cuts, add_special_tokens=False)
        retry = []
        for i, cut, encoding in zip(pending, cuts, encodings):
            if cut is texts[i] or _kept_intact(encoding, limit, side, margin):
                rows[i] = encoding.ids
            else:
                retry.append(i)
        pending, chars = retry, chars * 4
    return rows


def _cut(text: str, chars: int, side: str) -> str:
    if len(text) <= chars:
        return text
    return text[-chars:] if side == "left" else text[:chars]


def _kept_intact(encoding: Encoding, limit: int, side: str, margin: int) -> bool:
    """Whether the ``limit`` tokens kept from a cut text lie ``margin`` words away from the cut."""
    n = len(encoding)
    if n <= limit:
        return False  # the cut holds too little text to tell
    if side == "left":
        edge, kept = encoding.token_to_word(0), encoding.token_to_word(n - limit)
        return edge is not None and kept is not None and kept - edge >= margin
    kept, edge = encoding.token_to_word(limit - 1), encoding.token_to_word(n - 1)
    return edge is not None and kept is not None and edge - kept >= margin


# ----------------------------------------------------------------------------- special tokens in text
def plain_text_backend(backend: Tokenizer) -> Tokenizer:
    """A copy of ``backend`` that reads text spelling a special token (``</s>``, ``[SEP]``, ``<eos>``) as plain
    text, so that a document cannot inject separators or answers.

    The copy does not match special added tokens in text (``encode_special_tokens``). A Unigram model also needs
    its special pieces made unmatchable: Hugging Face's SentencePiece conversion keeps the control symbols as
    ordinary pieces with the best possible score, so the model itself would still produce ``</s>`` from text
    (SentencePiece never does); an empty piece never matches. The ids of all other text are unchanged.
    """
    spec = json.loads(backend.to_str())
    specials = {
        token["content"]: token["id"] for token in spec.get("added_tokens") or [] if token.get("special")
    }
    spec["added_tokens"] = [token for token in spec.get("added_tokens") or [] if not token.get("special")]
    model = spec.get("model") or {}
    if model.get("type") == "Unigram":
        for index, piece in enumerate(model["vocab"]):
            if specials.get(piece[0]) == index:
                piece[0] = ""
    plain = Tokenizer.from_str(json.dumps(spec))
    plain.encode_special_tokens = True
    leaked = sorted(text for text, id_ in specials.items() if _reads_as(plain, text, id_))
    if leaked:
        raise ModelLoadError(
            f"split_special_tokens=True cannot be honoured with this tokenizer: its {model.get('type')} model still "
            f"reads {leaked} in text as the special token(s). Drop split_special_tokens."
        )
    return plain


def _reads_as(backend: Tokenizer, text: str, token_id: int) -> bool:
    """Whether ``backend`` reads the whole of ``text`` as the one token ``token_id`` (an unknown-word token for
    part of it, such as WordPiece's [UNK] for ``unk`` in ``[UNK]``, is plain text)."""
    encoding = backend.encode(text, add_special_tokens=False)
    return any(
        id_ == token_id and span == (0, len(text)) for id_, span in zip(encoding.ids, encoding.offsets)
    )


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
    model_name_or_path: str,
    *,
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
    split_special_tokens: bool = False,
) -> TextTokenizer:
    """Load the checkpoint's tokenizer, from ``tokenizer.json`` when it has one.

    ``split_special_tokens``: read text in queries and passages that spells a special token as plain text
    (:func:`plain_text_backend`); by default it becomes the special token, as in FlagEmbedding.
    """
    path = resolve_file(model_name_or_path, "tokenizer.json", cache_dir)
    settings = {
        **read_json(model_name_or_path, "special_tokens_map.json", cache_dir),
        **read_json(model_name_or_path, "tokenizer_config.json", cache_dir),
    }
    model_config = read_json(model_name_or_path, "config.json", cache_dir)
    if path is not None:
        backend = _read_tokenizer_file(path)
    else:
        backend = _backend_from_transformers(model_name_or_path, cache_dir, trust_remote_code)
        _check_fallback_vocabulary(backend, model_config, model_name_or_path)
    backend.no_truncation()
    backend.no_padding()
    bos_id = _special_id(backend, settings, model_config, "bos")
    pad_id = _special_id(backend, settings, model_config, "pad")
    return TextTokenizer(
        backend=backend,
        bos_id=bos_id,
        pad_id=pad_id if pad_id is not None else 0,
        truncation_side=settings.get("truncation_side", "right"),
        text_backend=plain_text_backend(backend) if split_special_tokens else None,
    )


def _read_tokenizer_file(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises a bare Exception for any file it cannot use
        raise ModelLoadError(
            f"Cannot read the tokenizer file {path}: it is unreadable, truncated or not a tokenizers JSON file "
            f"({exc}). Download the checkpoint again, or replace the file with the model's tokenizer.json."
        ) from exc


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


def _check_fallback_vocabulary(
    backend: Tokenizer, model_config: dict[str, Any], model_name_or_path: str
) -> None:
    """Refuse a tokenizer built without the model's vocabulary: transformers builds one from tokenizer_config.json
    alone when the vocabulary files are missing, and it reads every word as the unknown token, so every pair would
    get the same score."""
    model_vocabulary = model_config.get("vocab_size")
    tokens = backend.get_vocab_size(with_added_tokens=True)
    if isinstance(model_vocabulary, int) and tokens * _MIN_VOCABULARY_SHARE < model_vocabulary:
        raise ModelLoadError(
            f"{model_name_or_path!r} has no tokenizer.json, and the tokenizer built from its other files knows "
            f"{tokens} tokens for a model of {model_vocabulary}: its vocabulary file is missing. Copy the model's "
            "tokenizer.json (or its vocabulary file: vocab.txt, sentencepiece.bpe.model, tokenizer.model) into it."
        )


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
