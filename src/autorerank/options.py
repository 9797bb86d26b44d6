"""THE option table: every option a reranker takes, declared once.

A row says an option's name, default, the values it takes, which kinds it applies to (by *feature*: a kind
declares the features it has, so a new kind with known features touches nothing here), whether
``compute_score`` may override it per call, its command-line flag and its help. The constructors' checks, the
per-call overrides, the CLI flags (``cli/parser.py``) and the README's option table (``tests/test_options.py``
compares them) are all derived from :data:`OPTIONS`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidOptionError, UnknownOptionError, warn_caller
from .registry import RerankerKind

__all__ = [
    "ALIASES",
    "AUTO",
    "BACKENDS",
    "OPTIONS",
    "PRECISIONS",
    "Option",
    "Options",
    "call_options",
    "constructor_options",
    "is_option",
    "markdown_table",
    "option",
    "passage_limit",
    "query_limit",
]

# max_batch_tokens="auto": each process sizes the budget for its own device and model (see batching.py).
AUTO = "auto"
# Runtimes a model can run on (each kind lists those it supports; see backends/__init__.py).
BACKENDS = ("torch", "onnx", "openvino")
QUANTIZE_SCHEMES = ("int8",)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

# Features a kind may have; an option tied to one applies only to kinds that declare it.
PROMPT = "prompt"  # an LLM prompt after each pair
LAYERS = "layers"  # scores read after chosen layers
COMPRESSION = "compression"  # passage-token compression (lightweight kind)
# How the README names the kinds that have each feature.
_FEATURE_NOTES = {
    PROMPT: "LLM kinds",
    LAYERS: "layer-wise and lightweight kinds",
    COMPRESSION: "lightweight kind",
}


# ----------------------------------------------------------------------------- value checks
Check = Callable[[str, Any], Any]


def _anything(name: str, value: Any) -> Any:
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidOptionError(f"{name} must be True or False, got {value!r}.")
    return value


def _positive_int(name: str, value: Any, also: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(
            f"{name} must be a positive int{', ' + also if also else ''}, got {value!r}."
        )
    return value


def _optional_positive_int(name: str, value: Any) -> int | None:
    return None if value is None else _positive_int(name, value, "or None")


def _batch_tokens(name: str, value: Any) -> int | str | None:
    if value is None or value == "none":
        return None
    if value == AUTO:
        return value
    return _positive_int(name, value, "'auto' or None")


def _optional_text(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidOptionError(f"{name} must be a string or None, got {type(value).__name__}.")
    return value


def _instruction_format(name: str, value: Any) -> str:
    if not isinstance(value, str) or value.replace("\\n", "\n").count("{}") != 2:
        raise InvalidOptionError(
            f"{name} must be a string with two '{{}}' (instruction, text), got {value!r}."
        )
    return value


def _layers(name: str, value: Any) -> tuple[int, ...] | None:
    """An int is one layer; a list keeps its order (and its repeats)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidOptionError(f"{name} must be an int or a list of ints, got {type(value).__name__}.")
    layers = tuple(value)
    if not layers or not all(isinstance(layer, int) and not isinstance(layer, bool) for layer in layers):
        raise InvalidOptionError(f"{name} must be a non-empty list of ints, got {list(value)!r}.")
    return layers


def _one_of(*choices: Any) -> Check:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise InvalidOptionError(f"{name} must be one of {list(choices)}, got {value!r}.")
        return value

    return check


# ----------------------------------------------------------------------------- command-line value types
def positive_int_text(text: str) -> int:
    """argparse type: an integer of at least 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def batch_tokens_text(text: str) -> int | str:
    """argparse type for --max-batch-tokens: N, ``auto`` or ``none``."""
    lowered = text.strip().lower()
    if lowered == AUTO:
        return AUTO
    if lowered == "none":
        return "none"  # not None, which would mean "flag not given"
    return positive_int_text(text)


_INT = {"type": positive_int_text, "metavar": "N"}
_SWITCH = {"action": "store_true"}
_TEXT = {"metavar": "TEXT"}
_PATH = {"metavar": "PATH"}
_FORMAT = {"metavar": "FORMAT"}
# One value per flag ("4,5"; a repeated flag adds to the list), never nargs="+", which would swallow the
# documents after it on `autorerank rank`; the named type "layers" is registered by cli/parser.py.
_LAYERS_CLI = {"type": "layers", "action": "extend", "metavar": "N[,N...]"}


# ----------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Option:
    """One option: what it is called, takes and means, where it applies, and how the CLI spells it."""

    name: str
    default: Any
    help: str
    check: Check = _anything
    feature: str | None = None  # None: every kind
    per_call: bool = False  # compute_score(..., name=value) overrides the constructor's value
    flag: str | None = None  # the command-line flag, if any
    cli: Mapping[str, Any] = field(default_factory=dict)  # argparse settings beyond dest/default/help
    effect: bool = True  # False: accepted for FlagEmbedding's sake, changes nothing
    default_text: str | None = None  # how the README shows a default that is not a plain value
    keeps_none: bool = False  # None is a value of its own (not "the default"), as for the instructions

    def applies_to(self, features: frozenset[str]) -> bool:
        return self.feature is None or self.feature in features


# fmt: off
# A table reads best one row at a time: kept in this layout by hand.
OPTIONS: tuple[Option, ...] = (
    # --- loading: set once, at construction
    Option("model_class", None, "the kind, instead of detecting it (`from_finetuned` only)", flag="--model-class",
           cli={"choices": [kind.value for kind in RerankerKind], "metavar": "KIND"}),
    Option("use_fp16", False, "float16 weights and activations (GPU; refused on CPU with a warning)", _flag,
           flag="--fp16", cli=_SWITCH),
    Option("use_bf16", False, "bfloat16 weights and activations (CPU and GPU)", _flag, flag="--bf16", cli=_SWITCH),
    Option("precision", None, "instead of the two switches: `\"fp32\"`, `\"fp16\"`, `\"bf16\"`, or `\"auto\"`: bf16 on "
           "CPUs that compute it natively (AVX512-BF16, AMX, Arm BF16), fp16 on CUDA, else fp32 (always fp32 on the "
           "onnx and openvino backends); `None`: fp32 unless a switch says otherwise", _one_of(None, *PRECISIONS),
           flag="--precision", cli={"choices": PRECISIONS, "metavar": "PRECISION"}),
    Option("peft_path", None, "a PEFT/LoRA adapter merged into the weights at load (`autorerank[peft]`)",
           _optional_text, flag="--peft-path", cli=_PATH),
    Option("devices", None, "`None` (every CUDA device, else the CPU), `\"cpu\"`, `0`, `[\"cuda:0\", \"cuda:1\"]`; "
           "several devices score in one worker process each", flag="--device",
           cli={"action": "append", "metavar": "DEVICE"}),
    Option("worker_timeout", 60, "seconds a device's worker process may go without a heartbeat (stopped, frozen) "
           "before the call raises `WorkerError` naming it (several devices; at least 60 while it starts)",
           _positive_int, flag="--worker-timeout", cli={"type": positive_int_text, "metavar": "SECONDS"}),
    Option("cache_dir", None, "where hub checkpoints are cached", _optional_text, flag="--cache-dir", cli=_PATH),
    Option("trust_remote_code", False, "let transformers run the checkpoint's own Python code", _flag,
           flag="--trust-remote-code", cli=_SWITCH),
    Option("backend", "torch", "the runtime: `torch`, `onnx` or `openvino` (CPU); each kind lists the ones it "
           "supports", _one_of(*BACKENDS), flag="--backend", cli={"choices": BACKENDS, "metavar": "RUNTIME"}),
    Option("quantize", None, "`int8` on the onnx and openvino backends", _one_of(None, *QUANTIZE_SCHEMES),
           flag="--quantize", cli={"choices": QUANTIZE_SCHEMES, "metavar": "SCHEME"}),
    Option("onnx_dir", None, "where the onnx backend keeps its exports (default `~/.cache/autorerank/onnx`)",
           _optional_text, flag="--onnx-dir", cli=_PATH),
    Option("query_instruction_for_rerank", None, "text put before each query", _optional_text,
           flag="--query-instruction", cli=_TEXT, keeps_none=True,
           default_text="`None` (LLM kinds: `\"A: \"`; pass None to remove)"),
    Option("query_instruction_format", "{}{}", "how instruction and query join (a literal `\\n` is a newline)",
           _instruction_format, flag="--query-instruction-format", cli=_FORMAT),
    Option("passage_instruction_for_rerank", None, "text put before each passage", _optional_text,
           flag="--passage-instruction", cli=_TEXT, keeps_none=True,
           default_text="`None` (LLM kinds: `\"B: \"`; pass None to remove)"),
    Option("passage_instruction_format", "{}{}", "how instruction and passage join", _instruction_format,
           flag="--passage-instruction-format", cli=_FORMAT),
    Option("split_special_tokens", False, "read text in queries and passages (instructions included) that spells "
           "a special token (`</s>`, `[SEP]`, `<eos>`) as plain text, so documents cannot inject separators or "
           "answers; the layout's own special tokens and the prompt stay special (`False`: such text becomes the "
           "special token, as in FlagEmbedding)", _flag, flag="--split-special-tokens", cli=_SWITCH),
    Option("strict", False, "turn the warning about an option that has no effect here, or is misspelt, into an "
           "`UnknownOptionError`", _flag),
    # --- scoring: constructor defaults that compute_score(..., name=value) overrides per call
    Option("batch_size", 128, "most pairs in one forward pass", _positive_int, per_call=True, flag="--batch-size",
           cli=_INT),
    Option("max_batch_tokens", AUTO, "most padded tokens in one forward pass, batches filled by length under it; "
           "`\"auto\"`: 16384 on GPUs, on CPUs the widest activation near 16 MiB (2730 tokens for MiniLM-L6, 1365 "
           "for a base model: 15-40% faster than large batches); `None`: no budget", _batch_tokens, per_call=True,
           flag="--max-batch-tokens", cli={"type": batch_tokens_text, "metavar": "N|auto|none"}, keeps_none=True),
    Option("max_length", 512, "token limit of a pair; passages are cut so the pair fits", _positive_int,
           per_call=True, flag="--max-length", cli=_INT),
    Option("query_max_length", None, "token limit of the query", _optional_positive_int, per_call=True,
           flag="--query-max-length", cli=_INT, default_text="3/4 of `max_length`"),
    Option("passage_max_length", None, "an extra limit on passage tokens (FlagEmbedding documents it but ignores "
           "it)", _optional_positive_int, per_call=True, flag="--passage-max-length", cli=_INT),
    Option("normalize", False, "map scores through a sigmoid to (0, 1)", _flag, per_call=True, flag="--normalize",
           cli=_SWITCH),
    Option("show_progress", None, "progress bar; `None` shows it when there is more than one batch",
           per_call=True),
    Option("prompt", None, "the question put after each pair (`decoder-only-yes-no`: the instruction)", _optional_text,
           feature=PROMPT, per_call=True, flag="--prompt", cli=_TEXT, default_text="the kind's own"),
    Option("cutoff_layers", None, "layers to score after; one layer gives a list of scores, several give one "
           "list per layer (`compute_layer_scores` always gives one row per layer)", _layers, feature=LAYERS,
           per_call=True, flag="--cutoff-layers", cli=_LAYERS_CLI, default_text="the last layer"),
    Option("compress_layers", None, "layers before which passage tokens are compressed", _layers,
           feature=COMPRESSION, per_call=True, flag="--compress-layers", cli=_LAYERS_CLI, default_text="`[8]`"),
    Option("compress_ratio", 1, "passage tokens pooled into one: 1 (none), 2, 4 or 8", _one_of(1, 2, 4, 8),
           feature=COMPRESSION, per_call=True, flag="--compress-ratio", cli=_INT),
    Option("use_dataloader", None, "accepted for FlagEmbedding; no effect (tokenization already overlaps the "
           "model)", feature=PROMPT, per_call=True, effect=False),
    Option("num_workers", None, "accepted for FlagEmbedding; no effect", feature=PROMPT, per_call=True,
           effect=False),
)
# fmt: on

# Deprecated spellings -> the option they mean.
ALIASES: Mapping[str, str] = {"compress_layer": "compress_layers"}

_BY_NAME: dict[str, Option] = {row.name: row for row in OPTIONS}
# Options the reranker constructors never see (from_finetuned consumes them).
_FACTORY_ONLY = frozenset({"model_class"})


def option(name: str) -> Option:
    return _BY_NAME[name]


def is_option(name: str) -> bool:
    """Whether ``name`` is an option (or a deprecated spelling of one)."""
    return name in _BY_NAME or name in ALIASES


# ----------------------------------------------------------------------------- resolved values
class Options(Mapping[str, Any]):
    """Checked option values of one reranker (``options.max_length``); immutable, picklable."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no option {name!r} here") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Options are immutable; use replace().")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Options, (self._values,))

    def __repr__(self) -> str:
        return f"Options({self._values!r})"

    def replace(self, changes: Mapping[str, Any]) -> Options:
        return Options({**self._values, **changes})


def query_limit(options: Options) -> int:
    """Query token limit: ``query_max_length``, else three quarters of ``max_length`` (the reference rule)."""
    limit = options.query_max_length
    return int(limit) if limit is not None else int(options.max_length) * 3 // 4


def passage_limit(options: Options) -> int:
    """Passage token limit before pair truncation: ``max_length``, or ``passage_max_length`` if smaller."""
    limit = options.passage_max_length
    return int(options.max_length) if limit is None else min(int(limit), int(options.max_length))


def constructor_options(
    owner: str, features: frozenset[str], kind_defaults: Mapping[str, Any], given: Mapping[str, Any]
) -> Options:
    """Every option that applies to a kind: the table's default, the kind's, then the given value, checked.

    A name with no effect on this kind, or not an option at all, is named in a warning (with the closest valid
    name) and set aside, as FlagEmbedding accepts any keyword; ``strict=True`` makes it an UnknownOptionError.
    """
    strict = _flag("strict", given.get("strict", False))
    given = _set_aside(owner, "__init__", features, _resolve_aliases(given), strict, _settable_at_load)
    values: dict[str, Any] = {}
    for row in OPTIONS:
        if row.name in _FACTORY_ONLY or not row.applies_to(features) or not row.effect:
            continue
        value = given.get(row.name)
        if row.name not in given or (value is None and not row.keeps_none):  # None means "the default"
            value = kind_defaults.get(row.name, row.default)
        values[row.name] = row.check(row.name, value)
    return Options(values)


def call_options(owner: str, features: frozenset[str], current: Options, given: Mapping[str, Any]) -> Options:
    """``current`` with ``compute_score``'s overrides; None keeps the constructor's value, as in the reference.
    Names that cannot change anything per call are set aside as in :func:`constructor_options`."""
    given = _set_aside(owner, "compute_score", features, _resolve_aliases(given), current.strict, _per_call)
    changes = {
        name: _BY_NAME[name].check(name, value)
        for name, value in given.items()
        if value is not None and _BY_NAME[name].effect
    }
    return current.replace(changes) if changes else current


def _resolve_aliases(given: Mapping[str, Any]) -> dict[str, Any]:
    """Rename deprecated option names (with a warning); the new name wins when both are given."""
    resolved = dict(given)
    for old, new in ALIASES.items():
        if old in resolved:
            warn_caller(f"{old}= is deprecated; use {new}= instead.", DeprecationWarning)
            value = resolved.pop(old)
            if resolved.get(new) is None:
                resolved[new] = value
    return resolved


def _settable_at_load(row: Option) -> bool:
    return row.name not in _FACTORY_ONLY


def _per_call(row: Option) -> bool:
    return row.per_call


def _set_aside(
    owner: str,
    method: str,
    features: frozenset[str],
    given: dict[str, Any],
    strict: bool,
    allowed: Callable[[Option], bool],
) -> dict[str, Any]:
    """``given`` without the names that cannot take effect here; those are named in one warning (or, with
    ``strict``, an UnknownOptionError) saying why."""
    accepted = sorted(row.name for row in OPTIONS if row.applies_to(features) and allowed(row))
    rejected = sorted(name for name in given if name not in accepted)
    if not rejected:
        return given
    reasons = "; ".join(_why_not(name, features, accepted) for name in rejected)
    if strict:
        raise UnknownOptionError(f"{owner}.{method}() got {reasons}.", rejected)
    warn_caller(f"{owner}.{method}() ignored {reasons}.")
    return {name: value for name, value in given.items() if name not in rejected}


def _why_not(name: str, features: frozenset[str], accepted: list[str]) -> str:
    row = _BY_NAME.get(name)
    if row is not None and not row.applies_to(features):
        return f"{name}=, which has no effect on this kind of reranker"
    if row is not None:
        return f"{name}=, which is set when the reranker is loaded, not per call"
    close = difflib.get_close_matches(name, accepted, n=1)
    if close:
        return f"{name}=, which is not an autorerank option (did you mean {close[0]}=?)"
    applicable = [row.name for row in OPTIONS if row.applies_to(features)]
    close = difflib.get_close_matches(name, applicable, n=1)  # a load-time option, misspelled in a call
    hint = f" (did you mean {close[0]}=? It is set when the reranker is loaded)" if close else ""
    return f"{name}=, which is not an autorerank option{hint}"


# ----------------------------------------------------------------------------- documentation
def markdown_table() -> str:
    """The README's option table, generated from :data:`OPTIONS`."""
    lines = ["| option | default | per call | CLI flag | meaning |", "| --- | --- | --- | --- | --- |"]
    for row in OPTIONS:
        default = row.default_text or f"`{row.default!r}`"
        where = f" ({_FEATURE_NOTES[row.feature]})" if row.feature else ""
        flag = f"`{row.flag}`" if row.flag else "-"
        lines.append(
            f"| `{row.name}` | {default} | {'yes' if row.per_call else '-'} | {flag} | {row.help}{where} |"
        )
    return "\n".join(lines) + "\n"
