"""Which devices to run on and in which precision."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from .errors import InvalidOptionError

__all__ = ["DeviceSpec", "resolve_devices", "resolve_dtype"]


DeviceSpec = str | int | torch.device | Sequence[str | int | torch.device] | None


def resolve_devices(devices: DeviceSpec) -> list[str]:
    """Device names as FlagEmbedding reads ``devices``: None picks every CUDA device, else the CPU."""
    if devices is None:
        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return ["mps"]
        return ["cpu"]
    if isinstance(devices, (str, int, torch.device)):
        devices = [devices]
    if isinstance(devices, Sequence) and len(devices) == 0:
        raise InvalidOptionError("devices is an empty list; pass None to pick devices automatically.")
    resolved = []
    for device in devices:
        if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
            raise InvalidOptionError(
                f"devices must be a str, an int, or a list of them (e.g. 'cpu', 0, ['cuda:0', 'cuda:1']), got {device!r}."
            )
        name = f"cuda:{device}" if isinstance(device, int) else str(device)
        try:
            torch.device(name)
        except RuntimeError as exc:
            raise InvalidOptionError(f"Unknown device {device!r}: {exc}") from exc
        resolved.append(name)
    return resolved


def resolve_dtype(use_fp16: bool, use_bf16: bool, devices: list[str]) -> torch.dtype:
    """fp16 where asked and not on CPU (refused there with a warning, as in the reference); bf16 where asked."""
    on_cpu = any(torch.device(device).type == "cpu" for device in devices)
    if use_fp16 and on_cpu:
        warnings.warn(
            "use_fp16 is not supported on CPU; scoring in float32 instead.", UserWarning, stacklevel=4
        )
        use_fp16 = False
    if use_fp16:
        return torch.float16
    if use_bf16:
        return torch.bfloat16
    return torch.float32
