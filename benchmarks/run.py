"""Speed and memory of autorerank vs FlagEmbedding 1.4.2 and sentence-transformers CrossEncoder, on CPU.

    python benchmarks/run.py                       # full run: peers swept over batch sizes, 3 repeats per row
    python benchmarks/run.py --quick               # smoke check: few pairs, one repeat, peers at defaults only

One run: set up the reference venv and the models (cached under ~/.cache/autorerank-bench), write one pairs file,
measure the machine's fp32 matmul peak, then run every (model, library, setting) row in its own fresh subprocess on
the same pairs, round-robin over the repeats. A setting is a library's defaults or, for the peers, one batch size of
the sweep. The report gives each row's median pairs/s and its spread over repeats, peak RSS, the fraction of matmul
peak reached and score agreement; each peer at its defaults and at its best batch size; ratios against
FlagEmbedding fp32 at its best; and the target verdicts. See benchmarks/README.md for the choices behind each piece.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_env import ensure_reference_venv, ensure_sources
from bench_flops import total_flops
from bench_pairs import generate_pairs, write_pairs
from bench_report import print_report
from bench_specs import SPECS
from bench_stats import Measurement, sweep_settings
from bench_tokens import token_lengths
from bench_verdicts import BASELINE, cpu_flags, matrix_units, native_bf16

ENCODERS = ("minilm", "xlmr-base")
DECODERS = ("llm", "layerwise", "lightweight")
DEFAULT_MODELS = ("minilm", "xlmr-base", "llm")  # what a run without --models measures
ALL_MODELS = ENCODERS + DECODERS
# Default pair counts, sized so a full run (every peer swept over SWEEP, REPEATS repeats) takes about 35 minutes
# on a quiet 2-core machine; see benchmarks/README.md for the estimate. --pairs / --llm-pairs override them.
DEFAULT_PAIRS = {"minilm": 512, "xlmr-base": 128, "llm": 32, "layerwise": 32, "lightweight": 32}
QUICK_PAIRS = {"minilm": 64, "xlmr-base": 64, "llm": 8, "layerwise": 8, "lightweight": 8}
SWEEP = (4, 8, 16, 32, 64, 128)
REPEATS = 3
# The peers whose batch size is swept, and the batch size each uses when none is given (FlagEmbedding 1.4.2's
# constructor, sentence-transformers 5.7's CrossEncoder.predict). The child reports the size it really used.
PEER_DEFAULT_BATCH = {"flagembedding": 128, "sentence-transformers": 32}


@dataclass(frozen=True)
class Variant:
    """One row per model: a library, its options, where it runs, and which flag switches it on."""

    label: str
    library: str  # a loader in bench_child.LOADERS
    options: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = ALL_MODELS
    flag: str | None = None  # None: always on; else the argparse dest that enables it


# Adding a variant is one line here (plus, for a new flag, one add_argument in parse_args).
VARIANTS: tuple[Variant, ...] = (
    Variant(BASELINE, "flagembedding"),
    Variant("FlagEmbedding bf16", "flagembedding", {"use_bf16": True}, models=DECODERS, flag="use_bf16"),
    Variant("sentence-transformers fp32", "sentence-transformers", models=ENCODERS),
    Variant("autorerank fp32", "autorerank"),
    Variant("autorerank bf16", "autorerank", {"use_bf16": True}, flag="use_bf16"),
    Variant("autorerank onnx", "autorerank", {"backend": "onnx"}, models=ENCODERS, flag="onnx"),
    Variant(
        "autorerank onnx int8",
        "autorerank",
        {"backend": "onnx", "quantize": "int8"},
        models=ENCODERS,
        flag="onnx",
    ),
    Variant("autorerank openvino", "autorerank", {"backend": "openvino"}, models=ENCODERS, flag="openvino"),
    Variant(
        "autorerank openvino int8",
        "autorerank",
        {"backend": "openvino", "quantize": "int8"},
        models=ENCODERS,
        flag="openvino",
    ),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pairs",
        type=int,
        help="pairs per cross-encoder (default: "
        + ", ".join(f"{m} {DEFAULT_PAIRS[m]}" for m in ENCODERS)
        + f"; --quick: {QUICK_PAIRS['minilm']})",
    )
    parser.add_argument(
        "--llm-pairs",
        type=int,
        help=f"pairs per decoder reranker (default {DEFAULT_PAIRS['llm']}; --quick: {QUICK_PAIRS['llm']})",
    )
    parser.add_argument(
        "--sweep",
        type=_batch_sizes,
        help="comma list of batch sizes to run each peer (FlagEmbedding, sentence-transformers) at, besides its "
        f"defaults (default {','.join(map(str, SWEEP))})",
    )
    parser.add_argument(
        "--no-sweep", action="store_true", help="run each peer at its defaults only (same as --sweep '')"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke check: fewer pairs, one repeat, no sweep (explicit --pairs, --llm-pairs, --repeats and "
        "--sweep still win)",
    )
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma list of {', '.join(ALL_MODELS)} (default {','.join(DEFAULT_MODELS)}), qwen3 "
        "(Qwen3-Reranker-shaped: bench_qwen3.py)",
    )
    parser.add_argument("--qwen3-pairs", type=int, default=32, help="pairs for qwen3 (default 32)")
    parser.add_argument(
        "--qwen3-layers", type=int, default=28, help="qwen3's layers (default 28, the real model's)"
    )
    parser.add_argument(
        "--libraries",
        default="flagembedding,sentence-transformers,autorerank",
        help="comma list of libraries to run",
    )
    parser.add_argument("--use-bf16", dest="use_bf16", action="store_true", help="add bf16 variants")
    parser.add_argument("--onnx", action="store_true", help="add autorerank ONNX (fp32 and int8) variants")
    parser.add_argument(
        "--openvino", action="store_true", help="add autorerank OpenVINO (fp32 and int8) variants"
    )
    parser.add_argument("--seed", type=int, default=20240611, help="seed of the generated pairs")
    parser.add_argument(
        "--warmup", type=int, default=16, help="pairs scored before timing starts (at most 4 for the LLM)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"runs per row, round-robin across rows; the median and the spread are reported (default {REPEATS}; "
        "--quick: 1)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("AUTORERANK_BENCH_CACHE", "~/.cache/autorerank-bench")),
    )
    parser.add_argument("--json", type=Path, help="also write all results to this file")
    args = parser.parse_args(argv)
    if args.no_sweep:
        args.sweep = ()
    elif args.sweep is None:
        args.sweep = () if args.quick else SWEEP
    if args.repeats is None:
        args.repeats = 1 if args.quick else REPEATS
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def _batch_sizes(text: str) -> tuple[int, ...]:
    """'4,8,16' -> (4, 8, 16); '' -> () (no sweep)."""
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of batch sizes such as 4,8,16, got {text!r}")
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return sizes


def pair_count(args: argparse.Namespace, model: str) -> int:
    """Pairs scored on this model: the flag if given, else the default (or the --quick default)."""
    given = args.llm_pairs if SPECS[model].kind == "llm" else args.pairs
    if given is not None:
        return int(given)
    return (QUICK_PAIRS if args.quick else DEFAULT_PAIRS)[model]


def ensure_models(python: Path, cache: Path, names: list[str]) -> dict[str, Path]:
    """Build each requested model once (rebuilt when its spec changes); return their folders."""
    sources = ensure_sources(python, cache)
    folders = {}
    for name in names:
        folder = cache / "models" / name
        stamp = folder / ".bench-build"
        if not (stamp.exists() and stamp.read_text() == SPECS[name].fingerprint()):
            print(f"[setup] building model {name}", flush=True)
            subprocess.run(
                [
                    str(python),
                    str(HERE / "bench_build.py"),
                    name,
                    str(folder),
                    "--minilm",
                    str(sources["minilm"]),
                    "--sentencepiece",
                    str(sources["sentencepiece"]),
                ],
                check=True,
            )
        folders[name] = folder
    return folders


def run_child(command: list[str], env: dict[str, str], log_file: Path) -> tuple[int, float]:
    """Run one child to completion; return its exit code and its own peak RSS in MiB (from wait4)."""
    with log_file.open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024  # ru_maxrss is KiB on Linux


def child_env(library: str) -> dict[str, str]:
    env = dict(os.environ)
    if library == "autorerank":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def plan_rows(
    variants: list[Variant], model: str, pairs: int, sweep: tuple[int, ...]
) -> tuple[list[tuple[Variant, Measurement]], list[str]]:
    """Every row of one model: each variant at its defaults and, for the peers, each distinct swept batch size.

    Returns the rows and a note for each peer whose sweep skipped settings that would repeat another row.
    """
    rows: list[tuple[Variant, Measurement]] = []
    notes = []
    for variant in variants:
        rows.append((variant, Measurement(model, variant.label, variant.library)))
        default = PEER_DEFAULT_BATCH.get(variant.library)
        if default is None or not sweep:
            continue
        sizes, skipped = sweep_settings(default, sweep, pairs)
        rows += [(variant, Measurement(model, variant.label, variant.library, size)) for size in sizes]
        for size, same in skipped.items():
            other = f"the defaults row (batch {default})" if same is None else f"the batch {same} row"
            why = "" if size == default else f": at {pairs} pairs both score all pairs in one batch"
            notes.append(f"{model} {variant.label}: batch {size} not run separately, it is {other}{why}")
    return rows, notes


def measure_once(
    variant: Variant,
    row: Measurement,
    folder: Path,
    pairs_file: Path,
    run_dir: Path,
    python: str,
    attempt: int,
    warmup: int,
) -> tuple[dict[str, Any] | None, float, str | None]:
    """Run one row's child once; return its result, its peak RSS in MiB, or an error."""
    setting = "defaults" if row.batch_size is None else f"batch{row.batch_size}"
    tag = f"{row.model}-{variant.label.replace(' ', '_')}-{setting}-{attempt}"
    out, log = run_dir / f"{tag}.json", run_dir / f"{tag}.log"
    call = {} if row.batch_size is None else {"batch_size": row.batch_size}
    command = [python, str(HERE / "bench_child.py"), "score", variant.library, str(folder)]
    command += [SPECS[row.model].model_class, str(pairs_file), str(out)]
    command += ["--options", json.dumps(variant.options), "--call-options", json.dumps(call)]
    command += ["--warmup", str(warmup)]
    print(f"[run {attempt + 1}] {row.model:<9} {variant.label:<28} {setting:<9} ...", end="", flush=True)
    started = time.monotonic()
    code, rss = run_child(command, child_env(variant.library), log)
    if code != 0:
        print(f" FAILED (exit {code}; log {log})", flush=True)
        return None, rss, " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])[-300:]
    result = json.loads(out.read_text()) | {"child_wall_seconds": time.monotonic() - started}
    print(f" {result['pairs'] / result['seconds']:.2f} pairs/s, peak RSS {rss:.0f} MiB", flush=True)
    return result, rss, None


def measure_model(
    rows: list[tuple[Variant, Measurement]],
    folder: Path,
    pairs_file: Path,
    run_dir: Path,
    reference_python: Path,
    args: argparse.Namespace,
) -> list[Measurement]:
    """All rows of one model; repeats go round-robin (A B C A B C) so a burst of load hits every row alike.

    Each row keeps every run (the report takes the median and the spread) and its peak RSS per run; a row that
    fails once is marked failed and not run again.
    """
    for attempt in range(args.repeats):
        for variant, row in rows:
            if row.error is not None:
                continue
            python = sys.executable if variant.library == "autorerank" else str(reference_python)
            warmup = min(args.warmup, 4) if SPECS[row.model].kind == "llm" else args.warmup
            result, rss, error = measure_once(
                variant, row, folder, pairs_file, run_dir, python, attempt, warmup
            )
            if result is None:
                row.error = error or "failed"
                continue
            row.add_run(result, rss)
    return [row for _, row in rows]


def matmul_peak(run_dir: Path, when: str) -> dict[str, Any]:
    """fp32 matmul GFLOP/s now. Sampled between models: on a shared machine the best sample is the peak."""
    out = run_dir / f"matmul-{when.replace(' ', '-')}.json"
    subprocess.run([sys.executable, str(HERE / "bench_child.py"), "matmul", str(out)], check=True)
    sample = json.loads(out.read_text()) | {"when": when}
    print(
        f"[machine] fp32 matmul {when}: {sample['best_gflops']:.0f} GFLOP/s best, "
        f"{sample['median_gflops']:.0f} median ({sample['size']}^3, {sample['threads']} threads)",
        flush=True,
    )
    return sample


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    libraries = {lib.strip() for lib in args.libraries.split(",") if lib.strip()}
    qwen3 = "qwen3" in models
    models = [m for m in models if m != "qwen3"]
    unknown = set(models) - set(ALL_MODELS)
    if unknown:
        raise SystemExit(f"unknown model(s) {sorted(unknown)}; choose from {ALL_MODELS + ('qwen3',)}")
    cache = args.cache_dir.expanduser().resolve()
    run_dir = cache / "runs" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)

    reference_python = ensure_reference_venv(cache) if models else Path(sys.executable)
    folders = ensure_models(reference_python, cache, models)
    counts = {m: pair_count(args, m) for m in models}
    all_pairs = generate_pairs(max([*counts.values(), args.qwen3_pairs if qwen3 else 0]), args.seed)
    if qwen3:  # its own libraries and baseline, all in this Python (transformers 5, sentence-transformers 6)
        import bench_qwen3

        rows = bench_qwen3.measure(args, all_pairs[: args.qwen3_pairs], run_dir)
        bench_qwen3.report(rows, args.qwen3_layers, args.qwen3_pairs)
        if not models:
            return
    samples = [matmul_peak(run_dir, "start")]

    measurements: list[Measurement] = []
    notes: list[str] = []
    work: dict[str, dict[str, Any]] = {}
    for model in models:
        pairs = all_pairs[: counts[model]]
        pairs_file = run_dir / f"pairs-{model}.json"
        write_pairs(pairs_file, pairs)
        lengths = token_lengths(SPECS[model], folders[model], pairs)
        work[model] = {
            "pairs": len(pairs),
            "tokens": sum(lengths),
            "flops": total_flops(SPECS[model], lengths),
        }
        variants = [
            v
            for v in VARIANTS
            if (v.flag is None or getattr(args, v.flag)) and model in v.models and v.library in libraries
        ]
        planned, skipped = plan_rows(variants, model, len(pairs), args.sweep)
        notes += skipped
        print(
            f"[plan] {model}: {len(planned)} rows x {args.repeats} repeats, {len(pairs)} pairs each",
            flush=True,
        )
        measurements += measure_model(planned, folders[model], pairs_file, run_dir, reference_python, args)
        samples.append(matmul_peak(run_dir, f"after {model}"))

    peak_gflops = max(sample["best_gflops"] for sample in samples)
    units = matrix_units(cpu_flags())
    print_report(
        measurements,
        work,
        peak_gflops,
        samples,
        sweep=args.sweep,
        repeats=args.repeats,
        units=units,
        notes=notes,
    )
    results = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "baseline": BASELINE,
        "native_bf16": native_bf16(set(units)),
        "matrix_units": units,
        "notes": notes,
        "matmul": samples,
        "work": work,
        "measurements": [m.to_json() for m in measurements],
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"\nraw results and logs: {run_dir} (the run took {(time.monotonic() - started) / 60:.1f} minutes)")


if __name__ == "__main__":
    main()
