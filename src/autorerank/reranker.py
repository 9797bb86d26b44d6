"""The shared reranker: everything that does not depend on the kind of model.

A kind (one file in ``kinds/``) supplies three hooks: ``_load_model`` (load the weights),
``_encode`` (texts -> token features) and ``_score_batch`` (one padded batch -> scores).
Input checks, instructions, de-duplication, length sorting, token-budget batching, restoring
order, normalisation, progress bars and multi-device work live here, once.
"""

from __future__ import annotations

import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import Batch, Features, collate, default_batch_tokens, plan_batches
from .devices import DeviceSpec, resolve_devices, resolve_dtype
from .errors import InvalidOptionError, UnknownOptionError
from .inputs import Instructions, as_documents, as_pairs
from .loading import merge_peft, normalize_model_path
from .options import AUTO, ScoringOptions
from .registry import RerankerKind
from .results import ModelInfo, RerankResult
from .tokenization import TextTokenizer, load_tokenizer

__all__ = ["Reranker", "Scores"]

logger = logging.getLogger(__name__)

Scores = list  # list[float], or list[list[float]] (one list per layer) for several cutoff layers

# Pairs tokenized per step: the next chunk is tokenized while the model scores this one.
_CHUNK_PAIRS = 4096

_COMMON_CALL_OPTIONS = frozenset(
    {
        "batch_size",
        "max_batch_tokens",
        "query_max_length",
        "max_length",
        "passage_max_length",
        "normalize",
        "show_progress",
    }
)


class Reranker(ABC):
    """Scores (query, passage) pairs with one loaded model.

    Construct through :meth:`autorerank.AutoReranker.from_finetuned` or a kind's class
    (``FlagReranker``, ``FlagLLMReranker``, ...). Options set here are defaults that
    ``compute_score`` can override per call. Unknown keyword arguments raise ``TypeError``.
    """

    kind: ClassVar[RerankerKind]
    padding_side: ClassVar[str] = "right"
    kind_options: ClassVar[frozenset[str]] = frozenset()  # options beyond the common ones
    ignored_call_options: ClassVar[frozenset[str]] = frozenset()  # accepted for compatibility, no effect
    deprecated_aliases: ClassVar[Mapping[str, str]] = {}

    def __new__(cls, *args: Any, **kwargs: Any) -> Reranker:
        self = super().__new__(cls)
        self._construction = (args, kwargs)  # lets worker processes build the same reranker
        return self

    def __init__(
        self,
        model_name_or_path: str,
        *,
        use_fp16: bool = False,
        use_bf16: bool = False,
        peft_path: str | None = None,
        query_instruction_for_rerank: str | None = None,
        query_instruction_format: str = "{}{}",
        passage_instruction_for_rerank: str | None = None,
        passage_instruction_format: str = "{}{}",
        devices: DeviceSpec = None,
        batch_size: int = 128,
        max_batch_tokens: int | str | None = AUTO,
        query_max_length: int | None = None,
        max_length: int = 512,
        passage_max_length: int | None = None,
        normalize: bool = False,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
        show_progress: bool | None = None,
        **kind_options: Any,
    ) -> None:
        kind_options = self._resolve_aliases(kind_options)
        self._reject_unknown(kind_options, self.kind_options, "__init__")
        self.model_name_or_path = normalize_model_path(model_name_or_path)
        self.devices = resolve_devices(devices)
        self.dtype = resolve_dtype(use_fp16, use_bf16, self.devices)
        self.detected_by = f"constructed directly as {type(self).__name__}"
        self.instructions = Instructions(
            query_instruction_for_rerank,
            query_instruction_format,
            passage_instruction_for_rerank,
            passage_instruction_format,
        )
        self.options = ScoringOptions(
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            query_max_length=query_max_length,
            max_length=max_length,
            passage_max_length=passage_max_length,
            normalize=normalize,
            show_progress=show_progress,
            **kind_options,
        )
        self.tokenizer: TextTokenizer = load_tokenizer(
            self.model_name_or_path, cache_dir=cache_dir, trust_remote_code=trust_remote_code
        )
        model = self._load_model(cache_dir=cache_dir, trust_remote_code=trust_remote_code)
        if peft_path:
            model = merge_peft(model, peft_path)
        model = self._runtime_model(model)
        # Several devices: this copy stays on the CPU; each worker process loads its own.
        self.device = torch.device(self.devices[0] if len(self.devices) == 1 else "cpu")
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self._pool = None
        self._validate_options(self.options)

    # ----------------------------------------------------------------- kind hooks
    @abstractmethod
    def _load_model(self, *, cache_dir: str | None, trust_remote_code: bool) -> torch.nn.Module:
        """Load the weights (in ``self.dtype``) of the checkpoint at ``self.model_name_or_path``."""

    @abstractmethod
    def _encode(self, queries: list[str], passages: list[str], options: ScoringOptions) -> Features:
        """Tokenize and assemble pairs (instructions already applied), unpadded."""

    @abstractmethod
    def _score_batch(self, batch: Batch, options: ScoringOptions) -> torch.Tensor:
        """Scores of one padded batch: shape ``(n_outputs, B)``."""

    def _runtime_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module that will run the weights (another runtime, such as ONNX Runtime, may wrap them)."""
        return model

    def _n_outputs(self, options: ScoringOptions) -> int:
        """Scores per pair (one per cutoff layer for the layer-wise kinds)."""
        return 1

    def _validate_options(self, options: ScoringOptions) -> None:
        """Reject option values this model cannot honour, before any work is done."""

    # ----------------------------------------------------------------- public API
    def compute_score(
        self, sentence_pairs: Sequence[Sequence[str]] | Sequence[str], **options: Any
    ) -> Scores:
        """Score pairs; returns one float per pair, in input order.

        With several ``cutoff_layers`` (layer-wise kinds) it returns one list per layer, in the
        order the layers were given. Keyword options override the constructor's for this call.
        """
        call_options = self._options_for_call(options)
        pairs = as_pairs(sentence_pairs)
        if not pairs:
            return []
        queries, passages = self.instructions.apply(pairs)
        if self._pool_needed():
            scores = self._worker_pool().score(queries, passages, call_options)
        else:
            scores = self.score_texts(queries, passages, call_options)
        return self._format(scores, call_options)

    def rerank(
        self, query: str, documents: Sequence[str], top_k: int | None = None, **options: Any
    ) -> list[RerankResult]:
        """Documents ordered by relevance to ``query`` (best first), at most ``top_k`` of them."""
        documents = as_documents(query, documents)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            raise InvalidOptionError(f"top_k must be a non-negative int or None, got {top_k!r}.")
        scores = self.compute_score([(query, document) for document in documents], **options)
        if scores and isinstance(scores[0], list):
            raise InvalidOptionError("rerank needs one score per document: pass a single cutoff layer.")
        order = sorted(range(len(documents)), key=lambda i: -scores[i])
        return [RerankResult(i, scores[i], documents[i]) for i in order[:top_k]]

    @property
    def info(self) -> ModelInfo:
        config = getattr(self.model, "config", None)
        architectures = getattr(config, "architectures", None) or [type(self.model).__name__]
        return ModelInfo(
            kind=self.kind.value,
            detected_by=self.detected_by,
            architecture=architectures[0],
            num_parameters=sum(parameter.numel() for parameter in self.model.parameters()),
            max_length=self.options.max_length,
            dtype=str(self.dtype).removeprefix("torch."),
            devices=tuple(self.devices),
        )

    def close(self) -> None:
        """Stop worker processes, if any. Safe to call twice."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Reranker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self.close()

    # ----------------------------------------------------------------- the pipeline
    def score_texts(self, queries: list[str], passages: list[str], options: ScoringOptions) -> np.ndarray:
        """Raw scores ``(n_outputs, N)`` of instructed texts on this process's device.

        Identical pairs are scored once. Tokenizing the next chunk overlaps the model's work on this one.
        """
        unique_index: dict[tuple[str, str], int] = {}
        inverse = np.fromiter(
            (unique_index.setdefault(pair, len(unique_index)) for pair in zip(queries, passages)),
            dtype=np.int64,
            count=len(queries),
        )
        unique_queries = [pair[0] for pair in unique_index]
        unique_passages = [pair[1] for pair in unique_index]
        scores = np.empty((self._n_outputs(options), len(unique_index)), dtype=np.float32)
        starts = range(0, len(unique_index), _CHUNK_PAIRS)
        with self._progress(len(unique_index), options) as bar, ThreadPoolExecutor(1) as tokenizer_thread:

            def encode_chunk(start: int):
                end = start + _CHUNK_PAIRS
                return tokenizer_thread.submit(
                    self._encode, unique_queries[start:end], unique_passages[start:end], options
                )

            pending = encode_chunk(0)
            for start in starts:
                features = pending.result()
                if start + _CHUNK_PAIRS < len(unique_index):
                    pending = encode_chunk(start + _CHUNK_PAIRS)
                scores[:, start : start + len(features)] = self._score_features(features, options, bar)
        return scores[:, inverse]

    def _score_features(self, features: Features, options: ScoringOptions, bar: tqdm) -> np.ndarray:
        scores = np.empty((self._n_outputs(options), len(features)), dtype=np.float32)
        budget = options.max_batch_tokens
        if budget == AUTO:
            budget = default_batch_tokens(self.device, getattr(self.model, "config", None))
        plan = plan_batches(features.lengths, max_pairs=options.batch_size, max_tokens=budget)
        with torch.inference_mode():
            for rows, batch in self._collated(features, plan):
                scores[:, rows] = self._score_batch(batch, options).float().cpu().numpy()
                bar.update(len(rows))
        return scores

    def _collated(self, features: Features, plan: list[np.ndarray]) -> Iterator[tuple[np.ndarray, Batch]]:
        for rows in plan:
            yield (
                rows,
                collate(
                    features, rows, pad_id=self.tokenizer.pad_id, side=self.padding_side, device=self.device
                ),
            )

    def _progress(self, total: int, options: ScoringOptions) -> tqdm:
        show = options.show_progress
        many = total > options.batch_size
        return tqdm(
            total=total, unit="pairs", desc="Scoring", disable=(not many) if show is None else not show
        )

    def _format(self, scores: np.ndarray, options: ScoringOptions) -> Scores:
        values = scores.astype(np.float64)
        if options.normalize:
            values = 1.0 / (1.0 + np.exp(-values))
        if self._n_outputs(options) == 1:
            return values[0].tolist()
        return values.tolist()

    # ----------------------------------------------------------------- options and workers
    def _resolve_aliases(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Rename deprecated option names (with a warning); the new name wins when both are given."""
        given = dict(given)
        for old, new in self.deprecated_aliases.items():
            if old in given:
                warnings.warn(f"{old}= is deprecated; use {new}= instead.", DeprecationWarning, stacklevel=4)
                value = given.pop(old)
                if given.get(new) is None:
                    given[new] = value
        return given

    def _options_for_call(self, overrides: dict[str, Any]) -> ScoringOptions:
        overrides = self._resolve_aliases(overrides)
        for name in self.ignored_call_options & overrides.keys():
            logger.debug("compute_score(%s=...) has no effect in autorerank; ignored.", name)
            overrides.pop(name)
        self._reject_unknown(overrides, _COMMON_CALL_OPTIONS | self.kind_options, "compute_score")
        if not overrides:
            return self.options
        options = self.options.updated(overrides)
        self._validate_options(options)
        return options

    def _reject_unknown(self, given: Mapping[str, Any], allowed: frozenset[str], method: str) -> None:
        unknown = sorted(set(given) - allowed)
        if unknown:
            raise UnknownOptionError(
                f"{type(self).__name__}.{method}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"accepted options: {', '.join(sorted(allowed))}.",
                unknown,
            )

    def _pool_needed(self) -> bool:
        return len(self.devices) > 1

    def _worker_pool(self):
        if self._pool is None or self._pool.closed:
            from .pool import WorkerPool

            args, kwargs = self._construction
            self._pool = WorkerPool(type(self), args, kwargs, self.devices)
        return self._pool
