"""What a reranker kind supplies, in one place; everything else is shared.

A kind is a small object registered under its name (see :func:`autorerank.registry.register_kind`). The
shared code calls it in this order, and nothing else:

1. ``matches(config)``: does a checkpoint's ``config.json`` say it is of this kind? (detection, and a check
   before loading with an explicit ``model_class``);
2. ``load(source)``: the weights, as a torch module in ``source.dtype``;
3. ``plan(config, options)``: options checked against the model, once per call, before any work; the plan
   says how many scores each pair gets;
4. ``prepare(tokenizer, model)``: per-model constants (special-token layout, prompt token ids);
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
from ..options import Options
from ..tokenization import TextTokenizer

__all__ = ["Kind", "ModelSource", "Plan", "ScoreModule"]


@dataclass(frozen=True)
class ModelSource:
    """Where a checkpoint is and how to load it."""

    path: str
    dtype: torch.dtype = torch.float32
    cache_dir: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Plan:
    """Checked per-call choices of a kind; ``layers`` lists the layers scored (empty: one final score)."""

    layers: tuple[int, ...] = ()

    @property
    def n_outputs(self) -> int:
        """Scores per pair."""
        return max(1, len(self.layers))


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


class Kind(ABC):
    """The hooks of one reranker kind (see the module docstring for the order they are called in)."""

    name: ClassVar[str]
    features: ClassVar[frozenset[str]] = frozenset()  # option features this kind has (see options.py)
    defaults: ClassVar[Mapping[str, Any]] = {}  # option defaults that differ from the table's
    padding_side: ClassVar[str] = "right"
    backends: ClassVar[tuple[str, ...]] = ("torch",)  # runtimes this kind can run on
    detection_priority: ClassVar[int] = 0  # kinds with a higher value are asked first about a config.json

    def matches(self, config: Mapping[str, Any]) -> bool:
        """Whether a checkpoint's config.json identifies this kind (False: it does not say)."""
        return False

    def check_checkpoint(self, source: ModelSource, config: Mapping[str, Any]) -> None:
        """Refuse, before loading, a checkpoint that cannot be of this kind (default: anything goes)."""

    @abstractmethod
    def load(self, source: ModelSource) -> torch.nn.Module:
        """The weights in ``source.dtype``, in eval mode."""

    def plan(self, config: Any, options: Options) -> Plan:
        """Check the options against the model (its config); raise InvalidOptionError naming the fix."""
        return Plan()

    @abstractmethod
    def prepare(self, tokenizer: TextTokenizer, model: torch.nn.Module) -> Any:
        """Per-model constants that ``encode`` needs."""

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
