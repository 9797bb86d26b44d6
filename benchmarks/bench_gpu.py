"""Speed and GPU memory of autorerank vs FlagEmbedding 1.4.2 on one CUDA GPU, each peer swept over batch sizes.

    python benchmarks/bench_gpu.py --skeletons DIR --models-dir DIR [--reference-python PY]
        [--reference-path SITE] [--rounds 2] [--json out.json]

The CPU benchmark (run.py) cannot run on a lent GPU machine: it has no network, so the reference venv cannot be
built there and the real MiniLM weights cannot be fetched. This script needs only what can be carried:
- ``--skeletons``: one folder per benchmark model (minilm, xlmr-base, llm) holding the files of the CPU benchmark's
  checkpoint except ``model.safetensors`` (config and tokenizer). Each model is rebuilt from its config with seeded
  random weights, under the reference python (transformers 4.46), so both libraries read the same checkpoint. Speed
  does not depend on the weights' values.
- ``--reference-python`` / ``--reference-path``: the interpreter, and an extra ``PYTHONPATH`` entry, under which
  FlagEmbedding and its transformers 4.46 import (on a GPU machine: the system python with wheels unpacked into a
  folder). autorerank's children run under the interpreter that runs this script, with the repository's ``src``.

Each (model, library) pair runs in a fresh process, alternating libraries, ``--rounds`` times. A process loads each
precision once and times every batch size of the sweep on the same pairs (after a warm-up), synchronising the GPU
around each timing; it records pairs/s, the GPU's peak allocated memory during scoring, and the scores. The report
gives each setting's median over rounds, FlagEmbedding's best batch size per precision, the ratios against it, and
how far autorerank's scores are from FlagEmbedding's in fp32 and from its own fp32 in fp16/bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

MODELS = {"xlmr-base": "encoder-only-base", "llm": "decoder-only-base", "minilm": "encoder-only-base"}
PAIRS = {"xlmr-base": 2048, "llm": 512, "minilm": 8192}
SEED = 20240611
# FlagEmbedding's settings: (label, constructor options, batch sizes). 128 is its default batch size.
REFERENCE_SWEEP = (
    ("fp16", {"use_fp16": True}, (32, 64, 128, 256)),
    ("fp32", {}, (64, 128)),
)
OURS = (("fp16", {"use_fp16": True}), ("bf16", {"use_bf16": True}), ("fp32", {}))


def build(skeleton: Path, out: Path, seed: int = 1234) -> None:
    """A checkpoint with the skeleton's config and tokenizer and seeded random weights (reference python)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(skeleton)
    causal = any(name.endswith("CausalLM") for name in config.architectures or ())
    torch.manual_seed(seed)
    model = (AutoModelForCausalLM if causal else AutoModelForSequenceClassification).from_config(config)
    model.eval().save_pretrained(out, safe_serialization=True)
    for file in skeleton.iterdir():
        if file.name != "config.json":
            shutil.copy(file, out / file.name)


def _synchronized(torch: Any) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(library: str, model_dir: str, model_class: str, pairs_file: Path, settings: list) -> list[dict]:
    """Time every (options, batch size) setting of one library in this process (child side): each precision is
    loaded once, and its batch sizes are timed one after the other on the same pairs."""
    import torch

    sys.path.insert(0, str(HERE))
    from bench_child import autorerank_reranker, flagembedding_reranker

    load = flagembedding_reranker if library == "flagembedding" else autorerank_reranker
    pairs = [tuple(pair) for pair in json.loads(pairs_file.read_text(encoding="utf-8"))]
    rows = []
    for label, options, batch_sizes in settings:
        reranker = load(model_dir, model_class, options)
        for batch_size in batch_sizes:
            call = {} if batch_size is None else {"batch_size": batch_size}
            reranker.compute_score(pairs[:64], **call)
            _synchronized(torch)
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            scores = reranker.compute_score(pairs, **call)
            _synchronized(torch)
            seconds = time.perf_counter() - started
            peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")
            rows.append({
                "library": library, "precision": label, "batch_size": batch_size,
                "pairs_per_s": len(pairs) / seconds, "gpu_peak_mib": peak, "scores": [float(s) for s in scores],
            })  # fmt: skip
        del reranker
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def _child(args: argparse.Namespace, library: str, model_dir: Path, model_class: str, pairs: Path) -> list[dict]:
    if library == "flagembedding":
        settings = [[label, options, list(sizes)] for label, options, sizes in REFERENCE_SWEEP]
        python, extra = args.reference_python, args.reference_path
    else:
        settings = [[label, options, [None]] for label, options in OURS]
        python, extra = sys.executable, str(REPO / "src")
    out = args.models_dir / f"result-{library}.json"
    command = [python, __file__, "child", library, str(model_dir), model_class, str(pairs), str(out),
               json.dumps(settings)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (extra, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(command, env=env, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr, flush=True)
        return []
    return json.loads(out.read_text(encoding="utf-8"))


def report(model: str, rows: list[dict]) -> dict[str, Any]:
    """Median pairs/s per setting, the reference's best per precision, ratios and score agreement."""
    from bench_stats import spearman

    settings: dict[tuple, list[dict]] = {}
    for row in rows:
        settings.setdefault((row["library"], row["precision"], row["batch_size"]), []).append(row)
    table = {key: {"pairs_per_s": statistics.median(r["pairs_per_s"] for r in group),
                   "spread": [min(r["pairs_per_s"] for r in group), max(r["pairs_per_s"] for r in group)],
                   "gpu_peak_mib": max(r["gpu_peak_mib"] for r in group), "scores": group[0]["scores"]}
             for key, group in settings.items()}  # fmt: skip
    print(f"\n## {model}")
    for (library, precision, batch), row in sorted(table.items(), key=lambda item: str(item[0])):
        low, high = row["spread"]
        print(f"{library:14} {precision} batch {batch!s:5} {row['pairs_per_s']:9.1f} pairs/s "
              f"[{low:.1f}-{high:.1f}]  peak {row['gpu_peak_mib']:8.0f} MiB")  # fmt: skip
    summary: dict[str, Any] = {"model": model, "rows": [{k: v for k, v in r.items() if k != "scores"} for r in rows]}
    reference = {key: row for key, row in table.items() if key[0] == "flagembedding"}
    for precision in ("fp16", "fp32"):
        candidates = {key: row for key, row in reference.items() if key[1] == precision}
        if not candidates:
            continue
        best_key = max(candidates, key=lambda key: candidates[key]["pairs_per_s"])
        best = candidates[best_key]
        summary[f"reference_{precision}_best_batch"] = best_key[2]
        for ours in ("fp16", "bf16", "fp32"):
            row = table.get(("autorerank", ours, None))
            if row is None or (precision == "fp32") != (ours == "fp32"):
                continue
            speed = row["pairs_per_s"] / best["pairs_per_s"]
            memory = row["gpu_peak_mib"] / best["gpu_peak_mib"]
            summary[f"autorerank_{ours}_vs_reference_{precision}_best"] = {"speed": speed, "memory": memory}
            print(f"autorerank {ours} vs FlagEmbedding {precision} at its best (batch {best_key[2]}): "
                  f"{speed:.2f}x pairs/s, {memory:.2f}x GPU peak")  # fmt: skip
    ours_fp32 = table.get(("autorerank", "fp32", None))
    reference_fp32 = reference.get(("flagembedding", "fp32", summary.get("reference_fp32_best_batch")))
    if ours_fp32 and reference_fp32:
        diff = max(abs(a - b) for a, b in zip(ours_fp32["scores"], reference_fp32["scores"]))
        summary["fp32_max_diff_vs_reference"] = diff
        print(f"fp32 scores vs FlagEmbedding fp32: max |diff| {diff:.2e}")
        for low in ("fp16", "bf16"):
            row = table.get(("autorerank", low, None))
            if row:
                rho = spearman(row["scores"], ours_fp32["scores"])
                summary[f"{low}_spearman_vs_fp32"] = rho
                print(f"autorerank {low} Spearman vs its fp32: {rho:.4f}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skeletons", type=Path, help="config + tokenizer folders, one per model")
    parser.add_argument("--models-dir", type=Path, default=Path("/tmp/bench-gpu"))
    parser.add_argument("--reference-python", default=sys.executable)
    parser.add_argument("--reference-path", default="", help="PYTHONPATH entry for FlagEmbedding's packages")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--pairs-scale", type=float, default=1.0, help="multiply every model's pair count")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from bench_pairs import generate_pairs, write_pairs

    args.models_dir.mkdir(parents=True, exist_ok=True)
    summaries = []
    for model in args.models.split(","):
        model_dir = args.models_dir / model
        if not (model_dir / "model.safetensors").exists():
            env = {**os.environ, "PYTHONPATH": args.reference_path}
            subprocess.run([args.reference_python, __file__, "build", str(args.skeletons / model), str(model_dir)],
                           env=env, check=True)  # fmt: skip
        pairs_file = args.models_dir / f"pairs-{model}.json"
        write_pairs(pairs_file, generate_pairs(max(64, int(PAIRS[model] * args.pairs_scale)), SEED))
        rows: list[dict] = []
        for _ in range(args.rounds):
            for library in ("flagembedding", "autorerank"):
                rows += _child(args, library, model_dir, MODELS[model], pairs_file)
        summaries.append(report(model, rows))
        if args.json:
            args.json.write_text(json.dumps(summaries, indent=1), encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"]:
        build(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["child"]:
        _, _, library, model_dir, model_class, pairs, out, settings = sys.argv
        result = measure(library, model_dir, model_class, Path(pairs), json.loads(settings))
        Path(out).write_text(json.dumps(result), encoding="utf-8")
    else:
        main()
