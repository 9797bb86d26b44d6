"""Chat rerankers (``decoder-only-yes-no``): a causal LM reads a chat prompt and answers "yes" or "no"; the score
is the log-odds ``logit(yes) - logit(no)`` at the last position.

Two layouts, each reproducing its reference token for token:

- the Qwen3-Reranker model card's recipe (the default): ``prefix + cut(<Instruct>: i\\n<Query>: q\\n<Document>: d)
  + suffix``, the middle text tokenized as one string and cut so the whole input fits ``max_length``;
- a sentence-transformers 6.x CrossEncoder folder's chat template (:mod:`.chat_templates`), as
  ``CrossEncoder.predict`` renders it: the pair as ``query``/``document`` messages (the instruction as a ``system``
  message), the render cut to ``max_length`` and its fixed end written back over the last tokens.

Both become a :class:`ChatLayout`: constant token ids around per-pair text, so a chunk of pairs costs one batched
tokenizer call. ``-seq-cls`` conversions (``...ForSequenceClassification``, one label = the yes-minus-no row) run
the same layouts through their classification head. Only the needed rows of the head run, at the last position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..batching import Batch, Features
from ..compat import dtype_kwargs
from ..errors import ModelLoadError
from ..loading import load_pretrained, read_json
from ..options import PROMPT, Options
from ..registry import RerankerKind, register_kind
from ..reranker import Reranker
from ..tokenization import TextTokenizer, first_cut
from .base import CausalScoreModule, Kind, ModelSource, Plan, ScoreModule
from .chat_templates import ChatLayout, CrossEncoderFolder, escape, folder_layouts, read_cross_encoder_folder

__all__ = ["QWEN3_INSTRUCTION", "YesNoKind", "YesNoLogit", "YesNoReranker", "qwen3_layout"]

QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
_QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
_QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
_QWEN3_CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
QWEN3_MAX_LENGTH = 8192  # the model card's


def qwen3_layout(tokenizer: TextTokenizer, instruction: str | None) -> ChatLayout:
    """The Qwen3-Reranker model card's input: its prefix and suffix tokenized on their own, the instructed pair as
    one text between them, cut so that the whole input fits ``max_length``."""
    text = f"<Instruct>: {QWEN3_INSTRUCTION if instruction is None else instruction}\n<Query>: "
    template = escape(text) + "{query}" + escape("\n<Document>: ") + "{document}"
    suffix = tuple(tokenizer.ids(_QWEN3_SUFFIX))
    return ChatLayout((tuple(tokenizer.ids(_QWEN3_PREFIX)), template, suffix), restore=suffix)


@dataclass(frozen=True)
class ChatPrompt:
    """Per-model constants: the tokenizer (cutting texts at their end), the layout for each instruction, and the
    head rows scored (``(yes, no)``, ``(yes,)``, or None for a one-label classification head)."""

    tokenizer: TextTokenizer
    build: Callable[[str | None], ChatLayout]
    rows: tuple[int, ...] | None
    _layouts: dict[str | None, ChatLayout] = field(default_factory=dict, compare=False, repr=False)

    def layout(self, instruction: str | None) -> ChatLayout:
        if instruction not in self._layouts:  # a few per model: one per instruction used
            self._layouts[instruction] = self.build(instruction)
        return self._layouts[instruction]


class YesNoKind(Kind):
    """Causal LMs that answer "yes" or "no" after a chat prompt: Qwen3-Reranker and its ``-seq-cls`` conversions,
    and sentence-transformers CrossEncoder folders over a causal LM (detected from their files).

    ``prompt`` is the instruction (None: the model card's, or the folder's default prompt); ``query_max_length``
    and ``passage_max_length``, when given, cut the query and the passage to the text of their first tokens
    before the layout (the references have no such limits, so by default nothing is cut but the whole input).
    """

    name = RerankerKind.DECODER_ONLY_YES_NO.value
    features: ClassVar[frozenset[str]] = frozenset({PROMPT})
    defaults: ClassVar[Mapping[str, Any]] = {"max_length": QWEN3_MAX_LENGTH}
    refines: ClassVar[frozenset[str]] = frozenset(
        {RerankerKind.DECODER_ONLY_BASE.value, RerankerKind.ENCODER_ONLY_BASE.value}
    )
    padding_side: ClassVar[str] = "left"  # the answer is read at the last position
    backends = ("torch", "openvino")

    def recognise(self, source: ModelSource) -> str | None:
        folder = read_cross_encoder_folder(source)
        return folder.description if folder is not None else None

    def check_checkpoint(self, source: ModelSource, config: Mapping[str, Any]) -> None:
        if _head_of(config) is None:
            raise ModelLoadError(
                f"{source.path!r} is not a chat reranker: {self.name} needs a causal LM (...ForCausalLM) or its "
                f"one-label ...ForSequenceClassification conversion, and its config.json says architectures="
                f"{config.get('architectures')}. Drop model_class to detect its kind."
            )

    def load(self, source: ModelSource) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        classifier = _head_of(read_json(source.path, "config.json", source.cache_dir)) == "classifier"
        auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
        model: Any = load_pretrained(
            auto,
            source.path,
            kind=self.name,
            cache_dir=source.cache_dir,
            trust_remote_code=source.trust_remote_code,
            **dtype_kwargs(source.dtype),
        )
        if auto is AutoModelForSequenceClassification and model.config.num_labels != 1:
            raise ModelLoadError(
                f"{source.path!r} has a {model.config.num_labels}-label classification head; a -seq-cls chat "
                "reranker has exactly one (the yes-minus-no row)."
            )
        return model

    def prepare(self, tokenizer: TextTokenizer, model: torch.nn.Module) -> ChatPrompt:
        return self.prepare_checkpoint(ModelSource(str(getattr(model, "name_or_path", ""))), tokenizer, model)

    def prepare_checkpoint(
        self, source: ModelSource, tokenizer: TextTokenizer, model: torch.nn.Module
    ) -> ChatPrompt:
        right = dataclasses.replace(tokenizer, truncation_side="right")  # both references cut the text's end
        causal = getattr(model, "get_output_embeddings", lambda: None)() is not None
        folder = read_cross_encoder_folder(source) if source.path else None
        if folder is not None:
            prompt = ChatPrompt(
                right, folder_layouts(folder, source, tokenizer), _folder_rows(folder, causal, source)
            )
        else:
            _check_chat_tokens(tokenizer, source)
            rows = (
                (_token_id(tokenizer, "yes", source), _token_id(tokenizer, "no", source)) if causal else None
            )
            prompt = ChatPrompt(right, lambda instruction: qwen3_layout(tokenizer, instruction), rows)
        prompt.layout(None)  # a template that cannot be laid out fails here, at load
        return prompt

    def encode(
        self, prepared: ChatPrompt, queries: list[str], passages: list[str], options: Options
    ) -> Features:
        queries = _cut_texts(prepared.tokenizer, queries, options.query_max_length)
        passages = _cut_texts(prepared.tokenizer, passages, options.passage_max_length)
        layout = prepared.layout(options.prompt)
        return Features(layout.encode(prepared.tokenizer, queries, passages, int(options.max_length)))

    def score_batch(self, model: torch.nn.Module, batch: Batch, plan: Plan) -> torch.Tensor:
        return model(batch.input_ids, batch.attention_mask)[None]  # (1, B)

    def torch_module(self, model: torch.nn.Module, prepared: ChatPrompt) -> torch.nn.Module:
        return YesNoLogit(model, prepared.rows, shared_starts=True)

    def export_module(self, model: torch.nn.Module, prepared: ChatPrompt) -> ScoreModule:
        return YesNoLogit(model, prepared.rows, shared_starts=False)


class YesNoLogit(CausalScoreModule):
    """A chat reranker cut down to its score at the last position of a left-padded batch: ``logit(yes) -
    logit(no)`` from two rows of the language-model head (one row: that logit alone), or, with ``rows=None``, the
    one-label classification head. The head runs in float32 on the last hidden state only."""

    def __init__(self, model: torch.nn.Module, rows: tuple[int, ...] | None, *, shared_starts: bool) -> None:
        super().__init__(model, shared_starts=shared_starts)
        self.rows = list(rows) if rows is not None else None
        if rows is None and not isinstance(getattr(model, "score", None), torch.nn.Linear):
            raise ModelLoadError(f"{type(model).__name__} has no one-label `score` head to read.")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        last = self.last_hidden(input_ids, attention_mask).float()  # (B, H)
        if self.rows is None:
            head = self.model.score
            logit = last @ head.weight[0].float()  # (B,)
            return logit + head.bias[0].float() if head.bias is not None else logit
        head = self.model.get_output_embeddings()
        logits = last @ head.weight[self.rows].float().T  # (B, R)
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[self.rows].float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits[:, 0] - logits[:, 1] if len(self.rows) == 2 else logits[:, 0]  # (B,)


class YesNoReranker(Reranker):
    """Chat reranker (Qwen3-Reranker, sentence-transformers causal CrossEncoders): ``compute_score`` gives the
    log-odds of "yes", and with ``normalize=True`` the model card's probability ``softmax([no, yes])[yes]``."""


def _head_of(config: Mapping[str, Any]) -> str | None:
    """``"lm"`` for a causal LM, ``"classifier"`` for its sequence-classification conversion, else None."""
    architectures = config.get("architectures") or []
    if any(name.endswith("ForCausalLM") for name in architectures):
        return "lm"
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        return "classifier"
    return None


def _folder_rows(folder: CrossEncoderFolder, causal: bool, source: ModelSource) -> tuple[int, ...] | None:
    if folder.true_id is None:
        if causal:
            raise ModelLoadError(f"{source.path!r}: a causal LM needs a LogitScore module in modules.json.")
        return None
    if not causal:
        raise ModelLoadError(f"{source.path!r}: its LogitScore module needs a causal LM, not a classifier.")
    return (folder.true_id,) if folder.false_id is None else (folder.true_id, folder.false_id)


def _check_chat_tokens(tokenizer: TextTokenizer, source: ModelSource) -> None:
    missing = [token for token in _QWEN3_CHAT_TOKENS if tokenizer.backend.token_to_id(token) is None]
    if missing:
        raise ModelLoadError(
            f"{source.path!r} has no {' '.join(missing)} token(s), which Qwen3-Reranker's chat prompt needs. Save "
            "the model as a sentence-transformers CrossEncoder with its chat template, or pick another model_class."
        )


def _token_id(tokenizer: TextTokenizer, token: str, source: ModelSource) -> int:
    token_id = tokenizer.backend.token_to_id(token)
    if token_id is None:
        raise ModelLoadError(
            f"{source.path!r}: its tokenizer has no {token!r} token to read the answer from."
        )
    return token_id


def _cut_texts(tokenizer: TextTokenizer, texts: list[str], limit: int | None) -> list[str]:
    """Each text cut to the text of its first ``limit`` tokens (None: unchanged)."""
    if limit is None:
        return texts
    backend = tokenizer.text_backend or tokenizer.backend
    heads = [text[: first_cut(limit)] for text in texts]
    encodings = backend.encode_batch(heads, add_special_tokens=False)
    return [
        head[: encoding.offsets[limit - 1][1]] if len(encoding.ids) > limit else text
        for text, head, encoding in zip(texts, heads, encodings)
    ]


register_kind(YesNoKind(), YesNoReranker)
