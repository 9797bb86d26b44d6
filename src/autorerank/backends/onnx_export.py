"""Turning a loaded torch cross-encoder into ONNX files, once, in a cache that can never hold half a file.

Layout: ``<root>/<name>-<fingerprint>/<variant>/model.onnx`` (``fp32``, ``int8-dynamic``):
the fingerprint hashes the weights, the config, the recipe below and the library versions. Any change
to the weights (a new checkpoint, a merged PEFT adapter) therefore lands in a new folder instead of
loading a stale export. Each variant is built in a hidden temporary folder next to its final place
and renamed into place only when complete and validated, so a crash or a concurrent build never
leaves a file that a later load would trust. ``export.json`` records each model file's size and sha256;
a load checks them (hashing each file once per process) and rebuilds, with a warning naming the file, a
variant whose files were damaged, truncated or emptied since.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..compat import eager_attention
from ..errors import ModelLoadError, warn_caller
from ..kinds.base import ScoreModule
from ..optional import require
from .base import max_score_error, sample_inputs

__all__ = ["MODEL_FILE", "cache_root", "ensure_variant", "export_folder"]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
REPORT_FILE = "export.json"  # how a variant was built, and the size and sha256 of each of its model files
# Bump when the export, fusion or quantization recipe changes: old cache entries are then not reused.
RECIPE = "autorerank-onnx-2"
OPSET = 17
# Activations quantized per tensor at run time (fastest; the OpenVINO backend is the faithful int8).
INT8_SCHEME = "dynamic"
# Weights above this size go to one side file (protobuf cannot hold a message over 2 GiB).
EXTERNAL_DATA_BYTES = 1_500_000_000
# Tensors above this many elements are fingerprinted from an evenly strided sample, to keep loading fast.
_FINGERPRINT_ELEMENTS = 1 << 22
# Families whose exported graph onnxruntime's BERT fusions (attention, skip-layer-norm, gelu) recognise.
_BERT_FAMILY = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra"})
# A build folder untouched this long belongs to a process that died: safe to delete.
_ABANDONED_AFTER_S = 24 * 3600
# Model files whose checksum this process has verified, with the stat they had then: a file is hashed once per
# process (1.3 GB/s here: ~1.7 s for a 2.2 GB fp32 XLM-R large) and again only if it changes.
_VERIFIED: dict[Path, tuple[int, int, int, int]] = {}


# ----------------------------------------------------------------------------- where the files live
def cache_root(onnx_dir: str | os.PathLike[str] | None) -> Path:
    """``onnx_dir`` if given, else ``$AUTORERANK_CACHE/onnx``, else ``$XDG_CACHE_HOME`` or ``~/.cache`` + ``autorerank/onnx``."""
    if onnx_dir is not None:
        return Path(onnx_dir).expanduser()
    if os.environ.get("AUTORERANK_CACHE"):
        return Path(os.environ["AUTORERANK_CACHE"]).expanduser() / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "autorerank" / "onnx"


def export_folder(model: ScoreModule, model_name_or_path: str, root: Path) -> Path:
    """The folder for this model's exports: a readable name plus a fingerprint of everything that shapes them."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model_name_or_path).name or "model")[:60]
    return root / f"{name}-{_fingerprint(model)}"


def _fingerprint(model: ScoreModule) -> str:
    ort = require("onnxruntime", "onnx", "backend='onnx'")
    import transformers

    digest = hashlib.blake2b(digest_size=10)
    versions = f"{RECIPE}|torch {torch.__version__}|transformers {transformers.__version__}|onnxruntime {ort.__version__}"
    digest.update(versions.encode())
    digest.update(type(model).__name__.encode())
    config = {
        k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")
    }
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // _FINGERPRINT_ELEMENTS)
        digest.update(flat[::step].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- building a variant
def ensure_variant(model: ScoreModule, folder: Path, quantize: str | None) -> Path:
    """Path of the ``model.onnx`` for ``quantize`` (None: fp32, ``"int8"``), exporting it first if absent."""
    variant = "fp32" if quantize is None else f"{quantize}-{INT8_SCHEME}"
    target = folder / variant / MODEL_FILE
    if target.parent.exists():
        problem = _damage(target.parent)
        if problem is None:
            logger.info("Reusing the ONNX export at %s", target)
            return target
        warn_caller(
            f"The cached ONNX export is damaged: {problem}. Rebuilding {target.parent}.", RuntimeWarning
        )
        _discard(target.parent)
    fp32 = ensure_variant(model, folder, None) if quantize else None
    folder.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(folder)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{variant}-", dir=folder))
    try:
        logger.info("Building the %s ONNX model in %s (one time per weights)", variant, folder)
        report = (
            _export_fp32(model, partial / MODEL_FILE)
            if fp32 is None
            else _quantize_int8(fp32, partial / MODEL_FILE)
        )
        report["files"] = {path.name: _file_record(path) for path in _model_files(partial)}
        (partial / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")
        _publish(partial, folder / variant)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------- checking a cached variant
def _model_files(variant: Path) -> list[Path]:
    """``model.onnx`` and its weights side file, if any."""
    return sorted(path for path in variant.glob(f"{MODEL_FILE}*") if path.is_file())


def _file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _damage(variant: Path) -> str | None:
    """What is wrong with a published variant's files (naming the file), or None when they are as exported."""
    report_path = variant / REPORT_FILE
    try:
        recorded = json.loads(report_path.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError) as exc:
        return f"{report_path} cannot be read ({exc})"
    if not isinstance(recorded, dict) or MODEL_FILE not in recorded:
        return f"{report_path} records no checksum of {MODEL_FILE} (an export by an older autorerank)"
    for name, record in sorted(recorded.items()):
        problem = _file_damage(variant / name, record)
        if problem is not None:
            return problem
    return None


def _file_damage(path: Path, record: Any) -> str | None:
    try:
        stat = path.stat()
        seen = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
        if _VERIFIED.get(path) == seen:
            return None
        if stat.st_size != record["bytes"]:
            return f"{path} has {stat.st_size} bytes where {record['bytes']} were written"
        if _sha256(path) != record["sha256"]:
            return f"{path} does not match the sha256 recorded when it was exported"
    except OSError as exc:
        return f"{path} cannot be read ({exc})"
    except (KeyError, TypeError):
        return f"the record of {path} in {REPORT_FILE} is incomplete"
    _VERIFIED[path] = seen
    return None


def _discard(variant: Path) -> None:
    """Move a damaged variant out of the way (one rename, so no load trusts it meanwhile), then delete it."""
    broken = variant.with_name(f".broken-{variant.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(variant, broken)
    except FileNotFoundError:  # another process discarded it first
        return
    except OSError as exc:
        raise ModelLoadError(
            f"Cannot replace the damaged ONNX export {variant} ({exc}); delete that folder and load again."
        ) from exc
    for path in _model_files(broken):
        _VERIFIED.pop(variant / path.name, None)
    shutil.rmtree(broken, ignore_errors=True)


# ----------------------------------------------------------------------------- publishing a variant
def _remove_abandoned_builds(folder: Path) -> None:
    """Temporary folders left by a process killed mid-build, and damaged variants whose deletion was cut short
    (never loaded, only taking space)."""
    for broken in folder.glob(".broken-*"):
        shutil.rmtree(broken, ignore_errors=True)
    cutoff = time.time() - _ABANDONED_AFTER_S
    for partial in folder.glob(".partial-*"):
        try:
            if partial.stat().st_mtime < cutoff:
                shutil.rmtree(partial)
        except OSError:  # another process is removing or using it
            continue


def _publish(partial: Path, final: Path) -> None:
    """Move a finished build into place in one rename; if another process got there first, keep theirs."""
    try:
        os.rename(partial, final)
    except OSError:
        if not (final / MODEL_FILE).is_file():
            raise
        logger.info("Another process finished %s first; using its files.", final)


def _export_fp32(model: ScoreModule, target: Path) -> dict[str, Any]:
    """Trace the model to ONNX, fuse what onnxruntime can fuse, and check it against torch on fresh inputs."""
    onnx = require("onnx", "onnx", "backend='onnx'")
    traced = target.with_name("traced") / MODEL_FILE
    traced.parent.mkdir()
    try:
        _trace(model, traced)
    except (RuntimeError, TypeError, ValueError) as exc:  # torch.onnx's errors derive from RuntimeError
        raise ModelLoadError(
            f"Cannot export {type(model).__name__} to ONNX ({type(exc).__name__}: {exc}); use backend='torch'."
        ) from exc
    candidates = [("fused", _fuse(model, traced)), ("unfused", onnx.load(str(traced)))]
    for label, proto in candidates:
        if proto is None:
            continue
        _save(onnx, proto, target)
        error = _max_error(model, target)
        if error <= 1e-3:
            shutil.rmtree(traced.parent)
            return {
                "recipe": RECIPE,
                "variant": "fp32",
                "graph": label,
                "max_abs_error_vs_torch": error,
                **_versions(),
            }
        logger.warning(
            "The %s ONNX graph differs from torch by %.3g; trying the next candidate.", label, error
        )
    raise ModelLoadError(
        f"The ONNX export of {type(model).__name__} does not reproduce the torch scores (max error {error:.3g}); "
        "use backend='torch' for this model."
    )


def _trace(model: ScoreModule, target: Path) -> None:
    """TorchScript-based export: needs no package beyond torch and handles transformers encoders well."""
    inputs = sample_inputs(model, batch=2, length=8)
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes["scores"] = {0: "batch"}
    with eager_attention(model.model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation notices about code paths we do not take
        torch.onnx.export(
            model,
            (),
            str(target),
            kwargs=inputs,
            input_names=list(inputs),
            output_names=["scores"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


def _fuse(model: ScoreModule, traced: Path) -> Any | None:
    """onnxruntime's transformer fusions for BERT-family graphs (None for other families)."""
    config = model.config
    if getattr(config, "model_type", None) not in _BERT_FAMILY:
        logger.info(
            "No offline fusion for model_type %r; onnxruntime's own graph optimisations still apply.",
            config.model_type,
        )
        return None
    require("onnxruntime", "onnx", "backend='onnx'")
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.attention_mask_format = AttentionMaskFormat.AttentionMask  # the raw (B, T) mask: any padding
    try:
        with _quiet_root_logger():
            optimized = optimize_model(
                str(traced),
                model_type="bert",
                num_heads=getattr(config, "num_attention_heads", 0),
                hidden_size=getattr(config, "hidden_size", 0),
                optimization_options=options,
                opt_level=0,
            )
    except (RuntimeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        logger.warning("onnxruntime could not fuse this graph (%s); keeping it unfused.", exc)
        return None
    logger.debug("ONNX fusions: %s", optimized.get_fused_operator_statistics())
    proto = optimized.model
    if not any(entry.domain == "com.microsoft" for entry in proto.opset_import):  # fused ops live there
        proto.opset_import.append(
            require("onnx", "onnx", "backend='onnx'").helper.make_opsetid("com.microsoft", 1)
        )
    return proto


def _quantize_int8(fp32: Path, target: Path) -> dict[str, Any]:
    onnx = require("onnx", "onnx", "backend='onnx'")
    require("onnxruntime", "onnx", "backend='onnx'")
    with _quiet_root_logger():
        large = not _all_inline(onnx.load(str(fp32), load_external_data=False))
        how = _quantize_dynamic(onnx, fp32, target, large)
    return {"recipe": RECIPE, "variant": "int8", "quantization": how, **_versions()}


def _quantize_dynamic(onnx: ModuleType, fp32: Path, target: Path, large: bool) -> str:
    """Weights int8 per output channel; activations uint8 per tensor at run time (u8 x s8 is the pairing
    AVX-512 VNNI and AVX2 integer dot products run fastest). Attention scores stay float32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Attention"],
        use_external_data_format=large,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return "dynamic: int8 weights per channel, uint8 activations per tensor"


# ----------------------------------------------------------------------------- helpers
def _max_error(model: ScoreModule, path: Path) -> float:
    """Largest |ORT - torch| score on a batch of another shape than the traced one, relative to scale >= 1."""
    ort = require("onnxruntime", "onnx", "backend='onnx'")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {item.name for item in session.get_inputs()}
    return max_score_error(
        model, lambda feeds: session.run(["scores"], {k: v for k, v in feeds.items() if k in wanted})[0]
    )


def _save(onnx: ModuleType, proto: Any, target: Path) -> None:
    """Save ``proto``; weights over the protobuf limit go to one ``model.onnx.data`` beside it."""
    inline_bytes = sum(len(initializer.raw_data) for initializer in proto.graph.initializer)
    large = inline_bytes > EXTERNAL_DATA_BYTES or not _all_inline(proto)
    for stale in target.parent.glob(f"{target.name}*"):
        stale.unlink()
    onnx.save_model(
        proto,
        str(target),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=f"{target.name}.data",
    )


def _all_inline(proto: Any) -> bool:
    return all(not initializer.external_data for initializer in proto.graph.initializer)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Drop the advice onnxruntime's tools log on the root logger (and keep them from configuring it)."""
    root = logging.getLogger()
    handler = None if root.handlers else logging.NullHandler()  # logging.warning() would call basicConfig
    advice = _FromOnnxruntime()
    root.addFilter(advice)
    if handler is not None:
        root.addHandler(handler)
    try:
        yield
    finally:
        root.removeFilter(advice)
        if handler is not None:
            root.removeHandler(handler)


class _FromOnnxruntime(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname


def _versions() -> dict[str, str]:
    ort = require("onnxruntime", "onnx", "backend='onnx'")
    onnx = require("onnx", "onnx", "backend='onnx'")
    return {"torch": torch.__version__, "onnxruntime": ort.__version__, "onnx": onnx.__version__}
