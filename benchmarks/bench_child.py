"""One measurement, in a fresh interpreter: load a library's reranker, warm it up, time scoring all pairs.

    python bench_child.py score LIBRARY MODEL_DIR MODEL_CLASS PAIRS_JSON OUT_JSON [--options JSON]
        [--call-options JSON] [--warmup N]
    python bench_child.py matmul OUT_JSON

Runs under the reference venv's python (flagembedding, sentence-transformers) or the system python with the
repository's src/ on PYTHONPATH (autorerank). It imports nothing from the benchmark besides the standard library,
so both interpreters can run it. Each library runs with its own defaults (threads, batch size); only what the
benchmark fixes (max_length 512, fp32 unless an option says otherwise, CPU) is passed. ``--options`` go to the
constructor, ``--call-options`` to every scoring call (the batch-size sweep passes ``batch_size`` there, the argument
of FlagEmbedding's ``compute_score`` and of sentence-transformers' ``CrossEncoder.predict``). The result records the
batch size the call used (``None`` where the library has no fixed batch size, as autorerank's token budget).
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Scorer = Callable[[list[tuple[str, str]]], list[float]]
# What a loader returns: the scoring function, the library's version, and the batch size each call uses.
Loaded = tuple[Scorer, str, int | None]


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flagembedding_reranker(model_dir: str, model_class: str, options: dict[str, Any]) -> Any:
    """FlagEmbedding's reranker class for the kind, at the benchmark's max_length."""
    import FlagEmbedding

    classes = {
        "encoder-only-base": FlagEmbedding.FlagReranker,
        "decoder-only-base": FlagEmbedding.FlagLLMReranker,
        "decoder-only-layerwise": FlagEmbedding.LayerWiseFlagLLMReranker,
        "decoder-only-lightweight": FlagEmbedding.LightWeightFlagLLMReranker,
    }
    return classes[model_class](model_dir, max_length=512, **options)


def autorerank_reranker(model_dir: str, model_class: str, options: dict[str, Any]) -> Any:
    from autorerank import AutoReranker

    return AutoReranker.from_finetuned(
        model_dir, model_class=model_class, max_length=_max_length(model_class), **options
    )


def _flagembedding(model_dir: str, model_class: str, options: dict[str, Any], call: dict[str, Any]) -> Loaded:
    import FlagEmbedding

    reranker = flagembedding_reranker(model_dir, model_class, options)
    # compute_score's batch_size falls back to the constructor's (128 in FlagEmbedding 1.4.2).
    batch_size = call.get("batch_size") or reranker.batch_size
    return (
        (lambda pairs: list(reranker.compute_score(pairs, **call))),
        getattr(FlagEmbedding, "__version__", "1.4.2"),
        int(batch_size),
    )


def _sentence_transformers(
    model_dir: str, model_class: str, options: dict[str, Any], call: dict[str, Any]
) -> Loaded:
    import sentence_transformers
    import torch
    from sentence_transformers import CrossEncoder

    if model_class not in ("encoder-only-base", CHAT):
        raise ValueError("sentence-transformers CrossEncoder scores cross-encoders and causal chat rerankers")
    model = CrossEncoder(model_dir, max_length=_max_length(model_class), device="cpu", **options)
    identity = (
        torch.nn.Identity()
    )  # raw logits, as FlagEmbedding returns them (CrossEncoder defaults to sigmoid)

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        return model.predict(pairs, activation_fn=identity, show_progress_bar=False, **call).tolist()

    default = inspect.signature(model.predict).parameters["batch_size"].default
    return score, sentence_transformers.__version__, int(call.get("batch_size", default))


def _autorerank(model_dir: str, model_class: str, options: dict[str, Any], call: dict[str, Any]) -> Loaded:
    import autorerank

    reranker = autorerank_reranker(model_dir, model_class, options)
    # Batches are planned under a token budget, so there is no one batch size to report.
    batch_size = call.get("batch_size")
    return (lambda pairs: list(reranker.compute_score(pairs, **call))), autorerank.__version__, batch_size


CHAT = "decoder-only-yes-no"
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def _max_length(model_class: str) -> int:
    return 8192 if model_class == CHAT else 512  # the Qwen3-Reranker card's, else the benchmark's


def _qwen3_card(model_dir: str, model_class: str, options: dict[str, Any], call: dict[str, Any]) -> Loaded:
    """The Qwen3-Reranker model card's transformers recipe (format_instruction, process_inputs, compute_logits),
    in batches of ``batch_size`` (default 8; an option or a call option) pairs in input order; returns the
    log-odds logit(yes) - logit(no)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    dtype = torch.bfloat16 if options.get("use_bf16") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    prefix = tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False)
    max_length, batch_size = 8192, int(call.get("batch_size", options.get("batch_size", 8)))

    @torch.no_grad()
    def score(pairs: list[tuple[str, str]]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(pairs), batch_size):
            texts = [
                f"<Instruct>: {QWEN3_INSTRUCTION}\n<Query>: {q}\n<Document>: {d}"
                for q, d in pairs[start : start + batch_size]
            ]
            inputs = tokenizer(
                texts,
                padding=False,
                truncation="longest_first",
                return_attention_mask=False,
                max_length=max_length - len(prefix) - len(suffix),
            )
            inputs["input_ids"] = [prefix + ids + suffix for ids in inputs["input_ids"]]
            batch = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)
            logits = model(**batch).logits[:, -1, :]
            scores += (logits[:, yes] - logits[:, no]).float().tolist()
        return scores

    return score, transformers.__version__, batch_size


LOADERS: dict[str, Callable[[str, str, dict[str, Any], dict[str, Any]], Loaded]] = {
    "flagembedding": _flagembedding,
    "sentence-transformers": _sentence_transformers,
    "autorerank": _autorerank,
    "qwen3-card": _qwen3_card,
}


def run_score(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    pairs = [tuple(pair) for pair in json.loads(Path(args.pairs).read_text(encoding="utf-8"))]
    rss_start = _rss_mib()
    started = time.perf_counter()
    options, call = json.loads(args.options), json.loads(args.call_options)
    score, version, batch_size = LOADERS[args.library](args.model_dir, args.model_class, options, call)
    load_seconds = time.perf_counter() - started
    rss_loaded = _rss_mib()
    if args.warmup:
        score(pairs[: args.warmup])
    started = time.perf_counter()
    scores = score(pairs)
    seconds = time.perf_counter() - started
    if len(scores) != len(pairs):
        raise RuntimeError(f"{args.library} returned {len(scores)} scores for {len(pairs)} pairs")
    return {
        "library": args.library,
        "version": version,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "pairs": len(pairs),
        "seconds": seconds,
        "load_seconds": load_seconds,
        "rss_start_mib": rss_start,
        "rss_loaded_mib": rss_loaded,
        "self_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "scores": [float(s) for s in scores],
    }


def run_matmul(size: int = 2048, seconds: float = 4.0) -> dict[str, Any]:
    """Best and median fp32 GFLOP/s of a square matmul with torch's default threads."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    out = torch.empty(size, size)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        started = time.perf_counter()
        torch.matmul(a, b, out=out)
        times.append(time.perf_counter() - started)
    flops = 2 * size**3
    times.sort()
    return {
        "size": size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "best_gflops": flops / times[0] / 1e9,
        "median_gflops": flops / times[len(times) // 2] / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    score = sub.add_parser("score")
    score.add_argument("library", choices=sorted(LOADERS))
    score.add_argument("model_dir")
    score.add_argument("model_class")
    score.add_argument("pairs")
    score.add_argument("out")
    score.add_argument("--options", default="{}", help="JSON keyword arguments of the constructor")
    score.add_argument("--call-options", default="{}", help="JSON keyword arguments of every scoring call")
    score.add_argument("--warmup", type=int, default=16)
    matmul = sub.add_parser("matmul")
    matmul.add_argument("out")
    args = parser.parse_args()
    result = run_score(args) if args.mode == "score" else run_matmul()
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
