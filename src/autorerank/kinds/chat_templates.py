"""Chat-prompt input layouts, and the sentence-transformers CrossEncoder folders that carry a chat template.

A :class:`ChatLayout` is one model input per pair as constant token ids around per-pair text. A chat template is
turned into one by rendering it once with placeholder texts and splitting the render at the tokenizer's added
tokens (``<|im_start|>``, ``<think>``): the ``tokenizers`` library cuts text at added tokens before anything else,
so each piece between them tokenizes on its own. The split is checked against whole renders before use.

sentence-transformers 6.x ``CrossEncoder.predict`` renders a pair as a ``query`` and a ``document`` message (a
prompt goes first, as a ``system`` message), tokenizes the render, cuts it to the maximum length and writes the
template's fixed end back over the last tokens of a cut row: the end is the longest run of tokens that renders
with the contents ``"0"`` and ``"1 2 3 4"`` share. Its ``LogitScore`` module scores ``logit(true) -
logit(false)`` at the last position (``logit(true)`` without a false token).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from ..errors import InvalidOptionError, ModelLoadError
from ..loading import read_json, resolve_file
from ..ragged import Ragged
from ..tokenization import TextTokenizer
from .base import ModelSource

__all__ = ["ChatLayout", "CrossEncoderFolder", "escape", "folder_layouts", "read_cross_encoder_folder"]

_QUERY, _DOCUMENT = "\ue000query\ue001", "\ue000document\ue001"  # private-use placeholders
# Contents a layout must reproduce exactly (whitespace at both ends, braces, a newline) before it is used.
_PROBES = (("  what is {x}?\n", "\tA document: with {braces}.\n "), ("q", ""))
_FILLERS = ("0", "1 2 3 4")  # sentence-transformers' contents for finding a template's fixed end
# Chat templates that index message content as a list read "structured" messages (sentence-transformers' rule).
_STRUCTURED_HINTS = ("content[0]", ".type", "'type'", '"type"', "message.content[")


@dataclass(frozen=True)
class ChatLayout:
    """One model input per pair: ``parts`` in order, each constant token ids or per-pair text (a ``str.format``
    template with ``{query}`` and ``{document}``); an input reaching ``max_length`` tokens is cut to
    ``max_length - len(restore)`` and ``restore`` appended, so the model still reads the prompt's end."""

    parts: tuple[str | tuple[int, ...], ...]
    restore: tuple[int, ...]

    @property
    def framing(self) -> int:
        """Constant tokens every input holds."""
        return sum(len(part) for part in self.parts if isinstance(part, tuple))

    def encode(
        self, tokenizer: TextTokenizer, queries: list[str], passages: list[str], max_length: int
    ) -> Ragged:
        """Token ids of each pair, at most ``max_length`` of them (``tokenizer`` cuts texts at their end)."""
        if max_length <= max(self.framing, len(self.restore)):
            raise InvalidOptionError(
                f"max_length={max_length} leaves no room for the query and the document: this model's chat "
                f"prompt alone takes {self.framing} tokens. Pass a larger max_length."
            )
        n = len(queries)
        pieces = [
            Ragged.constant(part, n)
            if isinstance(part, tuple)
            else tokenizer.encode(
                [part.format(query=q, document=d) for q, d in zip(queries, passages)], max_length
            )
            for part in self.parts
        ]
        return restore_end(Ragged.concat(pieces), max_length, self.restore)


def restore_end(ids: Ragged, max_length: int, restore: tuple[int, ...]) -> Ragged:
    """Rows cut to ``max_length`` tokens; a row that reached it keeps its first ``max_length - len(restore)``
    tokens and ends with ``restore`` (right truncation, then the prompt's end written back)."""
    kept = min(len(restore), max_length)
    reached = ids.lengths >= max_length  # (N,)
    head = ids.head(np.where(reached, max_length - kept, ids.lengths))
    end = np.asarray(restore[len(restore) - kept :], dtype=np.int64)
    tail = Ragged(np.tile(end, int(reached.sum())), Ragged.filled(np.where(reached, kept, 0), 0).offsets)
    return Ragged.concat([head, tail])


def escape(text: str) -> str:
    """``text`` as literal text in a ``str.format`` template."""
    return text.replace("{", "{{").replace("}", "}}")


# ----------------------------------------------------------------------------- sentence-transformers folders
@dataclass(frozen=True)
class CrossEncoderFolder:
    """What a sentence-transformers CrossEncoder folder says about scoring a pair."""

    description: str  # the detection rule, for ``detected_by``
    chat_template: str
    structured: bool  # message content as [{"type": "text", "text": ...}] rather than a string
    true_id: int | None  # LogitScore's tokens; None: the classification head's one logit
    false_id: int | None
    default_prompt: str | None


def read_cross_encoder_folder(source: ModelSource) -> CrossEncoderFolder | None:
    """The folder's scoring facts when sentence-transformers would score its pairs through a chat template: a
    ``modules.json`` of a Transformer module (at the folder's root) and optionally a ``LogitScore`` module, and a
    chat template. None for anything else, classic cross-encoder folders included."""
    modules: Any = read_json(source.path, "modules.json", source.cache_dir)
    if not isinstance(modules, list) or not modules or not all(isinstance(m, dict) for m in modules):
        return None
    types = [str(module.get("type", "")).rsplit(".", 1)[-1] for module in modules]
    if types[0] != "Transformer" or modules[0].get("path") or types[1:] not in ([], ["LogitScore"]):
        return None
    if types[1:] and not modules[1].get("path"):
        return None
    settings = read_json(source.path, "sentence_bert_config.json", source.cache_dir)
    template = _chat_template(source)
    modality = settings.get("modality_config")
    if template is None or (isinstance(modality, dict) and "message" not in modality):
        return None  # sentence-transformers reads such pairs as a plain text pair
    logit_score = (
        read_json(source.path, f"{modules[1].get('path')}/config.json", source.cache_dir) if types[1:] else {}
    )
    if not logit_score and settings.get("transformer_task") != "sequence-classification":
        return None
    message = modality.get("message") if isinstance(modality, dict) else None
    form = message.get("format") if isinstance(message, dict) else None
    if form not in ("flat", "structured"):
        form = "structured" if any(hint in template for hint in _STRUCTURED_HINTS) else "flat"
    prompts = read_json(source.path, "config_sentence_transformers.json", source.cache_dir)
    default_name = prompts.get("default_prompt_name")
    head = "LogitScore" if logit_score else f"Transformer ({settings.get('transformer_task')})"
    return CrossEncoderFolder(
        description=f"sentence-transformers CrossEncoder files (modules.json: Transformer + {head}, chat template)"
        if logit_score
        else f"sentence-transformers CrossEncoder files (modules.json: {head}, chat template)",
        chat_template=template,
        structured=form == "structured",
        true_id=logit_score.get("true_token_id") if logit_score else None,
        false_id=logit_score.get("false_token_id") if logit_score else None,
        default_prompt=(prompts.get("prompts") or {}).get(default_name) if default_name else None,
    )


def _chat_template(source: ModelSource) -> str | None:
    """The tokenizer's chat template: ``chat_template.jinja``, else ``tokenizer_config.json``'s (the default one
    of a list of named templates)."""
    path = resolve_file(source.path, "chat_template.jinja", source.cache_dir)
    if path is not None:
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"Cannot read {path}: {exc}") from exc
    template = read_json(source.path, "tokenizer_config.json", source.cache_dir).get("chat_template")
    if isinstance(template, list):
        template = next((item.get("template") for item in template if item.get("name") == "default"), None)
    return template if isinstance(template, str) and template else None


def folder_layouts(
    folder: CrossEncoderFolder, source: ModelSource, tokenizer: TextTokenizer
) -> Callable[[str | None], ChatLayout]:
    """The layout for each instruction (None: the folder's default prompt, if any), as ``predict`` lays it out."""
    from ..flag_api import hf_tokenizer

    settings = {
        **read_json(source.path, "special_tokens_map.json", source.cache_dir),
        **read_json(source.path, "tokenizer_config.json", source.cache_dir),
    }
    renderer = hf_tokenizer(tokenizer, settings)
    backend = tokenizer.backend

    def layout(instruction: str | None) -> ChatLayout:
        system = folder.default_prompt if instruction is None else instruction

        def render(query: str, document: str) -> str:
            return _render(renderer, folder, system, query, document)

        chat = ChatLayout(_split(backend, render(_QUERY, _DOCUMENT), source), _fixed_end(backend, render))
        _check(chat, backend, render, source)
        return chat

    return layout


def _render(renderer: Any, folder: CrossEncoderFolder, system: str | None, query: str, document: str) -> str:
    def message(role: str, text: str) -> dict[str, Any]:
        return {"role": role, "content": [{"type": "text", "text": text}] if folder.structured else text}

    messages = ([message("system", system)] if system else []) + [
        message("query", query),
        message("document", document),
    ]
    import jinja2

    try:
        return str(renderer.apply_chat_template(messages, chat_template=folder.chat_template, tokenize=False))
    except (jinja2.TemplateError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"The chat template cannot render a (query, document) pair: {exc}") from exc


def _ids(backend: Tokenizer, text: str) -> list[int]:
    return backend.encode(text, add_special_tokens=False).ids


def _split(backend: Tokenizer, render: str, source: ModelSource) -> tuple[str | tuple[int, ...], ...]:
    """A render with placeholders as layout parts, cut at the added tokens."""
    if (
        render.count(_QUERY) != 1
        or render.count(_DOCUMENT) != 1
        or render.index(_QUERY) > render.index(_DOCUMENT)
    ):
        raise ModelLoadError(
            f"The chat template of {source.path!r} does not put the query, then the document, once each in the "
            "prompt; autorerank cannot lay it out. Score this model with sentence-transformers."
        )
    added = backend.get_added_tokens_decoder()
    encoding = backend.encode(render, add_special_tokens=False)
    parts: list[str | tuple[int, ...]] = []
    position = 0
    for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
        if token_id in added:
            parts += [_plain(backend, render[position:start]), (token_id,)]
            position = end
    parts.append(_plain(backend, render[position:]))
    merged: list[str | tuple[int, ...]] = []
    for part in parts:
        if isinstance(part, tuple) and merged and isinstance(merged[-1], tuple):
            merged[-1] = merged[-1] + part
        elif part != ():
            merged.append(part)
    return tuple(merged)


def _plain(backend: Tokenizer, text: str) -> str | tuple[int, ...]:
    """Text between added tokens: a per-pair template where it holds a placeholder, else its constant ids."""
    if _QUERY in text or _DOCUMENT in text:
        return escape(text).replace(_QUERY, "{query}").replace(_DOCUMENT, "{document}")
    return tuple(_ids(backend, text))


def _fixed_end(backend: Tokenizer, render: Callable[[str, str], str]) -> tuple[int, ...]:
    """The tokens renders with different contents end with (sentence-transformers' suffix rule)."""
    first, second = (_ids(backend, render(filler, filler)) for filler in _FILLERS)
    count = 0
    for left, right in zip(reversed(first), reversed(second)):
        if left != right:
            break
        count += 1
    return tuple(first[len(first) - count :]) if 0 < count < min(len(first), len(second)) else ()


def _check(
    chat: ChatLayout, backend: Tokenizer, render: Callable[[str, str], str], source: ModelSource
) -> None:
    """Refuse a layout that does not give the ids of whole renders (a template that edits the contents, or an
    added token that strips the text next to it)."""
    for query, document in _PROBES:
        laid_out = [
            token
            for part in chat.parts
            for token in (
                part
                if isinstance(part, tuple)
                else _ids(backend, part.format(query=query, document=document))
            )
        ]
        if laid_out != _ids(backend, render(query, document)):
            raise ModelLoadError(
                f"The chat template of {source.path!r} changes the query or document text (or its tokenizer strips "
                "text around its special tokens), so autorerank cannot reproduce its inputs. Score this model with "
                "sentence-transformers."
            )
