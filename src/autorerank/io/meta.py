"""The settings file next to a score output (``OUTPUT.meta.json``), so that resuming never mixes outputs.

``autorerank score`` appends to its output and resumes after the pairs it holds. Resuming is only right when
the rest would be scored the same way: with the same model, the same options that change scores and the same
input. The meta file records those when an output is started (written atomically before the first chunk),
and a resume compares them and refuses, naming what differs, when they do not match.

The input is fingerprinted by its size and a SHA-256 of its first and last 64 KiB: cheap on any size, and it
catches another file, an edited one, or one that grew.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import STDIN, InputFileError
from .lines import atomic_writer

__all__ = ["META_SUFFIX", "check_meta", "input_fingerprint", "meta_path", "write_meta"]

META_SUFFIX = ".meta.json"
_EDGE_BYTES = 64 * 1024
_FIX = "pass --overwrite to start afresh, or choose another --output"


def meta_path(output: str | os.PathLike[str]) -> Path:
    return Path(str(output) + META_SUFFIX)


def input_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The input's size and a hash of its first and last 64 KiB (standard input: only that it was stdin)."""
    if str(path) == STDIN:
        return {"path": STDIN}
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_EDGE_BYTES))
        if size > _EDGE_BYTES:
            handle.seek(max(_EDGE_BYTES, size - _EDGE_BYTES))
            digest.update(handle.read())
    return {"path": str(path), "size": size, "sha256_first_last_64k": digest.hexdigest()}


def write_meta(output: str | os.PathLike[str], meta: Mapping[str, Any]) -> None:
    with atomic_writer(meta_path(output)) as handle:
        handle.write(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


def check_meta(output: str | os.PathLike[str], meta: Mapping[str, Any], scored: int) -> None:
    """Refuse to resume into ``output`` (which holds ``scored`` records) unless its meta file matches ``meta``."""
    path = meta_path(output)
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(
            output,
            None,
            f"holds {scored} scores but no {path.name} saying which model, options and input "
            f"wrote them, so resuming could mix outputs; {_FIX}",
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputFileError(path, None, f"not a valid JSON file; {_FIX}") from None
    differences = _differences(recorded, json.loads(json.dumps(meta)))
    if differences:
        raise InputFileError(
            output,
            None,
            f"was written with other settings ({'; '.join(differences)}); resuming would mix scores: {_FIX}",
        )


def _differences(then: Any, now: Any, where: str = "") -> list[str]:
    """What differs between the recorded settings and today's (the input's path may change: it is not compared)."""
    if isinstance(then, dict) and isinstance(now, dict):
        found: list[str] = []
        for key in [*now, *(key for key in then if key not in now)]:
            if key == "path" and where == "input":
                continue
            found += _differences(
                then.get(key, _ABSENT),
                now.get(key, _ABSENT),
                key if where in ("", "options") else f"{where} {key}",
            )
        return found
    if then == now:
        return []
    return [f"{where}: {_shown(now)} now, {_shown(then)} when the output was written"]


_ABSENT = object()


def _shown(value: Any) -> str:
    return "not given" if value is _ABSENT else json.dumps(value, ensure_ascii=False)
