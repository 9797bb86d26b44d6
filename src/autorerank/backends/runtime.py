"""What every non-torch backend shares: a ``torch.nn.Module`` face over weights that live in another runtime.

The encoder kind calls the module it gets exactly like a transformers model (keyword tensors in, an
object with ``.logits`` out), so scoring never branches on the backend. The runtimes here compute on
the CPU in float32 (or int8 where asked): moving or casting the module is refused with an error
rather than silently ignored.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import InvalidOptionError, ModelLoadError

__all__ = [
    "RuntimeClassifier",
    "RuntimeOutput",
    "check_cpu_devices",
    "check_float32",
    "eager_attention",
    "max_logit_error",
    "sample_inputs",
]

logger = logging.getLogger(__name__)

FEED_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class RuntimeOutput:
    """What the encoder kind reads from a model call."""

    logits: torch.Tensor  # (B, num_labels)


class RuntimeClassifier(torch.nn.Module):
    """A sequence classifier whose forward pass runs in another runtime; subclasses only implement ``_run``.

    It keeps the torch model's ``config`` and reports its parameter shapes (the weights themselves
    live in the runtime), so ``reranker.info`` reads the same as with ``backend="torch"``.
    """

    backend: ClassVar[str]

    def __init__(self, config: Any, parameter_shapes: list[tuple[int, ...]], input_names: list[str]) -> None:
        super().__init__()
        self.config = config
        self._parameter_shapes = parameter_shapes
        self._input_names = input_names
        unknown = set(input_names) - set(FEED_NAMES)
        if unknown:
            raise ModelLoadError(f"The {self.backend} model expects unsupported inputs {sorted(unknown)}.")

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Logits ``(B, num_labels)`` for int64 ``(B, T)`` feeds."""
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> RuntimeOutput:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feeds = {}
        for name in self._input_names:
            tensor = given[name] if given[name] is not None else torch.zeros_like(input_ids)
            feeds[name] = self._as_int64_array(tensor)  # (B, T)
        return RuntimeOutput(torch.from_numpy(np.asarray(self._run(feeds), dtype=np.float32)))

    def _as_int64_array(self, tensor: torch.Tensor) -> np.ndarray:
        if tensor.device.type != "cpu":
            raise InvalidOptionError(f"backend={self.backend!r} takes CPU tensors.")
        return tensor.detach().to(torch.int64).contiguous().numpy()

    # The weights live in the runtime: moving or casting is refused rather than silently ignored.
    def to(self, *args: Any, **kwargs: Any) -> RuntimeClassifier:
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)  # the parser nn.Module.to uses
        if device is not None:
            check_cpu_devices([device], self.backend)
        if dtype is not None and dtype != torch.float32:
            raise InvalidOptionError(
                f"backend={self.backend!r} computes in float32 (int8 weights with quantize='int8'), not {dtype}: "
                "drop use_fp16/use_bf16, or use backend='torch'."
            )
        return self

    def cuda(self, device: Any = None) -> RuntimeClassifier:
        return self.to(
            "cuda" if device is None else torch.device("cuda", device) if isinstance(device, int) else device
        )

    def half(self) -> RuntimeClassifier:
        return self.to(torch.float16)

    def bfloat16(self) -> RuntimeClassifier:
        return self.to(torch.bfloat16)

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        """Shape-only (meta) stand-ins for the runtime's weights, so parameter counts match the torch model."""
        for shape in self._parameter_shapes:
            yield torch.nn.Parameter(torch.empty(shape, device="meta"), requires_grad=False)


def check_cpu_devices(devices: Any, backend: str) -> None:
    """Refuse any device but the CPU, before a slow export or conversion starts."""
    for device in devices or ():
        if torch.device(device).type != "cpu":
            raise InvalidOptionError(
                f"backend={backend!r} runs on the CPU only, not on {device}: pass devices='cpu', "
                "or use backend='torch' there."
            )


def check_float32(model: torch.nn.Module, backend: str) -> None:
    """The runtimes take float32 weights (and quantize them themselves)."""
    dtypes = {parameter.dtype for parameter in model.parameters()}
    if dtypes - {torch.float32}:
        found = ", ".join(sorted(str(dtype).removeprefix("torch.") for dtype in dtypes))
        raise InvalidOptionError(
            f"backend={backend!r} takes float32 weights, but the model was loaded in {found}: "
            "drop use_fp16/use_bf16 (use quantize='int8' for a smaller, faster model), or use backend='torch'."
        )


# ----------------------------------------------------------------------------- converting a model
def sample_inputs(
    model: torch.nn.Module, *, batch: int, length: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A right-padded batch of valid, non-pad token ids (rows shorter than ``length`` are padded)."""
    config = model.config
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, length), generator=generator)  # (B, T)
    ids = torch.where(ids == pad_id, (pad_id + 1) % config.vocab_size, ids)
    lengths = torch.linspace(length, max(3, length // 2), batch).round().long()  # (B,) first row full
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()  # (B, T)
    inputs = {"input_ids": torch.where(mask.bool(), ids, pad_id), "attention_mask": mask}
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        second = torch.arange(length)[None, :] >= (lengths[:, None] // 2)
        type_vocab = getattr(config, "type_vocab_size", 1)
        inputs["token_type_ids"] = (second & mask.bool()).long() if type_vocab > 1 else torch.zeros_like(ids)
    return inputs


def max_logit_error(model: torch.nn.Module, run: Callable[[dict[str, np.ndarray]], np.ndarray]) -> float:
    """Largest |runtime - torch| logit on a padded batch of another shape than the traced one, relative to
    scale >= 1 (inf for a wrong shape or a non-finite value): a trace that baked in a shape or a mask shows here."""
    inputs = sample_inputs(model, batch=3, length=13, seed=1)
    with torch.no_grad():
        expected = model(**inputs).logits.float().numpy()  # (B, L)
    got = np.asarray(run({name: tensor.numpy() for name, tensor in inputs.items()}))
    if got.shape != expected.shape or not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - expected)) / max(1.0, float(np.max(np.abs(expected)))))


@contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Trace plain matmul-softmax attention (the pattern the runtimes fuse), then restore the model's choice."""
    setter = getattr(model, "set_attn_implementation", None)
    original = getattr(model.config, "_attn_implementation", None)
    switched = False
    if setter is not None and original not in (None, "eager"):
        try:
            setter("eager")
            switched = True
        except (ValueError, ImportError, AttributeError):  # no eager path here: trace what the model has
            logger.debug("%s has no eager attention; tracing %s attention.", type(model).__name__, original)
    try:
        yield
    finally:
        if switched:
            setter(original)
