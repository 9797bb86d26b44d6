"""Finding checkpoint files (local folder or hub name) and loading weights strictly."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from .compat import concrete_model_class, quiet_weight_loading
from .errors import ModelLoadError
from .optional import require

__all__ = [
    "is_local",
    "load_pretrained",
    "merge_peft",
    "normalize_model_path",
    "read_json",
    "read_safetensors",
    "resolve_file",
]

logger = logging.getLogger(__name__)


def normalize_model_path(model_name_or_path: str | os.PathLike[str]) -> str:
    """Drop trailing separators so that ``"model/"`` and ``"model"`` name the same checkpoint; refuse what cannot
    name one."""
    if not isinstance(model_name_or_path, (str, os.PathLike)):
        raise ModelLoadError(
            f"model_name_or_path must be a checkpoint folder or a hub name (a string), not "
            f"{type(model_name_or_path).__name__}."
        )
    text = os.fspath(model_name_or_path)
    if not isinstance(text, str) or not text.strip():
        raise ModelLoadError(
            f"model_name_or_path {text!r} names no checkpoint: pass a folder or a hub name such as "
            "'BAAI/bge-reranker-v2-m3'."
        )
    stripped = text.rstrip("/\\")
    return stripped or text


def is_local(model_name_or_path: str) -> bool:
    return os.path.isdir(model_name_or_path)


def _looks_like_path(model_name_or_path: str) -> bool:
    """Hub names are ``name`` or ``org/name``; anything else is meant as a folder."""
    return (
        model_name_or_path.startswith((".", "/", "~"))
        or model_name_or_path.count("/") > 1
        or "\\" in model_name_or_path
    )


def resolve_file(model_name_or_path: str, filename: str, cache_dir: str | None = None) -> Path | None:
    """The local path of ``filename`` in a checkpoint folder or hub repository, or None if absent."""
    if is_local(model_name_or_path):
        candidate = Path(model_name_or_path) / filename
        return candidate if candidate.is_file() else None
    if os.path.isfile(model_name_or_path):
        raise ModelLoadError(
            f"{model_name_or_path!r} is a file: pass the checkpoint folder that holds it (with config.json and the "
            "weights)."
        )
    if _looks_like_path(model_name_or_path):
        raise ModelLoadError(
            f"No checkpoint folder at {model_name_or_path!r}: the path does not exist "
            "(and it is not a hub name of the form 'org/name')."
        )
    import huggingface_hub as hub
    from huggingface_hub import errors as hub_errors

    try:
        return Path(hub.hf_hub_download(model_name_or_path, filename, cache_dir=cache_dir))
    except hub_errors.LocalEntryNotFoundError as exc:  # offline or unreachable, and not in the cache
        if hub.try_to_load_from_cache(model_name_or_path, "config.json", cache_dir=cache_dir):
            return None  # the repository is cached; this file is simply not part of it
        raise ModelLoadError(
            f"Cannot load {model_name_or_path!r}: it is not a local folder, the Hugging Face hub cannot be "
            f"reached, and it is not in the hub cache. Pass a local path or set cache_dir. ({exc})"
        ) from exc
    except hub_errors.EntryNotFoundError:
        return None
    except hub_errors.HFValidationError as exc:  # before any download: the name cannot be a repository id
        raise ModelLoadError(
            f"{model_name_or_path!r} is neither a local folder nor a valid hub name of the form 'org/name' ({exc})."
        ) from exc
    except (hub_errors.RepositoryNotFoundError, OSError) as exc:
        raise ModelLoadError(f"Cannot find {filename!r} for {model_name_or_path!r}: {exc}") from exc


def read_json(model_name_or_path: str, filename: str, cache_dir: str | None = None) -> dict[str, Any]:
    """A JSON file of the checkpoint as a dict ({} when the file is absent)."""
    path = resolve_file(model_name_or_path, filename, cache_dir)
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Cannot read {path}: {exc}") from exc


def load_pretrained(
    model_class: Any, model_name_or_path: str, *, kind: str, **kwargs: Any
) -> torch.nn.Module:
    """``model_class.from_pretrained`` that refuses checkpoints leaving weights newly initialised.

    A missing weight means the checkpoint is not of the requested kind (a causal LM loaded
    as a cross-encoder gets a random score head), so its scores would be arbitrary. A damaged weights file, or a
    config.json whose sizes do not fit the weights, is a ModelLoadError naming the file; transformers' own load
    report is not printed (the error says what it would have shown).
    """
    try:
        with quiet_weight_loading(), _transformers_errors_only():
            model, info = _from_pretrained(model_class, model_name_or_path, kwargs)
    except SafetensorError as exc:
        raise ModelLoadError(_unreadable_weights(model_name_or_path, kwargs.get("cache_dir"), exc)) from exc
    except torch.OutOfMemoryError:
        raise
    except (
        OSError,
        ValueError,
        KeyError,
        RuntimeError,
    ) as exc:  # RuntimeError: a damaged .bin, in torch.load
        raise ModelLoadError(f"Cannot load {model_name_or_path!r} as {kind}: {exc}") from exc
    _refuse_initialised_weights(model_name_or_path, kind, info)
    return model.eval()


def _from_pretrained(model_class: Any, model_name_or_path: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """``from_pretrained``, given the weights already converted when a local safetensors checkpoint is loaded in
    another dtype than it stores (see ``_converted_weights``)."""
    options = {"output_loading_info": True, "ignore_mismatched_sizes": True, **kwargs}
    weights = _converted_weights(model_class, model_name_or_path, kwargs)
    if weights is None:
        return model_class.from_pretrained(model_name_or_path, **options)
    concrete, config, state = weights
    return concrete.from_pretrained(None, **{**options, "config": config, "state_dict": state})


def _converted_weights(
    model_class: Any, model_name_or_path: str, kwargs: dict[str, Any]
) -> tuple[Any, Any, dict[str, torch.Tensor]] | None:
    """The concrete model class, the config and the state dict in the requested dtype, read one tensor at a time
    with ``pread``; None where transformers' own path is as good (same dtype, remote code, not a local
    safetensors checkpoint) or this safetensors cannot read without a memory map.

    Why: transformers reads the file through a memory map while it builds the converted copy, so both count in
    the peak RSS. A float32 checkpoint of a 271M-parameter LLM loaded in bfloat16 peaked at 1932 MiB that way and
    at 896 MiB this way (the same weights, bit for bit).
    """
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    files = _local_safetensors(model_name_or_path)
    if not isinstance(dtype, torch.dtype) or kwargs.get("trust_remote_code") or not files:
        return None
    from safetensors import safe_open

    with contextlib.ExitStack() as stack:
        try:
            handles = [
                stack.enter_context(safe_open(str(file), framework="pt", device="cpu", backend="pread"))
                for file in files
            ]
        except TypeError:  # a safetensors without the pread backend (before 0.7)
            return None
        if not any(_stores_other_floats(handle, dtype) for handle in handles):
            return None
        config = kwargs.get("config") or _config(model_class, model_name_or_path)
        if config is None:
            return None
        concrete = concrete_model_class(model_class, config)
        if concrete is None or _keeps_float32_modules(concrete):
            return None
        state: dict[str, torch.Tensor] = {}
        for file, handle in zip(files, handles, strict=True):
            state.update(_read_converted(file, handle, dtype))
        return concrete, config, state


def read_safetensors(
    model_name_or_path: str, dtype: torch.dtype, cache_dir: str | None = None
) -> dict[str, torch.Tensor] | None:
    """Every tensor of a checkpoint's safetensors weights by name, floats in ``dtype``; None where the checkpoint
    has no safetensors weights, or its file needs converting and this safetensors cannot read without a memory map.
    A damaged file is a ModelLoadError naming it.

    A file already stored in ``dtype`` stays memory-mapped: pages nobody reads (the rows of a 250k-token embedding
    table that no input touches) never count in the process's memory, as with transformers' own loader (XLM-R base
    in fp32: 1455 MiB peak read into memory, 981 mapped). A file to convert is read one tensor at a time with
    ``pread``, so the mapped source is not held while its converted copy is built (see ``_converted_weights``).
    """
    files = _checkpoint_safetensors(model_name_or_path, cache_dir)
    if not files:
        return None
    from safetensors import safe_open

    try:
        with contextlib.ExitStack() as stack:
            state: dict[str, torch.Tensor] = {}
            for file in files:
                handle = stack.enter_context(safe_open(str(file), framework="pt", device="cpu"))
                if _stores_other_floats(handle, dtype):
                    handle = stack.enter_context(
                        safe_open(str(file), framework="pt", device="cpu", backend="pread")
                    )
                    state.update(_read_converted(file, handle, dtype))
                else:
                    names: list[str] = handle.keys()
                    state.update((name, handle.get_tensor(name)) for name in names)  # mapped, as stored
            return state
    except TypeError:  # a safetensors without the pread backend (before 0.7)
        return None
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(_unreadable_weights(model_name_or_path, cache_dir, exc)) from exc


def _read_converted(file: Path, handle: Any, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of ``file`` in ``dtype``. A large one is read in row blocks straight into its converted copy,
    so only one block of its stored values is in memory beside it (an XLM-R embedding table is 768 MB in float32;
    safetensors reads a whole tensor even for a slice)."""
    header_size, header = _safetensors_header(file)
    state: dict[str, torch.Tensor] = {}
    names: list[str] = handle.keys()
    with open(file, "rb") as raw:
        for name in names:
            entry = header[name]
            stored, shape = _FLOAT_NAMES.get(entry["dtype"]), entry["shape"]
            if stored is None or not shape or math.prod(shape) * stored.itemsize <= _BLOCK_BYTES:
                state[name] = _converted(handle.get_tensor(name), dtype)
                continue
            out = torch.empty(shape, dtype=dtype)
            row_bytes = math.prod(shape[1:]) * stored.itemsize
            rows = max(1, _BLOCK_BYTES // row_bytes)
            raw.seek(8 + header_size + entry["data_offsets"][0])
            for start in range(0, shape[0], rows):
                count = min(rows, shape[0] - start)
                block = torch.frombuffer(bytearray(raw.read(count * row_bytes)), dtype=stored)
                out[start : start + count] = block.view(count, *shape[1:])
            state[name] = out
    return state


def _safetensors_header(file: Path) -> tuple[int, dict[str, Any]]:
    """The header of a safetensors file: its size in bytes and its entries (dtype, shape, data_offsets by name)."""
    with open(file, "rb") as raw:
        size = int.from_bytes(raw.read(8), "little")
        return size, json.loads(raw.read(size))


# Converting tensors larger than this is done in blocks of this size.
_BLOCK_BYTES = 64 << 20


def _checkpoint_safetensors(model_name_or_path: str, cache_dir: str | None) -> list[Path]:
    """The safetensors weight files of a local folder, or of a hub checkpoint (fetched or taken from the cache as
    transformers would)."""
    if is_local(model_name_or_path):
        return _local_safetensors(model_name_or_path)
    index = resolve_file(model_name_or_path, _INDEX, cache_dir)
    if index is None:
        single = resolve_file(model_name_or_path, "model.safetensors", cache_dir)
        return [single] if single is not None else []
    shards = [resolve_file(model_name_or_path, shard, cache_dir) for shard in _shard_names(index)]
    return [shard for shard in shards if shard is not None] if all(shards) else []


def _shard_names(index: Path) -> list[str]:
    """The weight files a ``model.safetensors.index.json`` names (none when it cannot be read)."""
    try:
        return sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError):
        return []


def _config(model_class: Any, model_name_or_path: str) -> Any | None:
    """The config ``from_pretrained`` would build: the class's own config class (autorerank's native models), or
    AutoConfig without running the checkpoint's code (never a prompt); None where that cannot be read."""
    from transformers import AutoConfig, PretrainedConfig

    config_class = getattr(model_class, "config_class", None)
    try:
        if isinstance(config_class, type) and issubclass(config_class, PretrainedConfig):
            return config_class.from_pretrained(model_name_or_path)
        return AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=False)
    except (OSError, ValueError):
        return None


def _local_safetensors(model_name_or_path: str) -> list[Path]:
    """The weight files of a local checkpoint folder: the shards its index names, or ``model.safetensors``."""
    if not is_local(model_name_or_path):
        return []
    folder = Path(model_name_or_path)
    index = folder / _INDEX
    if index.is_file():
        files = [folder / shard for shard in _shard_names(index)]
        return files if files and all(file.is_file() for file in files) else []
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []


def _keeps_float32_modules(model_class: Any) -> bool:
    """Whether transformers keeps some of this class's modules in float32 at a lower dtype: it loads them from the
    file's float32 values, which a state dict converted beforehand would have rounded."""
    return bool(
        getattr(model_class, "_keep_in_fp32_modules", None)
        or getattr(model_class, "_keep_in_fp32_modules_strict", None)
    )


def _stores_other_floats(handle: Any, dtype: torch.dtype) -> bool:
    names: list[str] = handle.keys()
    stored = {_FLOAT_NAMES.get(handle.get_slice(name).get_dtype()) for name in names} - {None}
    return bool(stored - {dtype})


_INDEX = "model.safetensors.index.json"

# safetensors' names of the float dtypes a checkpoint stores.
_FLOAT_NAMES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _converted(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def _refuse_initialised_weights(model_name_or_path: str, kind: str, info: dict[str, Any]) -> None:
    """Raise when the loading report shows weights of other shapes than the config's, or none at all."""
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda item: str(item))
    if mismatched:
        shown = "; ".join(_shapes(item) for item in mismatched[:4])
        raise ModelLoadError(
            f"The config.json of {model_name_or_path!r} does not fit its weights: {len(mismatched)} tensor(s) have "
            f"other shapes than the config describes ({shown}). The config and the weights come from different "
            "checkpoints; put the checkpoint's own config.json back (or download the checkpoint again)."
        )
    missing = sorted(set(info.get("missing_keys") or []))
    if missing:
        raise ModelLoadError(
            f"Loading {model_name_or_path!r} as {kind} left {len(missing)} weight(s) newly initialised "
            f"({', '.join(missing[:8])}); its scores would be random. The checkpoint is probably of another kind: "
            "drop model_class to detect it, or pass the right model_class=."
        )
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        logger.debug("%s: weights the model does not use: %s", model_name_or_path, ", ".join(unexpected[:8]))


def _shapes(item: Any) -> str:
    """``name: weights (64,), config (128,)`` for one mismatched tensor (transformers: ``(name, file, model)``)."""
    if isinstance(item, tuple) and len(item) == 3:
        name, in_file, in_model = item
        return f"{name}: weights {tuple(in_file)}, config {tuple(in_model)}"
    return str(item[0] if isinstance(item, tuple) else item)


@contextlib.contextmanager
def _transformers_errors_only() -> Iterator[None]:
    """Keep transformers' warnings (its load-report table among them) off stderr during one load, restoring its
    verbosity afterwards: a failed load becomes our own error, which says what the report would have shown."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _unreadable_weights(model_name_or_path: str, cache_dir: str | None, exc: Exception) -> str:
    """The error message for a safetensors file that cannot be read, naming the damaged file(s) when found."""
    broken = [str(path) for path in _safetensors_files(model_name_or_path, cache_dir) if _damaged(path)]
    where = ", ".join(broken) if broken else f"the weights of {model_name_or_path!r}"
    return (
        f"Cannot read {where}: {exc}. The file is truncated or damaged (an interrupted download or copy); "
        "download or copy the checkpoint again."
    )


def _safetensors_files(model_name_or_path: str, cache_dir: str | None) -> list[Path]:
    """The ``.safetensors`` files of a local folder or of a cached hub checkpoint."""
    if is_local(model_name_or_path):
        return sorted(Path(model_name_or_path).glob("*.safetensors"))
    config = resolve_file(model_name_or_path, "config.json", cache_dir)
    return sorted(config.parent.glob("*.safetensors")) if config is not None else []


def _damaged(path: Path) -> bool:
    """Whether safetensors cannot open ``path`` (its header is cut short, empty or garbled)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt"):
            return False
    except (SafetensorError, OSError):
        return True


def merge_peft(model: torch.nn.Module, peft_path: str) -> torch.nn.Module:
    """Apply a PEFT adapter and merge it into the weights, so scoring runs at full speed."""
    peft = require("peft", "peft", "peft_path")
    try:
        adapted = peft.PeftModel.from_pretrained(model, peft_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot load the PEFT adapter at {peft_path!r}: {exc}") from exc
    return adapted.merge_and_unload().eval()
