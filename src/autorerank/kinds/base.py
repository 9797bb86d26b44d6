"""What a reranker kind supplies, in one place; everything else is shared.

A kind is a small object registered under its name (see :func:`autorerank.registry.register_kind`). The
shared code calls it in this order, and nothing else:

1. ``matches(config)``: does a checkpoint's ``config.json`` say it is of this kind? (detection, and a check
   before loading with an explicit ``model_class``). Detection asks ``recognise(source)`` first, for kinds that
   other files identify (a sentence-transformers folder's ``modules.json``), and lets a known model name of a
   kind override config.json's verdict where that verdict is one of the generic kinds in its ``refines``
   (a Qwen3-Reranker name refines a causal-LM config);
2. ``load(source)``: the weights, as a torch module in ``source.dtype``;
3. ``plan(config, options)``: options checked against the model, once per call, before any work; the plan
   says how many scores each pair gets. The shared code calls it through :meth:`Kind.checked_plan`, which also
   checks that the longest input the options allow (``input_size``) fits the checkpoint's position table;
4. ``prepare(tokenizer, model)``: per-model constants (special-token layout, prompt token ids); the shared code
   calls it through ``prepare_checkpoint(source, tokenizer, model)``, which kinds that read more of the
   checkpoint (a chat template, a score module's config) override;
5. ``encode(prepared, queries, passages, options)``: instructed texts -> unpadded token ids;
6. ``score_batch(model, batch, plan)``: one padded batch -> scores ``(n_outputs, B)``.

``torch_module`` and ``export_module`` adapt the loaded weights to a runtime (see :mod:`autorerank.backends`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..batching import Batch, Features
from ..errors import InvalidOptionError
from ..models.shared_prefix import SharedPrefixDecoder
from ..options import Options, query_limit
from ..tokenization import TextTokenizer

__all__ = [
    "CausalScoreModule",
    "InputSize",
    "Kind",
    "ModelSource",
    "Plan",
    "ScoreModule",
    "check_positions",
    "position_limit",
]

# model_types whose absolute position ids start after the padding index (transformers'
# create_position_ids_from_input_ids): the first pad_token_id + 1 rows of their position table hold no text.
_POSITIONS_AFTER_PADDING = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "roberta-prelayernorm", "longformer",
     "ibert", "mpnet", "luke", "xmod", "esm"}
)  # fmt: skip


@dataclass(frozen=True)
class ModelSource:
    """Where a checkpoint is and how to load it."""

    path: str
    dtype: torch.dtype = torch.float32
    cache_dir: str | None = None
    trust_remote_code: bool = False
    # The model will only score through torch or be traced for OpenVINO, with no adapter to merge: a kind may then
    # build a leaner module of its own straight from the checkpoint instead of transformers' model.
    scoring_only: bool = False


@dataclass(frozen=True)
class Plan:
    """Checked per-call choices of a kind; ``layers`` lists the layers scored (empty: one final score)."""

    layers: tuple[int, ...] = ()

    @property
    def n_outputs(self) -> int:
        """Scores per pair."""
        return max(1, len(self.layers))


@dataclass(frozen=True)
class InputSize:
    """How long one model input can get: a first part of at most ``first`` tokens (the query, with what the kind
    puts before it), a second of at most ``second`` (the passage side), the second cut so that both fit ``budget``
    tokens (:func:`~autorerank.tokenization.truncate_second`), then ``tail`` more tokens. ``note`` says, for error
    messages, what the kind adds to ``max_length``."""

    first: int
    second: int
    budget: int
    tail: int = 0
    note: str = ""

    @property
    def longest(self) -> int:
        """The most tokens any input can hold."""
        if self.first < self.budget:
            return min(self.budget, self.first + self.second) + self.tail
        # The first part alone fills the budget: the second is then left whole (HF's only_second, the reference).
        return self.first + self.second + self.tail


def position_limit(config: Mapping[str, Any]) -> int | None:
    """How many tokens one input of this checkpoint can hold (None: its config.json does not say).

    ``max_position_embeddings``, less the rows that RoBERTa-family models skip: their positions start after
    ``pad_token_id``, so 514 positions with padding index 1 hold 512 tokens.
    """
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        return None
    if config.get("model_type") in _POSITIONS_AFTER_PADDING:
        pad = config.get("pad_token_id")
        return positions - ((pad if isinstance(pad, int) else 1) + 1)
    return positions


def check_positions(config: Mapping[str, Any], size: InputSize, options: Options) -> None:
    """Refuse options that let an input outgrow the checkpoint's position table, naming the limit and the fix.

    Past the table torch raises IndexError, ONNX Runtime INVALID_ARGUMENT, and OpenVINO or a rotary LLM return a
    number computed from positions the model never learned; none of them says which option to change.
    """
    limit = position_limit(config)
    if limit is None or size.longest <= limit:
        return
    max_length = int(options.max_length)
    added = size.budget + size.tail - max_length
    if size.first >= size.budget:  # the query side alone fills max_length: passages are not cut at all
        query_extra = size.first - query_limit(options)
        fix = (
            f"the query side alone can take {size.first} tokens, so passages are not cut (as in FlagEmbedding); "
            f"pass a query_max_length below {size.budget - query_extra}, and a max_length that fits"
        )
    elif limit - added >= 1:
        fix = f"pass max_length={limit - added} or less"
    else:
        fix = f"the kind adds {added} tokens by itself: shorten the prompt"
    note = f" ({size.note})" if size.note else ""
    raise InvalidOptionError(
        f"max_length={max_length} lets one input reach {size.longest} tokens{note}, but this checkpoint holds "
        f"at most {limit} ({_limit_source(config, limit)}): {fix}."
    )


def _limit_source(config: Mapping[str, Any], limit: int) -> str:
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    field = "max_position_embeddings" if "max_position_embeddings" in config else "n_positions"
    if positions == limit:
        return f"{field} in its config.json"
    return (
        f"{field} {positions} in its config.json, less {positions - limit} because "
        f"{config.get('model_type')} positions start after the padding index"
    )


class ScoreModule(torch.nn.Module):
    """A loaded model cut down to its scores, ``(input_ids, attention_mask[, token_type_ids]) -> (B,)``: what
    the torch runtime can run and other runtimes trace. ``model`` is the loaded model, ``input_names`` the
    inputs ``forward`` reads, ``padding_side`` where its batches are padded."""

    def __init__(
        self, model: torch.nn.Module, input_names: tuple[str, ...], padding_side: str = "right"
    ) -> None:
        super().__init__()
        self.model: Any = model  # a transformers model: attributes typed by convention, not by stubs
        self.config: Any = model.config
        self.input_names = input_names
        self.padding_side = padding_side


class CausalScoreModule(ScoreModule):
    """A causal LM read at the last position of a left-padded batch. Run by the torch runtime
    (``shared_starts=True``), the start that a batch's rows share (system prompt, instruction, query) goes
    through the model once and is kept for later batches (:mod:`..models.shared_prefix`); exported for another
    runtime, it is the plain forward."""

    def __init__(self, model: torch.nn.Module, *, shared_starts: bool) -> None:
        super().__init__(model, ("input_ids", "attention_mask"), padding_side="left")
        self.decoder = SharedPrefixDecoder(model, enabled=shared_starts)

    def last_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.decoder.last_hidden(input_ids, attention_mask)  # (B, H)


class Kind(ABC):
    """The hooks of one reranker kind (see the module docstring for the order they are called in)."""

    name: ClassVar[str]
    features: ClassVar[frozenset[str]] = frozenset()  # option features this kind has (see options.py)
    defaults: ClassVar[Mapping[str, Any]] = {}  # option defaults that differ from the table's
    padding_side: ClassVar[str] = "right"
    backends: ClassVar[tuple[str, ...]] = ("torch",)  # runtimes this kind can run on
    detection_priority: ClassVar[int] = 0  # kinds with a higher value are asked first about a config.json
    # kinds whose config.json verdict this kind's known model names override (detection)
    refines: ClassVar[frozenset[str]] = frozenset()

    def matches(self, config: Mapping[str, Any]) -> bool:
        """Whether a checkpoint's config.json identifies this kind (False: it does not say)."""
        return False

    def recognise(self, source: ModelSource) -> str | None:
        """Whether files of the checkpoint other than config.json identify this kind, asked before config.json:
        the rule that matched (for ``detected_by``), or None."""
        return None

    def check_checkpoint(self, source: ModelSource, config: Mapping[str, Any]) -> None:
        """Refuse, before loading, a checkpoint that cannot be of this kind (default: anything goes)."""

    @abstractmethod
    def load(self, source: ModelSource) -> torch.nn.Module:
        """The weights in ``source.dtype``, in eval mode."""

    def plan(self, config: Any, options: Options) -> Plan:
        """Check the options against the model (its config); raise InvalidOptionError naming the fix."""
        return Plan()

    def input_size(self, tokenizer: TextTokenizer, options: Options) -> InputSize:
        """How long ``encode`` can make one input with these options (default: ``max_length`` tokens at most)."""
        return InputSize(first=0, second=int(options.max_length), budget=int(options.max_length))

    def checked_plan(self, config: Mapping[str, Any], options: Options, tokenizer: TextTokenizer) -> Plan:
        """``plan``, and the longest input these options allow checked against the checkpoint's position table:
        what the shared code calls, at construction and for each call's options, in every process.

        A checkpoint whose config.json names another kind is left to loading, which says that it does not fit
        (an error about lengths laid out for the wrong kind would send the user after the wrong option)."""
        plan = self.plan(config, options)
        if not self._names_another_kind(config):
            check_positions(config, self.input_size(tokenizer, options), options)
        return plan

    def _names_another_kind(self, config: Mapping[str, Any]) -> bool:
        from ..registry import registered_kinds

        return not self.matches(config) and any(
            kind.matches(config)
            for kind in registered_kinds()
            if kind.name != self.name and kind.name not in self.refines
        )

    @abstractmethod
    def prepare(self, tokenizer: TextTokenizer, model: torch.nn.Module) -> Any:
        """Per-model constants that ``encode`` needs."""

    def prepare_checkpoint(
        self, source: ModelSource, tokenizer: TextTokenizer, model: torch.nn.Module
    ) -> Any:
        """``prepare``, knowing where the checkpoint is (what the shared code calls)."""
        return self.prepare(tokenizer, model)

    @abstractmethod
    def encode(self, prepared: Any, queries: list[str], passages: list[str], options: Options) -> Features:
        """Tokenize and lay out instructed pairs, unpadded."""

    @abstractmethod
    def score_batch(self, model: torch.nn.Module, batch: Batch, plan: Plan) -> torch.Tensor:
        """Scores of one padded batch: ``(plan.n_outputs, B)``."""

    def torch_module(self, model: torch.nn.Module, prepared: Any) -> torch.nn.Module:
        """The module the torch runtime runs (a leaner twin of the loaded one, where the kind has one)."""
        return model

    def export_module(self, model: torch.nn.Module, prepared: Any) -> ScoreModule:
        """The scores as one traceable module, for runtimes other than torch (kinds listing them in ``backends``)."""
        raise NotImplementedError(f"{self.name} runs on torch only")
