"""The printed report: one table of every row (median pairs/s and its spread over repeats), each peer at its
defaults and at its best batch size, autorerank against each peer, score agreement and the target verdicts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from bench_stats import Measurement, best_row, defaults_row, group, max_abs_diff, ratio, spearman
from bench_verdicts import BASELINE, MATRIX_FLAGS, native_bf16, verdicts

# fp32 scores of two correct implementations differ only by summation order.
SCORE_TOLERANCE = 1e-3

HEADER = [
    "model",
    "library",
    "setting",
    "pairs/s",
    "[min-max]",
    "runs",
    "vs FE best",
    "vs FE dflt",
    "peak MiB",
    "mem vs FE best",
    "GFLOP/s",
    "of peak",
    "max|dscore| vs FE",
    "Spearman vs FE",
]


def _cells(
    m: Measurement,
    best: set[int],
    base: Measurement | None,
    dflt: Measurement | None,
    work: dict[str, Any],
    peak_gflops: float,
) -> list[str]:
    """One table row; the ratios and score checks are against FlagEmbedding fp32 (at its best, at its defaults)."""
    setting = m.setting + (" *best" if id(m) in best else "")
    if not m.ok:
        return [m.model, m.label, setting, "FAILED: " + (m.error or "no run")]
    gflops = work["flops"] / work["pairs"] * m.median / 1e9
    return [
        m.model,
        m.label,
        setting,
        f"{m.median:.2f}",
        f"[{m.low:.2f}-{m.high:.2f}]",
        str(len(m.runs)),
        f"{ratio(m, base):.2f}x" if base else "-",
        f"{ratio(m, dflt):.2f}x" if dflt else "-",
        f"{m.peak_rss_mib:.0f}",
        f"{m.peak_rss_mib / base.peak_rss_mib:.2f}x" if base else "-",
        f"{gflops:.0f}",
        f"{gflops / peak_gflops:.0%}",
        f"{max_abs_diff(m.scores, base.scores):.1e}" if base else "-",
        f"{spearman(m.scores, base.scores):.4f}" if base else "-",
    ]


def _print_table(rows: list[list[str]]) -> None:
    full = [row for row in rows if len(row) == len(HEADER)]
    widths = [max(len(row[i]) for row in full) for i in range(len(HEADER))]
    for index, row in enumerate(rows):
        if len(row) < len(HEADER):  # a failed row: model, library, setting, error
            print(
                "  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2]), row[3]])
            )
            continue
        print(
            "  ".join(
                cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))
            )
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))


def _peers(measurements: Sequence[Measurement]) -> list[tuple[str, str]]:
    """(model, label) of every swept variant, in run order."""
    keys = {(m.model, m.label): None for m in measurements if m.library != "autorerank"}
    return list(keys)


def _speed(m: Measurement) -> str:
    return f"{m.median:.2f} [{m.low:.2f}-{m.high:.2f}] pairs/s"


def _peer_lines(measurements: Sequence[Measurement]) -> list[str]:
    lines = []
    for model, label in _peers(measurements):
        rows = group(measurements, model, label)
        dflt, best = defaults_row(rows), best_row(rows)
        at_defaults = f"defaults {_speed(dflt)}" if dflt and dflt.ok else "defaults FAILED"
        if best is None:
            lines.append(f"  {model:<9} {label:<28} {at_defaults}; no setting ran cleanly")
            continue
        won = f"best: {best.setting} {_speed(best)}"
        if dflt is not None and dflt.ok:
            won += f", {ratio(best, dflt):.2f}x its defaults"
        ran = sorted((m for m in rows if m.ok), key=lambda m: m.effective_batch_size or 0)
        tried = ", ".join(
            f"{m.effective_batch_size}{' (defaults)' if m.is_defaults else ''}: {m.median:.1f}" for m in ran
        )
        lines.append(f"  {model:<9} {label:<28} {at_defaults}; {won}  (batch: pairs/s {tried})")
    return lines


def _autorerank_lines(measurements: Sequence[Measurement]) -> list[str]:
    lines = []
    peers = _peers(measurements)
    for m in measurements:
        if m.library != "autorerank" or not m.ok:
            continue
        parts = []
        for model, label in peers:
            rows = group(measurements, model, label)
            best, dflt = best_row(rows), defaults_row(rows)
            if model != m.model or best is None:
                continue
            part = f"{ratio(m, best):.2f}x {label} at its best [{best.setting}]"
            if dflt is not None and dflt.ok:
                part += f", {ratio(m, dflt):.2f}x at its defaults"
            parts.append(part)
        if parts:
            lines.append(f"  {m.model:<9} {m.label:<28} " + "; ".join(parts))
    return lines


def _library_line(measurements: Sequence[Measurement]) -> str:
    seen: dict[str, str] = {}
    for m in measurements:
        if m.ok and m.library not in seen:
            r = m.runs[0]
            seen[m.library] = f"{m.library} {r['version']} (torch {r['torch']}, {r['threads']} threads)"
    return "libraries: " + "; ".join(seen.values())


def _print_header(
    measurements: Sequence[Measurement],
    work: dict[str, dict[str, Any]],
    peak_gflops: float,
    samples: list[dict[str, Any]],
    sweep: Sequence[int],
    repeats: int,
    units: Sequence[str],
) -> None:
    print("\n== autorerank speed benchmark (CPU, fp32 unless labelled, max_length 512) ==")
    sampled = ", ".join(f"{s['when']} {s['best_gflops']:.0f}" for s in samples)
    print(
        f"machine fp32 matmul peak: {peak_gflops:.0f} GFLOP/s, torch {samples[0]['torch']}, "
        f"{samples[0]['threads']} threads (best 2048^3 torch.matmul; samples: {sampled})"
    )
    print(
        f"CPU load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min) on "
        f"{os.cpu_count()} CPUs: other processes running at the same time slow every row. "
        f"Native bf16 (AVX512-BF16 or AMX): {'yes' if native_bf16(set(units)) else 'no'}; "
        f"matrix units: {', '.join(units) or 'none of ' + ', '.join(MATRIX_FLAGS)}."
    )
    for model, w in work.items():
        print(
            f"{model}: {w['pairs']} pairs, {w['tokens'] / w['pairs']:.0f} tokens/pair unpadded, "
            f"{w['flops'] / w['pairs'] / 1e9:.2f} GFLOP/pair"
        )
    print(_library_line(measurements))
    swept = ", ".join(map(str, sweep)) if sweep else "none (--no-sweep: every peer at its defaults only)"
    print(
        f"{repeats} repeat(s) per row, interleaved across rows; pairs/s is the median, [min-max] the spread over "
        f"repeats. Peer batch sizes swept: {swept}."
    )


def _print_rows(
    measurements: Sequence[Measurement], work: dict[str, dict[str, Any]], peak_gflops: float
) -> dict[str, Measurement]:
    """The table of every row; returns FlagEmbedding fp32's best row per model (the scores to check against)."""
    baselines: dict[str, Measurement] = {}
    defaults: dict[str, Measurement] = {}
    best_ids: set[int] = set()
    for model, label in _peers(measurements):
        rows = group(measurements, model, label)
        best, dflt = best_row(rows), defaults_row(rows)
        if best is not None:
            best_ids.add(id(best))
        if label == BASELINE and best is not None:
            baselines[model] = best
        if label == BASELINE and dflt is not None and dflt.ok:
            defaults[model] = dflt
    table = [HEADER]
    for m in measurements:
        base, dflt = baselines.get(m.model), defaults.get(m.model)
        table.append(_cells(m, best_ids, base, dflt, work[m.model], peak_gflops))
    print()
    _print_table(table)
    print(
        "\n'vs FE best' / 'vs FE dflt': median speed over FlagEmbedding fp32's median at its best batch size /"
        " at its defaults; *best marks each peer's fastest setting. peak MiB: the child's largest peak RSS over"
        " repeats (wait4), interpreter and weights included. GFLOP/s and 'of peak' count model FLOPs from the"
        " *unpadded* token counts at the median speed (padding and unread logits count as waste)."
    )
    return baselines


def print_report(
    measurements: list[Measurement],
    work: dict[str, dict[str, Any]],
    peak_gflops: float,
    samples: list[dict[str, Any]],
    *,
    sweep: Sequence[int],
    repeats: int,
    units: Sequence[str],
    notes: Sequence[str] = (),
) -> None:
    """``units``: the CPU's matrix-unit flags (``bench_verdicts.matrix_units``); they decide the bf16 verdicts."""
    _print_header(measurements, work, peak_gflops, samples, sweep, repeats, units)
    baselines = _print_rows(measurements, work, peak_gflops)
    for note in notes:
        print(f"note: {note}")
    peer_lines = _peer_lines(measurements)
    if peer_lines:
        print("\nPeers at their defaults and at their best batch size:")
        print("\n".join(peer_lines))
    ours = _autorerank_lines(measurements)
    if ours:
        print("\nautorerank against each peer (ratios of medians):")
        print("\n".join(ours))
    for m in measurements:
        base = baselines.get(m.model)
        differs = m.ok and base is not None and max_abs_diff(m.scores, base.scores) > SCORE_TOLERANCE
        if differs and m.label.endswith("fp32"):
            print(
                f"WARNING: {m.label} ({m.setting}) scores on {m.model} differ from {BASELINE} by more than "
                f"{SCORE_TOLERANCE}: its timing measures different work."
            )
    flops_per_pair = {model: w["flops"] / w["pairs"] for model, w in work.items()}
    lines = [v.line() for v in verdicts(measurements, flops_per_pair, peak_gflops, native_bf16(set(units)))]
    if lines:
        print(f"\nTargets (issue 16), each against {BASELINE} (FE) at its best batch size in this run:")
        print("\n".join(lines))
