"""Speed and memory of autorerank vs FlagEmbedding 1.4.2 and sentence-transformers CrossEncoder, on CPU.

    python benchmarks/run.py                      # full run (2000 pairs per cross-encoder, 1000 for the LLM)
    python benchmarks/run.py --pairs 64 --llm-pairs 16   # quick check

One run: set up the reference venv and the models (cached under ~/.cache/autorerank-bench), write one pairs file,
measure the machine's fp32 matmul peak, then run every (model, library) in its own fresh subprocess on the same
pairs, check that scores agree with FlagEmbedding fp32, and print pairs/s, peak RSS, the fraction of matmul peak
reached, and ratios against FlagEmbedding fp32. See benchmarks/README.md for the choices behind each piece.
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
from bench_report import Measurement, print_report
from bench_specs import SPECS
from bench_tokens import token_lengths

ENCODERS = ("minilm", "xlmr-base")
ALL_MODELS = ("minilm", "xlmr-base", "llm")


@dataclass(frozen=True)
class Variant:
    """One row per model: a library, its options, where it runs, and which flag switches it on."""

    label: str
    library: str  # a loader in bench_child.LOADERS
    options: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = ALL_MODELS
    flag: str | None = None  # None: always on; else the argparse dest that enables it


BASELINE = "FlagEmbedding fp32"
# Adding a variant is one line here (plus, for a new flag, one add_argument in parse_args).
VARIANTS: tuple[Variant, ...] = (
    Variant(BASELINE, "flagembedding"),
    Variant("FlagEmbedding bf16", "flagembedding", {"use_bf16": True}, models=("llm",), flag="use_bf16"),
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
    parser.add_argument("--pairs", type=int, default=2000, help="pairs per cross-encoder (default 2000)")
    parser.add_argument(
        "--llm-pairs", type=int, default=1000, help="pairs for the LLM reranker (default 1000)"
    )
    parser.add_argument(
        "--models",
        default=",".join(ALL_MODELS),
        help=f"comma list of {', '.join(ALL_MODELS)}, qwen3 (Qwen3-Reranker-shaped: bench_qwen3.py)",
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
    parser.add_argument("--warmup", type=int, default=16, help="pairs scored before timing starts")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per row, round-robin across rows; the fastest is kept"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("AUTORERANK_BENCH_CACHE", "~/.cache/autorerank-bench")),
    )
    parser.add_argument("--json", type=Path, help="also write all results to this file")
    return parser.parse_args(argv)


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


def measure_once(
    variant: Variant,
    model: str,
    folder: Path,
    pairs_file: Path,
    run_dir: Path,
    python: str,
    attempt: int,
    warmup: int,
) -> tuple[dict[str, Any] | None, float, str | None]:
    """Run one (variant, model) child; return its result, its peak RSS in MiB, or an error."""
    tag = f"{model}-{variant.label.replace(' ', '_')}-{attempt}"
    out, log = run_dir / f"{tag}.json", run_dir / f"{tag}.log"
    command = [python, str(HERE / "bench_child.py"), "score", variant.library, str(folder)]
    command += [SPECS[model].model_class, str(pairs_file), str(out)]
    command += ["--options", json.dumps(variant.options), "--warmup", str(warmup)]
    print(f"[run] {model:<9} {variant.label:<28} ...", end="", flush=True)
    code, rss = run_child(command, child_env(variant.library), log)
    if code != 0:
        print(f" FAILED (exit {code}; log {log})", flush=True)
        return None, rss, " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])[-300:]
    result = json.loads(out.read_text())
    print(f" {result['pairs'] / result['seconds']:.2f} pairs/s, peak RSS {rss:.0f} MiB", flush=True)
    return result, rss, None


def measure_model(
    variants: list[Variant],
    model: str,
    folder: Path,
    pairs_file: Path,
    run_dir: Path,
    reference_python: Path,
    args: argparse.Namespace,
) -> list[Measurement]:
    """All rows of one model; repeats go round-robin (A B A B) so a burst of load hits every row alike.

    Each row keeps its fastest run and its largest peak RSS; a row that fails once is not run again.
    """
    rows = {v.label: Measurement(model, v.label) for v in variants}
    for attempt in range(args.repeats):
        for variant in variants:
            row = rows[variant.label]
            if row.error is not None:
                continue
            python = sys.executable if variant.library == "autorerank" else str(reference_python)
            result, rss, error = measure_once(
                variant, model, folder, pairs_file, run_dir, python, attempt, args.warmup
            )
            if result is None:
                row.error, row.result = error, None
                continue
            row.peak_rss_mib = max(row.peak_rss_mib, rss)
            if row.result is None or result["seconds"] < row.result["seconds"]:
                row.result = result
    return list(rows.values())


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
    counts = {m: args.llm_pairs if SPECS[m].kind == "llm" else args.pairs for m in models}
    all_pairs = generate_pairs(max([*counts.values(), args.qwen3_pairs if qwen3 else 0]), args.seed)
    if qwen3:  # its own libraries and baseline, all in this Python (transformers 5, sentence-transformers 6)
        import bench_qwen3

        rows = bench_qwen3.measure(args, all_pairs[: args.qwen3_pairs], run_dir)
        bench_qwen3.report(rows, args.qwen3_layers, args.qwen3_pairs)
        if not models:
            return
    samples = [matmul_peak(run_dir, "start")]

    measurements: list[Measurement] = []
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
        measurements += measure_model(
            variants, model, folders[model], pairs_file, run_dir, reference_python, args
        )
        samples.append(matmul_peak(run_dir, f"after {model}"))

    peak_gflops = max(sample["best_gflops"] for sample in samples)
    print_report(measurements, work, peak_gflops, BASELINE, samples)
    results = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "matmul": samples,
        "work": work,
        "measurements": [m.to_json() for m in measurements],
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"\nraw results and logs: {run_dir}")


if __name__ == "__main__":
    main()
