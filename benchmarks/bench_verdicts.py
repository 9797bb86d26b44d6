"""Does autorerank meet its speed targets (issue 16)? Every target is judged against FlagEmbedding fp32 at its
*best* batch size in the same run (the row of its sweep with the highest median pairs/s), never at its defaults.

- fp32: autorerank fp32 >= 1.2x on MiniLM and on the base-size model (near the fp32 ceiling, so the fraction of
  the machine's fp32 matmul peak each reaches is stated); >= 1.5x on the layer-wise and lightweight models, with
  the same scores (every score within 1e-3 of FlagEmbedding's);
- bf16: autorerank bf16 >= 2.5x with Spearman >= 0.999 against fp32 scores, on every model, where the CPU has
  native bf16 (AVX512-BF16 or AMX); elsewhere the target does not apply;
- int8: each int8 runtime on MiniLM >= 3x, faster than autorerank bf16, with Spearman >= 0.99;
- LLM: >= 1.5x with at most half the peak memory (fp32, bf16 and int8 rows count; their Spearman is stated);
- memory: every autorerank row's peak RSS at most FlagEmbedding's on the same model.

A verdict is decided by the ratio of medians; its range over repeats (our slowest run over the peer's fastest, and
our fastest over its slowest) is printed with it and flagged where it reaches both sides of the target. A verdict
whose rows were not run (or failed) says NOT MEASURED and which flag adds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_stats import (
    Measurement,
    best_row,
    defaults_row,
    group,
    max_abs_diff,
    ratio,
    ratio_range,
    spearman,
)

BASELINE = "FlagEmbedding fp32"
FP32 = "autorerank fp32"
BF16 = "autorerank bf16"
INT8_VARIANTS = ("autorerank onnx int8", "autorerank openvino int8")
FP32_TARGETS = {"minilm": 1.2, "xlmr-base": 1.2, "layerwise": 1.5, "lightweight": 1.5}  # min speed ratio
SAME_SCORES = {"layerwise": 1e-3, "lightweight": 1e-3}  # max |score difference| from FlagEmbedding fp32
BF16_TARGET = (2.5, 0.999)  # min speed ratio, min Spearman
INT8_TARGET = ("minilm", 3.0, 0.99)  # model, min speed ratio, min Spearman (and faster than autorerank bf16)
LLM_TARGET = ("llm", 1.5, 0.5)  # model, min speed ratio, max peak-memory ratio
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The flags that decide which precision wins on a CPU: AMX changes the verdicts (README, Speed), so reports name them.
MATRIX_FLAGS = ("avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")

MET, NOT_MET, NOT_MEASURED, NOT_APPLICABLE = "MET", "NOT MET", "NOT MEASURED", "NOT APPLICABLE"


@dataclass(frozen=True)
class Verdict:
    target: str  # "fp32", "bf16", "int8", "llm" or "memory"
    model: str
    status: str  # MET, NOT MET, NOT MEASURED or NOT APPLICABLE
    detail: str

    def line(self) -> str:
        return f"  {self.target:<6} {self.model:<9} {self.detail}: {self.status}"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def native_bf16(flags: set[str]) -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX), so the bf16 target applies."""
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def matrix_units(flags: set[str]) -> list[str]:
    """The int8/bf16 matrix units among the CPU's flags (VNNI, AVX512-BF16, AMX), in a fixed order."""
    return [flag for flag in MATRIX_FLAGS if flag in flags]


def baseline(measurements: Sequence[Measurement], model: str) -> Measurement | None:
    """FlagEmbedding fp32 at its best batch size on this model."""
    return best_row(group(measurements, model, BASELINE))


def _row(measurements: Sequence[Measurement], model: str, label: str) -> Measurement | None:
    row = defaults_row(group(measurements, model, label))
    return row if row is not None and row.ok else None


def _speed(row: Measurement, base: Measurement, target: float) -> str:
    """The median ratio with its range over repeats, flagged where the range reaches both sides of the target."""
    low, high = ratio_range(row, base)
    crosses = ", crosses the target" if low < target <= high else ""
    return f"{ratio(row, base):.2f}x ({low:.2f}-{high:.2f}x over repeats{crosses})"


def _missing(target: str, model: str, what: str) -> Verdict:
    return Verdict(target, model, NOT_MEASURED, what)


def fp32_verdicts(
    measurements: Sequence[Measurement], flops_per_pair: dict[str, float], peak_gflops: float
) -> list[Verdict]:
    verdicts = []
    for model in [m for m in FP32_TARGETS if any(row.model == m for row in measurements)]:
        min_speed = FP32_TARGETS[model]
        base, row = baseline(measurements, model), _row(measurements, model, FP32)
        if base is None or row is None:
            verdicts.append(_missing("fp32", model, f"needs {FP32} and {BASELINE}, run cleanly"))
            continue
        fraction = ""
        if model in flops_per_pair and peak_gflops > 0:
            of_peak = [flops_per_pair[model] * m.median / 1e9 / peak_gflops for m in (row, base)]
            fraction = f"; {of_peak[0]:.0%} of the fp32 matmul peak (FlagEmbedding {of_peak[1]:.0%})"
        ok = ratio(row, base) >= min_speed
        detail = (
            f"{FP32} {_speed(row, base, min_speed)} vs FE {base.setting} (target >= {min_speed}x){fraction}"
        )
        if model in SAME_SCORES:
            difference = max_abs_diff(row.scores, base.scores)
            ok = ok and difference <= SAME_SCORES[model]
            detail += f"; scores within {difference:.1e} of FE's (target <= {SAME_SCORES[model]:.0e})"
        verdicts.append(Verdict("fp32", model, MET if ok else NOT_MET, detail))
    return verdicts


def bf16_verdicts(measurements: Sequence[Measurement], has_native_bf16: bool) -> list[Verdict]:
    min_speed, min_rho = BF16_TARGET
    if not has_native_bf16:
        why = "this CPU has neither AVX512-BF16 nor AMX (no avx512_bf16 or amx_bf16 in /proc/cpuinfo)"
        return [Verdict("bf16", "-", NOT_APPLICABLE, why)]
    verdicts = []
    for model in dict.fromkeys(row.model for row in measurements):
        base, row = baseline(measurements, model), _row(measurements, model, BF16)
        if base is None or row is None:
            verdicts.append(_missing("bf16", model, f"needs {BF16} (--use-bf16) and {BASELINE}, run cleanly"))
            continue
        rho = spearman(row.scores, base.scores)
        ok = ratio(row, base) >= min_speed and rho >= min_rho
        detail = f"{BF16} {_speed(row, base, min_speed)}, Spearman {rho:.4f} (target >= {min_speed}x, >= {min_rho})"
        verdicts.append(Verdict("bf16", model, MET if ok else NOT_MET, detail))
    return verdicts


def int8_verdicts(measurements: Sequence[Measurement]) -> list[Verdict]:
    model, min_speed, min_rho = INT8_TARGET
    if not any(row.model == model for row in measurements):
        return []
    labels = [label for label in INT8_VARIANTS if group(measurements, model, label)]
    if not labels:
        return [_missing("int8", model, "no int8 row (add --openvino or --onnx)")]
    base, bf16 = baseline(measurements, model), _row(measurements, model, BF16)
    verdicts = []
    for label in labels:
        row = _row(measurements, model, label)
        if base is None or row is None:
            verdicts.append(_missing("int8", model, f"needs {label} and {BASELINE}, run cleanly"))
            continue
        rho = spearman(row.scores, base.scores)
        target = f"(target >= {min_speed}x, faster than bf16, Spearman >= {min_rho})"
        detail = f"{label} {_speed(row, base, min_speed)}, Spearman {rho:.4f}"
        if bf16 is None:
            verdicts.append(_missing("int8", model, f"{detail}; {BF16} not run (add --use-bf16) {target}"))
            continue
        ok = ratio(row, base) >= min_speed and rho >= min_rho and row.median > bf16.median
        detail += f", {ratio(row, bf16):.2f}x {BF16}"
        verdicts.append(Verdict("int8", model, MET if ok else NOT_MET, f"{detail} {target}"))
    return verdicts


def llm_verdicts(measurements: Sequence[Measurement]) -> list[Verdict]:
    model, min_speed, max_memory = LLM_TARGET
    if not any(row.model == model for row in measurements):
        return []
    rows = [row for row in measurements if row.model == model and row.library == "autorerank"]
    base = baseline(measurements, model)
    if base is None or not rows:
        return [_missing("llm", model, f"needs an autorerank row and {BASELINE}, run cleanly")]
    verdicts = []
    for row in rows:
        if not row.ok:
            verdicts.append(_missing("llm", model, f"{row.label} failed"))
            continue
        memory = row.peak_rss_mib / base.peak_rss_mib
        rho = "" if row.label == FP32 else f", Spearman {spearman(row.scores, base.scores):.4f}"
        ok = ratio(row, base) >= min_speed and memory <= max_memory
        detail = (
            f"{row.label} {_speed(row, base, min_speed)}, {memory:.2f}x peak memory{rho} vs FE {base.setting} "
            f"(target >= {min_speed}x, <= {max_memory}x)"
        )
        verdicts.append(Verdict("llm", model, MET if ok else NOT_MET, detail))
    return verdicts


def memory_verdicts(measurements: Sequence[Measurement]) -> list[Verdict]:
    verdicts = []
    for model in dict.fromkeys(row.model for row in measurements):
        base = baseline(measurements, model)
        rows = [row for row in measurements if row.model == model and row.library == "autorerank" and row.ok]
        if base is None or not rows:
            verdicts.append(_missing("memory", model, f"needs an autorerank row and {BASELINE}, run cleanly"))
            continue
        worst = max(rows, key=lambda row: row.peak_rss_mib)
        over = [row for row in rows if row.peak_rss_mib > base.peak_rss_mib]
        detail = (
            f"every autorerank row's peak RSS <= FE {base.setting} ({base.peak_rss_mib:.0f} MiB); "
            f"largest {worst.label} {worst.peak_rss_mib:.0f} MiB ({worst.peak_rss_mib / base.peak_rss_mib:.2f}x)"
        )
        if over:
            detail += "; over: " + ", ".join(row.label for row in over)
        verdicts.append(Verdict("memory", model, NOT_MET if over else MET, detail))
    return verdicts


def verdicts(
    measurements: Sequence[Measurement],
    flops_per_pair: dict[str, float],
    peak_gflops: float,
    has_native_bf16: bool,
) -> list[Verdict]:
    """Every target's verdict, in the order the report prints them."""
    return [
        *fp32_verdicts(measurements, flops_per_pair, peak_gflops),
        *bf16_verdicts(measurements, has_native_bf16),
        *int8_verdicts(measurements),
        *llm_verdicts(measurements),
        *memory_verdicts(measurements),
    ]
