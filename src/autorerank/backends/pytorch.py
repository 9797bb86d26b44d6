"""The torch runtime: the kind's own module, on one device, in the loaded dtype."""

from __future__ import annotations

import torch

from ..batching import Batch
from ..compat import no_cudnn_attention
from ..kinds.base import Kind, Plan
from .base import RuntimeInfo

__all__ = ["TorchRuntime"]


class TorchRuntime:
    """Runs ``kind.score_batch`` on ``model`` (placed on ``device`` once, here) without autograd, and on CUDA
    without cuDNN attention (see ``compat.no_cudnn_attention``)."""

    backend = "torch"
    padded = True

    def __init__(self, kind: Kind, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.kind = kind
        self.device = device
        self.dtype = dtype
        self.model = model.to(device=device, dtype=dtype).eval()

    def score(self, batch: Batch, plan: Plan) -> torch.Tensor:
        with torch.inference_mode(), no_cudnn_attention(self.device):
            return self.kind.score_batch(self.model, batch, plan)

    def describe(self) -> RuntimeInfo:
        inner = getattr(self.model, "model", self.model)  # a ScoreModule's loaded model
        architectures = getattr(getattr(self.model, "config", None), "architectures", None)
        return RuntimeInfo(
            backend=self.backend,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            architecture=str((architectures or [type(inner).__name__])[0]),
            num_parameters=sum(parameter.numel() for parameter in self.model.parameters()),
        )
