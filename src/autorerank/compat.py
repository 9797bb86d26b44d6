"""Every private or version-dependent torch/transformers API autorerank relies on, in one place.

Each wrapper names the API it wraps and why autorerank needs it, and falls back to public behaviour where the API
is missing or misbehaves; tests/test_compat.py runs each one against the installed torch and transformers, so an
upgrade that breaks one fails there first. transformers is imported inside the functions, keeping
``import autorerank`` light.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "cache_argument",
    "cache_key_values",
    "concrete_model_class",
    "dtype_kwargs",
    "eager_attention",
    "init_zeros_",
    "new_dynamic_cache",
    "no_cudnn_attention",
    "onednn_linear",
    "quiet_weight_loading",
]

# oneDNN keeps every primitive it builds (1024 by default), and each GEMM shape is a new one. autorerank's own
# models round their GEMMs' row counts to a few sizes (models/linear.py: 31 primitives for 512 MiniLM-L6 pairs), so
# 64 keeps all of theirs, while models run by transformers, whose every batch is a new shape, cannot fill the cache
# with hundreds (about 150 MiB on MiniLM-L6 at 1024). Read when oneDNN builds its first primitive; a value set by
# the user wins, and a process that used oneDNN before keeps its cache as it is.
ONEDNN_CACHE_CAPACITY = "64"

logger = logging.getLogger(__name__)


@functools.cache
def onednn_linear() -> Any | None:
    """oneDNN's fused CPU linear ``torch.ops.mkldnn._linear_pointwise`` (bias plus one post-op), or None.

    An internal torch op (the one torch.compile emits on CPUs) that runs reranker GEMMs 15-50% faster than
    ``F.linear`` and fuses the bias, activations, residual additions and gating products. Being internal, every
    post-op autorerank uses (``autorerank.models.linear``) is checked numerically against torch on first use rather
    than trusted (any failure means the portable path), and the verdict is cached for the process: a few tiny
    GEMMs, run once, never at import time.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)
    op = (
        getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
    )
    if op is None:
        return None
    generator = torch.Generator().manual_seed(0)
    x, weight, bias, other = (
        torch.randn(shape, generator=generator) for shape in ((3, 8), (5, 8), (5,), (3, 5))
    )
    expected, unbiased = F.linear(x, weight, bias), F.linear(x, weight)
    checks = [
        (lambda: op(x, weight, bias, "none", [], ""), expected),
        (lambda: op(x, weight, bias, "gelu", [], "none"), F.gelu(expected)),
        (lambda: op(x, weight, bias, "gelu", [], "tanh"), F.gelu(expected, approximate="tanh")),
        (lambda: op(x, weight, bias, "relu", [], ""), F.relu(expected)),
        (lambda: op(x, weight, None, "swish", [], ""), F.silu(unbiased)),
        (lambda: op.binary(x, other, weight, bias, "add"), expected + other),
        (lambda: op.binary(x, other, weight, None, "mul"), unbiased * other),
    ]
    try:
        with torch.inference_mode():
            agree = all(torch.allclose(call(), want, atol=1e-4) for call, want in checks)
    except (RuntimeError, TypeError, AttributeError) as exc:
        logger.info("oneDNN fused linear unavailable (%s); using F.linear.", exc)
        return None
    if not agree:
        logger.info("oneDNN fused linear disagrees with F.linear here; using F.linear.")
        return None
    return op


def no_cudnn_attention(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """On CUDA, scaled-dot-product attention without its cuDNN backend (flash, memory-efficient and math stay).

    torch picks cuDNN attention for half precision on recent GPUs, and cuDNN builds an execution plan for every
    new (batch, length) shape: 16 ms of CPU each, measured on an H200. A reranker's length-sorted batches are
    nearly all new shapes, so xlmr-base in fp16 scored 266 pairs/s the first time it saw them and 5536 once
    they were cached. ``torch.nn.attention.sdpa_kernel`` (torch 2.3+) sets process-wide flags and restores them
    on exit; older torch keeps its default backends.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        return contextlib.nullcontext()
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(backends)


def init_zeros_(tensor: torch.Tensor) -> torch.Tensor:
    """Zero ``tensor`` in a model's ``_init_weights`` unless it was already loaded from the checkpoint.

    transformers 5 may run ``_init_weights`` after loading, and only its ``transformers.initialization`` helpers
    skip tensors flagged as loaded; transformers 4 has no such module but only initialises missing weights, so
    ``torch.nn.init`` is safe there.
    """
    try:
        from transformers import initialization
    except ImportError:
        return nn.init.zeros_(tensor)
    return initialization.zeros_(tensor)


def concrete_model_class(model_class: Any, config: Any) -> Any | None:
    """The class an Auto class (``AutoModelForCausalLM``...) builds for ``config``, or ``model_class`` itself when
    it is concrete; None for a config the Auto class does not map. ``from_pretrained`` with a state dict and no
    path needs the concrete class; transformers keeps the map in the private ``_model_mapping``."""
    mapping = getattr(model_class, "_model_mapping", None)
    if mapping is None:
        return model_class
    try:
        return mapping[type(config)]
    except (KeyError, ValueError):
        return None


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The ``from_pretrained`` keyword for the weights' dtype: ``dtype`` since transformers 4.56, ``torch_dtype``
    before (the old name is deprecated, and warns, from 4.56 on)."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


@contextlib.contextmanager
def quiet_weight_loading() -> Iterator[None]:
    """Silence transformers' per-load "Loading weights" progress bar, restoring its previous state afterwards.

    Uses the ``transformers.utils.logging`` progress-bar switches, a process-wide setting: loading is quick and the
    bar clutters every CLI run and log.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with plain matmul-softmax attention, then restore its own choice.

    Reads the private ``config._attn_implementation`` and switches with ``set_attn_implementation`` (transformers
    4.56+): tracing for ONNX and OpenVINO needs the eager pattern those runtimes fuse. A model without an eager path,
    or without the setter, is left as it is.
    """
    setter = getattr(model, "set_attn_implementation", None)
    original = getattr(getattr(model, "config", None), "_attn_implementation", None)
    switched = False
    if setter is not None and original not in (None, "eager"):
        try:
            setter("eager")
            switched = True
        except (ValueError, ImportError, AttributeError):  # no eager path here: keep what the model has
            logger.debug("%s has no eager attention; keeping %s attention.", type(model).__name__, original)
    try:
        yield
    finally:
        if switched and setter is not None:
            setter(original)


@functools.cache
def cache_argument(forward: Callable[..., Any]) -> str:
    """The name a transformers decoder's ``forward`` (its class's function) gives its key/value cache: ``cache``
    from transformers 5.24, ``past_key_values`` before (5.24 still takes that, deprecated). Cached: asked once per
    batch."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def new_dynamic_cache(cache_class: Any, config: Any) -> Any:
    """A transformers ``DynamicCache`` (or subclass): from transformers 5 its layers follow the config's layer
    types (full or sliding attention); transformers 4 takes no config."""
    try:
        return cache_class(config=config)
    except TypeError:
        return cache_class()


def cache_key_values(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values in a ``DynamicCache``: ``layers`` in transformers 5, ``key_cache`` and
    ``value_cache`` in 4."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return list(zip(cache.key_cache, cache.value_cache))
