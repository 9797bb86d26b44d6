"""The runtime protocol, and what every runtime other than torch shares.

A runtime holds a loaded model's weights and scores one ready batch; the pipeline never branches on which
one it has. Chosen once, at load, from the kind's ``backends`` (see :func:`autorerank.backends.build_runtime`).
Runtimes other than torch trace the kind's :class:`~autorerank.kinds.base.ScoreModule` and compute on the
CPU in float32 (int8 where asked).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from ..batching import Batch
from ..errors import InvalidOptionError
from ..kinds.base import Plan, ScoreModule

__all__ = [
    "ExportedRuntime",
    "Runtime",
    "RuntimeInfo",
    "check_cpu_devices",
    "check_float32",
    "max_score_error",
    "sample_inputs",
]


@dataclass(frozen=True)
class RuntimeInfo:
    """What a runtime runs, for ``reranker.info`` and the server's ``/info``."""

    backend: str
    device: str
    dtype: str
    architecture: str
    num_parameters: int


class Runtime(Protocol):
    """Scores ready batches with one model's weights."""

    @property
    def backend(self) -> str: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def padded(self) -> bool:
        """Whether it takes padded (B, T) batches (every runtime here does)."""
        ...

    def score(self, batch: Batch, plan: Plan) -> torch.Tensor:
        """Scores ``(plan.n_outputs, B)`` of one padded batch on ``device``."""
        ...

    def describe(self) -> RuntimeInfo: ...


class ExportedRuntime(ABC):
    """A runtime running a traced :class:`ScoreModule` on the CPU; subclasses implement ``run``."""

    backend: ClassVar[str]
    padded = True

    def __init__(self, module: ScoreModule) -> None:
        self.device = torch.device("cpu")
        self.input_names = module.input_names
        self._info = RuntimeInfo(
            backend=self.backend,
            device="cpu",
            dtype="float32",
            architecture=_architecture(module.model),
            num_parameters=sum(parameter.numel() for parameter in module.model.parameters()),
        )

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Scores ``(B,)`` for int64 ``(B, T)`` feeds named as ``input_names``."""

    def score(self, batch: Batch, plan: Plan) -> torch.Tensor:
        given = batch.model_inputs()
        feeds = {
            name: _as_int64_array(given.get(name, torch.zeros_like(batch.input_ids)))
            for name in self.input_names
        }
        return torch.from_numpy(np.asarray(self.run(feeds), dtype=np.float32).reshape(1, -1))  # (1, B)

    def describe(self) -> RuntimeInfo:
        return self._info


def _architecture(model: torch.nn.Module) -> str:
    architectures = getattr(getattr(model, "config", None), "architectures", None) or [type(model).__name__]
    return str(architectures[0])


def _as_int64_array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.int64).contiguous().numpy()  # (B, T)


def check_cpu_devices(devices: Sequence[str] | None, backend: str) -> None:
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
def sample_inputs(module: ScoreModule, *, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A padded batch of valid, non-pad token ids (rows shorter than ``length`` are padded on the module's
    side), for the inputs the module reads."""
    config: Any = module.config
    pad_id = config.pad_token_id if getattr(config, "pad_token_id", None) is not None else 0
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, length), generator=generator)  # (B, T)
    ids = torch.where(ids == pad_id, (pad_id + 1) % config.vocab_size, ids)
    lengths = torch.linspace(length, max(3, length // 2), batch).round().long()  # (B,) first row full
    columns = torch.arange(length)[None, :]
    mask = (columns < lengths[:, None]).long()  # (B, T), right-padded
    if module.padding_side == "left":
        mask = mask.flip(-1)  # (B, T), left-padded
    inputs = {"input_ids": torch.where(mask.bool(), ids, pad_id), "attention_mask": mask}
    if "token_type_ids" in module.input_names:
        second = columns >= (lengths[:, None] // 2)
        type_vocab = getattr(config, "type_vocab_size", 1)
        inputs["token_type_ids"] = (second & mask.bool()).long() if type_vocab > 1 else torch.zeros_like(ids)
    return inputs


def max_score_error(module: ScoreModule, run: Callable[[dict[str, np.ndarray]], np.ndarray]) -> float:
    """Largest |runtime - torch| score on a padded batch of another shape than the traced one, relative to
    scale >= 1 (inf for a wrong shape or a non-finite value): a trace that baked in a shape or a mask shows here."""
    inputs = sample_inputs(module, batch=3, length=13, seed=1)
    with torch.no_grad():
        expected = module(**inputs).float().numpy()  # (B,)
    got = np.asarray(run({name: tensor.numpy() for name, tensor in inputs.items()}))
    if got.shape != expected.shape or not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - expected)) / max(1.0, float(np.max(np.abs(expected)))))
