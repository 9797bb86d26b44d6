"""The Qwen3-Reranker rows of the speed benchmark: autorerank vs the model card's transformers recipe and
sentence-transformers 6.x CrossEncoder, on the same pairs, in one run (``run.py --models qwen3``).

    python bench_qwen3.py build OUT_DIR --layers N      # (run.py does this) build the model once

The model is Qwen3-Reranker-0.6B-shaped: Qwen3ForCausalLM with its real width (1024 hidden, 3072 MLP, 16 query and
8 key/value heads of 128), its 151669-token vocabulary and tied embedding / LM head, and seeded random weights; 28
layers as the real one unless ``--qwen3-layers`` says fewer (stated in the report). Its tokenizer is the Qwen3 test
fixture's byte-level BPE with Qwen's chat tokens (4002 tokens, so English takes more tokens per word than with
Qwen's own 151k vocabulary; every library reads the same file), and a chat template that renders the card's prompt,
which sentence-transformers uses. All three libraries run in the project's own Python (transformers 5,
sentence-transformers 6), with the card's max_length of 8192, so nothing is truncated; raw log-odds are compared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from bench_stats import Measurement, best_row, max_abs_diff, ratio, ratio_range, spearman

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent.parent / "shared" / "fixtures" / "qwen3" / "Qwen3-Reranker-0.6B"
MODEL_CLASS = "decoder-only-yes-no"
BASELINE = "card recipe fp32"
TARGET = (1.5, 0.5)  # autorerank fp32 vs the card: min speed ratio, max peak-memory ratio
SHAPE = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151669,
}
# The card's prompt as a chat template (jinja drops one trailing newline, hence three at the end).
CHAT_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n<Instruct>: '
    '{{ messages | selectattr("role", "eq", "system") | map(attribute="content") | first | default("Given a web '
    'search query, retrieve relevant passages that answer the query") }}\n'
    '<Query>: {{ messages | selectattr("role", "eq", "query") | map(attribute="content") | first }}\n'
    '<Document>: {{ messages | selectattr("role", "eq", "document") | map(attribute="content") | first }}'
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n\n"
)
# (label, library, constructor options, batch size of every call (None: the library's default), --use-bf16 needed).
# The card's recipe and sentence-transformers also run at batch size 1 (no padding, their fastest on a CPU) and 4,
# so the headline compares against each at its best, not only at its defaults.
VARIANTS: tuple[tuple[str, str, dict[str, bool], int | None, bool], ...] = (
    (BASELINE, "qwen3-card", {}, None, False),
    (f"{BASELINE} batch 4", "qwen3-card", {}, 4, False),
    (f"{BASELINE} batch 1", "qwen3-card", {}, 1, False),
    ("sentence-transformers 6 fp32", "sentence-transformers", {}, None, False),
    ("sentence-transformers 6 fp32 batch 1", "sentence-transformers", {}, 1, False),
    ("autorerank fp32", "autorerank", {}, None, False),
    ("card recipe bf16", "qwen3-card", {"use_bf16": True}, None, True),
    ("card recipe bf16 batch 1", "qwen3-card", {"use_bf16": True}, 1, True),
    ("autorerank bf16", "autorerank", {"use_bf16": True}, None, True),
)


def build(out: Path, layers: int, seed: int = 1234) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    config = Qwen3Config(
        **SHAPE,
        num_hidden_layers=layers,
        max_position_embeddings=40960,
        rope_theta=1000000,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        architectures=["Qwen3ForCausalLM"],
    )
    torch.manual_seed(seed)
    Qwen3ForCausalLM(config).eval().save_pretrained(partial, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURE / name, partial / name)
    (partial / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    (partial / ".bench-build").write_text(f"layers={layers} seed={seed}")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)


def ensure_model(cache: Path, layers: int) -> Path:
    import subprocess

    folder = cache / "models" / f"qwen3-reranker-0.6b-shape-{layers}l"
    if not (folder / ".bench-build").exists():
        print(f"[setup] building the Qwen3-Reranker-shaped model ({layers} layers)", flush=True)
        subprocess.run([sys.executable, __file__, "build", str(folder), "--layers", str(layers)], check=True)
    return folder


def measure(args: argparse.Namespace, pairs: list[tuple[str, str]], run_dir: Path) -> list[Measurement]:
    """Every row, round-robin over ``args.repeats``; each keeps every run (median and spread are reported)."""
    from bench_pairs import write_pairs
    from run import child_env, run_child

    folder = ensure_model(args.cache_dir.expanduser().resolve(), args.qwen3_layers)
    pairs_file = run_dir / "pairs-qwen3.json"
    write_pairs(pairs_file, pairs)
    rows = [
        (options, Measurement("qwen3", label, library, batch_size))
        for label, library, options, batch_size, bf16 in VARIANTS
        if args.use_bf16 or not bf16
    ]
    for attempt in range(args.repeats):
        for options, row in rows:
            if row.error is not None:
                continue
            tag = f"qwen3-{row.label.replace(' ', '_')}-{attempt}"
            out, log = run_dir / f"{tag}.json", run_dir / f"{tag}.log"
            command = [sys.executable, str(HERE / "bench_child.py"), "score", row.library, str(folder)]
            command += [MODEL_CLASS, str(pairs_file), str(out), "--options", json.dumps(options)]
            if row.batch_size is not None:
                command += ["--call-options", json.dumps({"batch_size": row.batch_size})]
            command += ["--warmup", str(min(args.warmup, 4))]
            print(f"[run {attempt + 1}] qwen3     {row.label:<36} ...", end="", flush=True)
            code, rss = run_child(command, child_env(row.library), log)
            if code != 0:
                row.error = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])[-300:]
                print(f" FAILED (exit {code}; log {log})", flush=True)
                continue
            result = json.loads(out.read_text())
            print(f" {result['pairs'] / result['seconds']:.2f} pairs/s, peak RSS {rss:.0f} MiB", flush=True)
            row.add_run(result, rss)
    return [row for _, row in rows]


def report(rows: list[Measurement], layers: int, pairs: int) -> None:
    """One line per row: median pairs/s [min-max over repeats], ratios against the card's recipe at its best batch
    size (the fastest of its fp32 rows); the verdict against it, and against its defaults."""
    card = [row for row in rows if row.library == "qwen3-card" and "bf16" not in row.label]
    base, default = best_row(card), next((row for row in card if row.is_defaults and row.ok), None)
    fp32 = next((row for row in rows if row.label == "autorerank fp32" and row.ok), None)
    print(f"\n== Qwen3-Reranker-0.6B-shaped model ({layers} of 28 layers), {pairs} pairs, max_length 8192 ==")
    if base:
        print(f"baseline: {base.label} (the card's recipe at its fastest batch size)")
    print(f"{'library':<38}{'pairs/s':>9}{'[min-max]':>16}{'speed vs card':>15}{'peak MiB':>10}{'mem vs card':>13}"
          f"{'max|dscore| vs card':>21}{'Spearman vs ar fp32':>21}")  # fmt: skip
    for row in rows:
        if not row.ok:
            print(f"{row.label:<38}FAILED: {row.error}")
            continue
        spread = f"[{row.low:.3f}-{row.high:.3f}]"
        speed = f"{ratio(row, base):.2f}x" if base else "-"
        memory = f"{row.peak_rss_mib / base.peak_rss_mib:.2f}x" if base else "-"
        diff = f"{max_abs_diff(row.scores, base.scores):.1e}" if base else "-"
        rho = f"{spearman(row.scores, fp32.scores):.4f}" if fp32 else "-"
        print(f"{row.label:<38}{row.median:>9.3f}{spread:>16}{speed:>15}{row.peak_rss_mib:>10.0f}{memory:>13}"
              f"{diff:>21}{rho:>21}")  # fmt: skip
    if fp32:
        for name, card_row in (("at its best batch size", base), ("at its defaults", default)):
            if card_row is not None:
                print(_verdict(fp32, card_row, name))


def _verdict(fp32: Measurement, card: Measurement, name: str) -> str:
    speedup, memory_ratio = ratio(fp32, card), fp32.peak_rss_mib / card.peak_rss_mib
    low, high = ratio_range(fp32, card)
    met = speedup >= TARGET[0] and memory_ratio <= TARGET[1]
    return (
        f"Target vs the card's recipe {name} ({card.label}; autorerank fp32 >= {TARGET[0]}x speed, <= "
        f"{TARGET[1]}x peak memory): {speedup:.2f}x speed [{low:.2f}-{high:.2f}] (ratio of medians over "
        f"{len(fp32.runs)} repeat(s)), {memory_ratio:.2f}x memory: " + ("MET" if met else "NOT MET")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    builder = sub.add_parser("build")
    builder.add_argument("out", type=Path)
    builder.add_argument("--layers", type=int, default=28)
    args = parser.parse_args()
    build(args.out, args.layers)


if __name__ == "__main__":
    main()
