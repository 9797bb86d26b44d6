"""Finding checkpoint files (local folder or hub name) and loading weights strictly."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .compat import quiet_weight_loading
from .errors import ModelLoadError
from .optional import require

__all__ = [
    "is_local",
    "load_pretrained",
    "merge_peft",
    "normalize_model_path",
    "read_json",
    "resolve_file",
]


def normalize_model_path(model_name_or_path: str | os.PathLike[str]) -> str:
    """Drop trailing separators so that ``"model/"`` and ``"model"`` name the same checkpoint."""
    text = os.fspath(model_name_or_path)
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
    as a cross-encoder gets a random score head), so its scores would be arbitrary.
    """
    try:
        with quiet_weight_loading():
            model, info = model_class.from_pretrained(model_name_or_path, output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"Cannot load {model_name_or_path!r} as {kind}: {exc}") from exc
    missing = sorted(set(info.get("missing_keys", [])))
    mismatched = [
        str(item[0]) if isinstance(item, tuple) else str(item) for item in info.get("mismatched_keys", [])
    ]
    if missing or mismatched:
        shown = ", ".join((missing + mismatched)[:8])
        raise ModelLoadError(
            f"Loading {model_name_or_path!r} as {kind} left {len(missing) + len(mismatched)} weight(s) "
            f"newly initialised ({shown}); its scores would be random. The checkpoint is probably of "
            "another kind: drop model_class to detect it, or pass the right model_class=."
        )
    return model.eval()


def merge_peft(model: torch.nn.Module, peft_path: str) -> torch.nn.Module:
    """Apply a PEFT adapter and merge it into the weights, so scoring runs at full speed."""
    peft = require("peft", "peft", "peft_path")
    try:
        adapted = peft.PeftModel.from_pretrained(model, peft_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot load the PEFT adapter at {peft_path!r}: {exc}") from exc
    return adapted.merge_and_unload().eval()
