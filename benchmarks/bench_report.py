"""The printed report: one table per run, ratios against the baseline, score agreement and target checks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

# Speed-up and memory targets against FlagEmbedding fp32: (min speed ratio, max memory ratio).
TARGETS = {"minilm": (1.4, None), "xlmr-base": (1.4, None), "llm": (1.5, 0.5)}
TARGET_VARIANT = "autorerank fp32"
# The int8 target, checked for each int8 runtime: model, min speed ratio, min Spearman with the baseline's scores.
INT8_VARIANTS = ("autorerank onnx int8", "autorerank openvino int8")
INT8_TARGET = ("minilm", 3.0, 0.99)
# fp32 scores of two correct implementations differ only by summation order.
SCORE_TOLERANCE = 1e-3


@dataclass
class Measurement:
    model: str
    label: str
    result: dict[str, Any] | None = None
    peak_rss_mib: float = 0.0
    error: str | None = None

    @property
    def pairs_per_s(self) -> float:
        assert self.result is not None
        return self.result["pairs"] / self.result["seconds"]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "label": self.label,
            "peak_rss_mib": self.peak_rss_mib,
            "error": self.error,
            "result": self.result,
        }


def max_abs_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (tied scores share their mean rank): how well a variant keeps the baseline's ordering."""
    if len(a) != len(b):
        raise ValueError(f"cannot correlate {len(a)} scores with {len(b)}")
    ranks_a, ranks_b = _ranks(a), _ranks(b)
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return float("nan")
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def _ranks(values: list[float]) -> np.ndarray:
    _, inverse, counts = np.unique(np.asarray(values), return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # rank of the first copy of each distinct value
    return (first + (counts - 1) / 2)[inverse]


def _row(m: Measurement, base: Measurement | None, flops: int, peak_gflops: float) -> list[str]:
    if m.result is None:
        return [m.model, m.label, "FAILED: " + (m.error or "")]
    r = m.result
    gflops = flops / r["seconds"] / 1e9
    has_base = base is not None and base.result is not None
    speed = f"{m.pairs_per_s / base.pairs_per_s:.2f}x" if has_base else "-"
    memory = f"{m.peak_rss_mib / base.peak_rss_mib:.2f}x" if has_base else "-"
    diff = f"{max_abs_diff(r['scores'], base.result['scores']):.1e}" if has_base else "-"
    rho = f"{spearman(r['scores'], base.result['scores']):.4f}" if has_base else "-"
    return [
        m.model,
        m.label,
        f"{r['version']}",
        str(r["threads"]),
        str(r["pairs"]),
        f"{r['seconds']:.1f}",
        f"{m.pairs_per_s:.2f}",
        speed,
        f"{m.peak_rss_mib:.0f}",
        memory,
        f"{gflops:.0f}",
        f"{100 * gflops / peak_gflops:.0f}%",
        diff,
        rho,
    ]


HEADER = [
    "model",
    "library",
    "version",
    "thr",
    "pairs",
    "s",
    "pairs/s",
    "speed vs FE",
    "peak MiB",
    "mem vs FE",
    "GFLOP/s",
    "of peak",
    "max|dscore| vs FE",
    "Spearman vs FE",
]


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows if len(row) == len(HEADER)) for i in range(len(HEADER))]
    for index, row in enumerate(rows):
        if len(row) < len(HEADER):
            print("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2]]))
            continue
        print(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
            )
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))


def _target_lines(measurements: list[Measurement], baselines: dict[str, Measurement]) -> list[str]:
    lines = []
    for m in measurements:
        base = baselines.get(m.model)
        if m.label != TARGET_VARIANT or m.result is None or base is None or base.result is None:
            continue
        min_speed, max_memory = TARGETS[m.model]
        speed = m.pairs_per_s / base.pairs_per_s
        memory = m.peak_rss_mib / base.peak_rss_mib
        ok = speed >= min_speed and (max_memory is None or memory <= max_memory)
        need = f">= {min_speed}x speed" + (f", <= {max_memory}x peak memory" if max_memory else "")
        lines.append(
            f"  {m.model:<9} {speed:.2f}x speed, {memory:.2f}x memory  (target {need}): "
            + ("MET" if ok else "NOT MET")
        )
    model, min_speed, min_rho = INT8_TARGET
    for m in measurements:
        base = baselines.get(m.model)
        if (
            m.label not in INT8_VARIANTS
            or m.model != model
            or m.result is None
            or base is None
            or base.result is None
        ):
            continue
        speed = m.pairs_per_s / base.pairs_per_s
        rho = spearman(m.result["scores"], base.result["scores"])
        ok = speed >= min_speed and rho >= min_rho
        lines.append(
            f"  {m.model:<9} {m.label}: {speed:.2f}x speed, Spearman {rho:.4f} vs fp32 scores "
            f"(target >= {min_speed}x, >= {min_rho}): " + ("MET" if ok else "NOT MET")
        )
    return lines


def print_report(
    measurements: list[Measurement],
    work: dict[str, dict[str, Any]],
    peak_gflops: float,
    baseline_label: str,
    samples: list[dict[str, Any]],
) -> None:
    baselines = {m.model: m for m in measurements if m.label == baseline_label}
    print("\n== autorerank speed benchmark (CPU, fp32 unless labelled, max_length 512) ==")
    sampled = ", ".join(f"{s['when']} {s['best_gflops']:.0f}" for s in samples)
    print(
        f"machine fp32 matmul peak: {peak_gflops:.0f} GFLOP/s, torch {samples[0]['torch']}, "
        f"{samples[0]['threads']} threads (best 2048^3 torch.matmul; samples: {sampled})"
    )
    print(
        f"CPU load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min) on "
        f"{os.cpu_count()} CPUs: other processes running at the same time slow every row."
    )
    for model, w in work.items():
        print(
            f"{model}: {w['pairs']} pairs, {w['tokens'] / w['pairs']:.0f} tokens/pair unpadded, "
            f"{w['flops'] / w['pairs'] / 1e9:.2f} GFLOP/pair"
        )
    rows = [HEADER]
    for m in measurements:
        rows.append(_row(m, baselines.get(m.model), work[m.model]["flops"], peak_gflops))
    print()
    _print_table(rows)
    print("\npeak MiB: the child process's peak RSS (wait4), interpreter and model weights included.")
    print(
        "GFLOP/s and 'of peak' count model FLOPs from the *unpadded* token counts of the pairs (the same work is"
    )
    print("charged to every library; padding and unread logits count as waste).")
    bad = [
        m
        for m in measurements
        if m.result is not None
        and m.label.endswith("fp32")
        and m.model in baselines
        and baselines[m.model].result is not None
        and max_abs_diff(m.result["scores"], baselines[m.model].result["scores"]) > SCORE_TOLERANCE
    ]
    for m in bad:
        print(
            f"WARNING: {m.label} scores on {m.model} differ from {baseline_label} by more than "
            f"{SCORE_TOLERANCE}: its timing measures different work."
        )
    lines = _target_lines(measurements, baselines)
    if lines:
        fp32 = ", ".join(
            f"{model} >= {speed}x speed" + (f" and <= {memory}x peak memory" if memory else "")
            for model, (speed, memory) in TARGETS.items()
        )
        model, speed, rho = INT8_TARGET
        print(
            f"\nTargets vs FlagEmbedding fp32 ({TARGET_VARIANT}: {fp32}; int8 on {model}: >= {speed}x speed "
            f"with Spearman >= {rho}):"
        )
        print("\n".join(lines))
