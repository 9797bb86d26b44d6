"""Which devices to run on and in which precision."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import InvalidOptionError, warn_caller

__all__ = ["DeviceSpec", "auto_precision", "native_cpu_bf16", "resolve_devices", "resolve_dtype"]


DeviceSpec = str | int | torch.device | Sequence[str | int | torch.device] | None


# Accelerators torch may have (NPU and MUSA through their vendors' torch plugins), in FlagEmbedding's order.
_ACCELERATORS = ("cuda", "npu", "musa")


def resolve_devices(devices: DeviceSpec) -> list[str]:
    """Device names as FlagEmbedding reads ``devices``: None picks every accelerator device (CUDA, then NPU, then
    MUSA), else MPS, else the CPU; an int is an index on the machine's accelerator. A device this machine does not
    have is refused here, not in a worker or deep inside torch."""
    if devices is None:
        return _all_devices()
    if isinstance(devices, (str, int, torch.device)):
        devices = [devices]
    if isinstance(devices, Sequence) and len(devices) == 0:
        raise InvalidOptionError("devices is an empty list; pass None to pick devices automatically.")
    return [_checked(device) for device in devices]


def _all_devices() -> list[str]:
    for name in _ACCELERATORS:
        count = _device_count(name)
        if count:
            return [f"{name}:{index}" for index in range(count)]
    return ["mps"] if _device_count("mps") else ["cpu"]


def _device_count(accelerator: str) -> int:
    if accelerator == "mps":
        backend = getattr(torch.backends, "mps", None)
        return int(backend is not None and backend.is_available())
    module = getattr(torch, accelerator, None)
    try:
        return int(module.device_count()) if module is not None and module.is_available() else 0
    except (AttributeError, RuntimeError):  # a half-installed vendor plugin
        return 0


def _checked(device: object) -> str:
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise InvalidOptionError(
            "devices must be a str, an int, or a list of them (e.g. 'cpu', 0, ['cuda:0', 'cuda:1']), "
            f"got {device!r}."
        )
    if isinstance(device, int):
        accelerator = next((name for name in _ACCELERATORS if _device_count(name)), "cuda")
        device = f"{accelerator}:{device}"
    name = str(device)
    try:
        parsed = torch.device(name)
    except RuntimeError as exc:
        raise InvalidOptionError(f"Unknown device {name!r}: {exc}") from exc
    if parsed.type in (*_ACCELERATORS, "mps"):
        count = _device_count(parsed.type)
        if parsed.index is not None and parsed.index >= count or count == 0:
            have = f"{count} {parsed.type} device(s)" if count else f"no {parsed.type} device"
            raise InvalidOptionError(
                f"devices={name!r}: this machine has {have} (torch {torch.__version__}); "
                "pass devices='cpu', or None to use what is there."
            )
    return name


def resolve_dtype(
    use_fp16: bool, use_bf16: bool, devices: list[str], precision: str | None = None, backend: str = "torch"
) -> torch.dtype:
    """fp16 where asked and not on CPU (refused there with a warning, as in the reference); bf16 where asked.

    ``precision`` names the same choice in one option (``auto``: see ``auto_precision``); it cannot be combined
    with the switches, so no call has two answers.
    """
    if precision is not None and (use_fp16 or use_bf16):
        switch = "use_fp16" if use_fp16 else "use_bf16"
        raise InvalidOptionError(
            f"precision={precision!r} and {switch}=True both choose the precision: pass only one of them."
        )
    if precision == "auto":
        precision = auto_precision(devices) if backend == "torch" else "fp32"
    if precision is not None:
        use_fp16, use_bf16 = precision == "fp16", precision == "bf16"
    on_cpu = any(torch.device(device).type == "cpu" for device in devices)
    if use_fp16 and on_cpu:
        warn_caller("use_fp16 is not supported on CPU; scoring in float32 instead.")
        use_fp16 = False
    if use_fp16:
        return torch.float16
    if use_bf16:
        return torch.bfloat16
    return torch.float32


def auto_precision(devices: list[str]) -> str:
    """The fast precision that still ranks like fp32 on these devices: bf16 on a CPU that computes it natively
    (MiniLM: 1.6x fp32, Spearman 0.9997 on the speed benchmark), fp16 on CUDA (every golden record at Spearman
    >= 0.992 against fp32 on an H200, where bf16 went down to 0.949), else fp32 (emulated bf16 is slower)."""
    kinds = {torch.device(device).type for device in devices}
    if kinds == {"cuda"}:
        return "fp16"
    if kinds == {"cpu"} and native_cpu_bf16():
        return "bf16"
    return "fp32"


@functools.cache
def native_cpu_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has bf16 arithmetic (x86 AVX512-BF16 or AMX-BF16, Arm BF16), from the flags in
    ``cpuinfo``; False where that file does not exist (not Linux)."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    flags = {
        flag
        for line in lines
        if line.startswith(("flags", "Features"))
        for flag in line.partition(":")[2].split()
    }
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
