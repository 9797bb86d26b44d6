"""The reranker users hold: loading, the public scoring API, and the FlagEmbedding-compatible surface.

What depends on the kind lives in the kind object (``kinds/``); what depends on the runtime in the runtime
(``backends/``); the scoring loop in :mod:`autorerank.pipeline`; option rules in :mod:`autorerank.options`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from .backends import Runtime, build_runtime, check_backend
from .devices import DeviceSpec, resolve_devices, resolve_dtype
from .errors import InvalidOptionError
from .flag_api import flat_scores, hf_tokenizer
from .inputs import Instructions, as_documents, as_pairs
from .kinds.base import Kind, ModelSource, Plan
from .loading import merge_peft, normalize_model_path, read_json
from .options import Options, call_options, constructor_options, is_option, option
from .pipeline import Engine, InputLengths, TextChunk, chunked, finish_scores, unique_pairs
from .registry import kind_named
from .results import ModelInfo, RerankResult
from .tokenization import TextTokenizer, load_tokenizer

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Reranker"]


class Reranker:
    """Scores (query, passage) pairs with one loaded model.

    Construct through :meth:`autorerank.AutoReranker.from_finetuned` or a kind's class (``FlagReranker``,
    ``FlagLLMReranker``, ...). Options (see :mod:`autorerank.options`) set here are defaults that
    ``compute_score`` can override per call. With several ``devices`` each device is scored by a worker process
    that holds its own copy of the model; this object then holds none. Arguments after the model path may be
    given by position in FlagEmbedding's order for the class (``positional``).
    """

    kind: ClassVar[str]
    positional: ClassVar[tuple[str, ...]] = ()  # FlagEmbedding's parameter order after model_name_or_path

    def __init__(self, model_name_or_path: str, *args: Any, **options: Any) -> None:
        options = self._with_positional(args, options)
        kind = kind_named(self.kind)
        self._kind: Kind = kind
        self._given = dict(options)
        self._ignored = {name: value for name, value in options.items() if not is_option(name)}
        self.options: Options = constructor_options(
            type(self).__name__, kind.features, kind.defaults, options
        )
        settings = self.options
        self.model_name_or_path = normalize_model_path(model_name_or_path)
        self.devices = resolve_devices(settings.devices)
        check_backend(kind, settings.backend, settings.quantize, settings.onnx_dir, self.devices)
        self.dtype = resolve_dtype(
            settings.use_fp16, settings.use_bf16, self.devices, settings.precision, settings.backend
        )
        self.detected_by = f"constructed directly as {type(self).__name__}"
        self.instructions = Instructions(
            settings.query_instruction_for_rerank,
            settings.query_instruction_format,
            settings.passage_instruction_for_rerank,
            settings.passage_instruction_format,
        )
        source = ModelSource(
            self.model_name_or_path,
            self.dtype,
            settings.cache_dir,
            settings.trust_remote_code,
            scoring_only=settings.backend in ("torch", "openvino") and not settings.peft_path,
        )
        self.config = read_json(source.path, "config.json", source.cache_dir)
        kind.check_checkpoint(source, self.config)
        self.text_tokenizer: TextTokenizer = load_tokenizer(
            source.path,
            cache_dir=source.cache_dir,
            trust_remote_code=source.trust_remote_code,
            split_special_tokens=settings.split_special_tokens,
        )
        self._plan = self._plan_for(self.options)  # the constructor's options, checked once
        self._engine: Engine | None = None
        self._pool: Any = None
        self._siblings: dict[str, Reranker] = {}  # single-device rerankers made by compute_score_single_gpu
        self._hf_tokenizer: Any = None
        if len(self.devices) == 1:
            self._engine = self._load_engine(source, torch.device(self.devices[0]))
        else:
            self._worker_pool()
        self._ready = True

    def _load_engine(self, source: ModelSource, device: torch.device) -> Engine:
        kind, settings = self._kind, self.options
        model = kind.load(source)
        if settings.peft_path:
            model = merge_peft(model, settings.peft_path)
        prepared = kind.prepare_checkpoint(source, self.text_tokenizer, model)
        runtime = build_runtime(
            kind,
            model,
            prepared,
            backend=settings.backend,
            device=device,
            dtype=self.dtype,
            quantize=settings.quantize,
            onnx_dir=settings.onnx_dir,
            model_name_or_path=source.path,
        )
        return Engine(kind, prepared, runtime, self.text_tokenizer.pad_id, self.config)

    def _with_positional(self, args: tuple[Any, ...], options: dict[str, Any]) -> dict[str, Any]:
        names = type(self).positional
        if len(args) > len(names):
            raise TypeError(
                f"{type(self).__name__}() takes at most {len(names) + 1} positional arguments "
                f"(model_name_or_path, {', '.join(names)}), got {len(args) + 1}."
            )
        for name, value in zip(names, args):
            if name in options:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
            options[name] = value
        return options

    # ----------------------------------------------------------------- public API
    def compute_score(
        self, sentence_pairs: Sequence[Sequence[str]] | Sequence[str], **options: Any
    ) -> list[float] | list[list[float]] | np.ndarray:
        """Score pairs; returns one float per pair, in input order.

        With several ``cutoff_layers`` (layer kinds) it returns one list per layer, in the order the layers were
        given, as FlagEmbedding does; :meth:`compute_layer_scores` always returns one list per layer. Keyword
        options override the constructor's for this call. With several devices the result is a numpy array
        (FlagEmbedding returns one there, and code calls ``.tolist()`` on it).
        """
        layers = self.compute_layer_scores(sentence_pairs, **options)
        scores = layers[0] if len(layers) == 1 else layers
        return np.asarray(scores) if len(self.devices) > 1 else scores

    def compute_layer_scores(
        self, sentence_pairs: Sequence[Sequence[str]] | Sequence[str], **options: Any
    ) -> list[list[float]]:
        """Scores as one list per scored layer (a single list for kinds without layers), in input order."""
        call, plan = self._call(options)
        queries, passages = self.instructions.apply(as_pairs(sentence_pairs))
        return self._layer_scores(queries, passages, call, plan)

    def _layer_scores(
        self, queries: list[str], passages: list[str], call: Options, plan: Plan
    ) -> list[list[float]]:
        if not queries:
            return [[] for _ in range(plan.n_outputs)]
        unique = unique_pairs(queries, passages)
        chunks = chunked(unique.queries, unique.passages)
        with self._progress(len(unique.queries), call) as bar:
            scores = np.concatenate(list(self._score_chunks(chunks, call, plan, bar)), axis=1)
        return finish_scores(scores[:, unique.inverse], call.normalize).tolist()

    def iter_scores(self, chunks: Iterable[Sequence[Sequence[str]]], **options: Any) -> Iterator[np.ndarray]:
        """Scores of each chunk of pairs, in order, as ``(scores_per_pair, len(chunk))`` float64 arrays.

        The next chunk is read and tokenized while the model scores this one, so a file can stream through
        in constant memory; the command-line jobs use this. No progress bar of its own.
        """
        call, plan = self._call({**options, "show_progress": False})
        texts = (self.instructions.apply(as_pairs(chunk)) for chunk in chunks)
        with self._progress(0, call) as bar:
            for scores in self._score_chunks(texts, call, plan, bar):
                yield finish_scores(scores, call.normalize)

    def input_lengths(
        self, queries: Sequence[str], passages: Sequence[str], **options: Any
    ) -> InputLengths | None:
        """For each (query, passage), the tokens the model reads with these options and whether a limit cut it
        (:class:`~autorerank.pipeline.InputLengths`), laid out by the kind itself: instructions, prompts and chat
        templates count. None in a process that holds no model (several devices): the layout's constants are
        loaded with it."""
        if self._engine is None:
            return None
        call, _ = self._call({**options, "show_progress": False})
        instructed = self.instructions.apply(as_pairs(list(zip(queries, passages))))
        return self._engine.input_lengths(*instructed, call)

    def scores_per_pair(self, **options: Any) -> int:
        """How many scores each pair gets with these options (one per cutoff layer); checks the options."""
        return self._call(options)[1].n_outputs

    def rerank(
        self, query: str, documents: Sequence[str], top_k: int | None = None, **options: Any
    ) -> list[RerankResult]:
        """Documents ordered by relevance to ``query`` (best first), at most ``top_k`` of them."""
        documents = as_documents(query, documents)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            raise InvalidOptionError(f"top_k must be a non-negative int or None, got {top_k!r}.")
        if self.scores_per_pair(**options) != 1:
            raise InvalidOptionError("rerank needs one score per document: pass a single cutoff layer.")
        (scores,) = self.compute_layer_scores([(query, document) for document in documents], **options)
        order = sorted(range(len(documents)), key=lambda i: -scores[i])
        return [RerankResult(i, scores[i], documents[i]) for i in order[:top_k]]

    @property
    def tokenizer(self) -> Any:
        """The checkpoint's tokenizer as a transformers fast tokenizer (the same ``tokenizer.json``, so the same
        ids): ``reranker.tokenizer(query, passage)`` works as in FlagEmbedding. Built on first use."""
        if self._hf_tokenizer is None:
            settings = {
                **read_json(self.model_name_or_path, "special_tokens_map.json", self.options.cache_dir),
                **read_json(self.model_name_or_path, "tokenizer_config.json", self.options.cache_dir),
            }
            padding_side = kind_named(self.kind).padding_side
            self._hf_tokenizer = hf_tokenizer(self.text_tokenizer, settings, padding_side)
        return self._hf_tokenizer

    @property
    def runtime(self) -> Runtime | None:
        """The runtime scoring in this process (None when worker processes score)."""
        return self._engine.runtime if self._engine is not None else None

    @property
    def model(self) -> Any:
        """The torch module scoring in this process (None for other runtimes and for worker pools)."""
        return getattr(self.runtime, "model", None)

    @model.setter
    def model(self, module: torch.nn.Module) -> None:
        if self.runtime is None or not hasattr(self.runtime, "model"):
            raise AttributeError("only a torch runtime in this process has a model to replace")
        self.runtime.model = module

    @property
    def info(self) -> ModelInfo:
        described = self.runtime.describe() if self.runtime is not None else self._worker_pool().describe()
        return ModelInfo(
            kind=self._kind.name,
            detected_by=self.detected_by,
            architecture=described.architecture,
            num_parameters=described.num_parameters,
            max_length=self.options.max_length,
            dtype=described.dtype,
            devices=tuple(self.devices),
            backend=described.backend,
        )

    def close(self) -> None:
        """Stop worker processes, if any. Safe to call twice."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        for sibling in self.__dict__.get("_siblings", {}).values():
            sibling.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self.close()

    # ----------------------------------------------------------------- FlagEmbedding's surface
    def __getattr__(self, name: str) -> Any:
        """Option values read as attributes, as FlagEmbedding stores them: ``reranker.max_length``."""
        options = self.__dict__.get("options")
        if name.startswith("_") or options is None or name not in options:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return options[name]

    def __setattr__(self, name: str, value: Any) -> None:
        """``reranker.batch_size = 32`` changes the default of later calls, as in FlagEmbedding."""
        options = self.__dict__.get("options")
        if not self.__dict__.get("_ready") or options is None or name not in options:
            super().__setattr__(name, value)  # the reranker's own attributes, and anything set while loading
            return
        row = option(name)
        if not row.per_call:
            raise InvalidOptionError(
                f"{name} is fixed when the reranker is loaded; load a new one to change it."
            )
        changed = self.options.replace({name: row.check(name, value)})
        self.__dict__["_plan"] = self._plan_for(changed)
        self.__dict__["options"] = changed

    @property
    def target_devices(self) -> list[str]:
        return list(self.devices)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments that were not options (FlagEmbedding kept them here; autorerank warned)."""
        return dict(self._ignored)

    @staticmethod
    def get_target_devices(devices: DeviceSpec) -> list[str]:
        return resolve_devices(devices)

    def get_detailed_instruct(self, instruction_format: str, instruction: str, sentence: str) -> str:
        """``instruction`` put before ``sentence`` with ``instruction_format``, as the reranker does."""
        queries, _ = Instructions(instruction, instruction_format).apply([(sentence, "")])
        return queries[0]

    def get_detailed_inputs(self, sentence_pairs: Any) -> list[list[str]]:
        """The pairs with this reranker's instructions applied."""
        queries, passages = self.instructions.apply(as_pairs(sentence_pairs))
        return [[query, passage] for query, passage in zip(queries, passages)]

    def compute_score_single_gpu(
        self, sentence_pairs: Any, device: str | None = None, **options: Any
    ) -> list[float] | list[list[float]]:
        """Score pairs as given (no instructions added, as in FlagEmbedding) on one device."""
        scorer = self if device is None or [str(device)] == self.devices else self._on_device(str(device))
        call, plan = scorer._call(options)
        pairs = as_pairs(sentence_pairs)
        layers = scorer._layer_scores([pair[0] for pair in pairs], [pair[1] for pair in pairs], call, plan)
        return layers[0] if len(layers) == 1 else layers

    def start_multi_process_pool(self) -> Any:
        """The worker pool over ``target_devices`` (started once, reused by ``compute_score``)."""
        return self._worker_pool()

    def encode_multi_process(self, sentence_pairs: Any, pool: Any, **options: Any) -> np.ndarray:
        """Score pairs as given on ``pool``'s workers; an array, as FlagEmbedding returns."""
        call, _ = self._call(options)
        pairs = as_pairs(sentence_pairs)
        scores = pool.score([pair[0] for pair in pairs], [pair[1] for pair in pairs], call)
        return flat_scores(finish_scores(scores, call.normalize))

    @staticmethod
    def stop_multi_process_pool(pool: Any) -> None:
        pool.close()

    def stop_self_pool(self) -> None:
        self.close()

    # ----------------------------------------------------------------- internals
    def _on_device(self, device: str) -> Reranker:
        """The same reranker on one other device, loaded on first use."""
        if device not in self._siblings:
            self._siblings[device] = type(self)(
                self.model_name_or_path, **{**self._given, "devices": [device]}
            )
        return self._siblings[device]

    def _call(self, overrides: dict[str, Any]) -> tuple[Options, Plan]:
        """This call's options and their plan, checked before any work."""
        call = call_options(type(self).__name__, self._kind.features, self.options, overrides)
        plan = self._plan if call is self.options else self._plan_for(call)
        return call, plan

    def _plan_for(self, options: Options) -> Plan:
        """The kind's plan for these options, input lengths checked against the checkpoint (in every process)."""
        return self._kind.checked_plan(self.config, options, self.text_tokenizer)

    def _score_chunks(
        self, chunks: Iterable[TextChunk], options: Options, plan: Plan, bar: tqdm
    ) -> Iterator[np.ndarray]:
        if self._engine is not None:
            return self._engine.score_chunks(chunks, options, plan, bar)
        pool = self._worker_pool()
        empty = np.empty((plan.n_outputs, 0), dtype=np.float32)
        return (pool.score(queries, passages, options) if queries else empty for queries, passages in chunks)

    def _score_instructed(self, queries: list[str], passages: list[str], options: Options) -> np.ndarray:
        """Raw scores ``(n_outputs, N)`` of instructed texts in this process (what a worker runs)."""
        assert self._engine is not None, "worker rerankers have one device"
        plan = self._plan if options is self.options else self._plan_for(options)
        with self._progress(0, options.replace({"show_progress": False})) as bar:
            return np.concatenate(
                list(self._engine.score_chunks(chunked(queries, passages), options, plan, bar)), axis=1
            )

    def _progress(self, total: int, options: Options) -> tqdm:
        show = options.show_progress
        many = total > options.batch_size
        return tqdm(
            total=total, unit="pairs", desc="Scoring", disable=(not many) if show is None else not show
        )

    def _worker_pool(self) -> Any:
        if self._pool is None or self._pool.closed:
            from .pool import WorkerPool

            self._pool = WorkerPool(
                type(self), self.model_name_or_path, self._given, self.devices, self.options.worker_timeout
            )
        return self._pool
