"""Where autorerank's time goes: its weight GEMMs replayed alone, against the whole scoring pass they came from.

A speed target that is missed needs its limit measured, not guessed. autorerank's own modules (the lean BERT-family
classifier, the native layer-wise and lightweight decoder blocks) send every weight GEMM through oneDNN's fused
linear (``autorerank.models.linear``). This tool records those calls during one scoring pass (input shape, weight,
bias, post-op), then alternates in one process: the whole scoring pass, the recorded GEMMs replayed alone on fixed
inputs, and a square matmul in the same dtype (the machine's peak now). It reports

- the GEMM share of the pass: what is left (attention, norms, tokenization, copies) is all that any non-GEMM work
  could win back, so ``1 / share`` bounds the speed-up from everything but the GEMMs;
- the GEMMs' GFLOP/s against the square matmul's: how far the GEMMs themselves are from this CPU's ceiling.

    python benchmarks/bench_gemm_share.py ~/.cache/autorerank-bench/models/minilm \\
        ~/.cache/autorerank-bench/runs/RUN/pairs-minilm.json --pairs 256 --precision bf16

Models that transformers runs (``decoder-only-base``, ``decoder-only-yes-no``) make no such calls: nothing to replay.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bench_pairs import read_pairs

SQUARE = 2048  # the square matmul's size: large enough to run at the CPU's GEMM peak


@dataclass(frozen=True)
class GemmCall:
    """One call of oneDNN's fused linear: ``binary`` calls carry a second operand (residual or gate) of ``other``
    shape."""

    binary: bool
    shape: tuple[int, ...]
    weight: torch.Tensor
    bias: torch.Tensor | None
    other: tuple[int, ...] | None
    post_op: tuple[Any, ...]

    @property
    def flops(self) -> int:
        rows = 1
        for size in self.shape[:-1]:
            rows *= size
        return 2 * rows * self.shape[-1] * self.weight.shape[0]


class _Recorder:
    """Stands in for oneDNN's fused linear op: runs each call and keeps what it needs to run it again."""

    def __init__(self, op: Any, calls: list[GemmCall]) -> None:
        self.op, self.calls = op, calls

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: Any, *post_op: Any) -> torch.Tensor:
        self.calls.append(GemmCall(False, tuple(x.shape), weight, bias, None, post_op))
        return self.op(x, weight, bias, *post_op)

    def binary(
        self, x: torch.Tensor, other: torch.Tensor, weight: torch.Tensor, bias: Any, *post_op: Any
    ) -> Any:
        self.calls.append(GemmCall(True, tuple(x.shape), weight, bias, tuple(other.shape), post_op))
        return self.op.binary(x, other, weight, bias, *post_op)


def record_gemms(score: Callable[[], object]) -> list[GemmCall]:
    """Every fused-linear call one ``score()`` makes (none where the model does not use autorerank's modules)."""
    from autorerank.models import linear

    calls: list[GemmCall] = []
    fused_for = linear._fused_for

    def recording(tensor: torch.Tensor) -> Any:
        op = fused_for(tensor)
        return None if op is None else _Recorder(op, calls)

    linear._fused_for = recording
    try:
        score()
    finally:
        linear._fused_for = fused_for
    return calls


def replayer(calls: list[GemmCall], dtype: torch.dtype) -> Callable[[], None]:
    """A function that runs ``calls`` again, on one fixed random input per shape."""
    from autorerank.compat import onednn_linear

    op = onednn_linear()
    inputs: dict[tuple[int, ...], torch.Tensor] = {}

    def tensor(shape: tuple[int, ...]) -> torch.Tensor:
        if shape not in inputs:
            inputs[shape] = torch.randn(shape, dtype=dtype)
        return inputs[shape]

    def replay() -> None:
        for call in calls:
            if call.binary and call.other is not None:
                op.binary(tensor(call.shape), tensor(call.other), call.weight, call.bias, *call.post_op)
            else:
                op(tensor(call.shape), call.weight, call.bias, *call.post_op)

    return replay


def square_matmul(dtype: torch.dtype) -> Callable[[], None]:
    """One SQUARE x SQUARE matmul in ``dtype``: the machine's GEMM peak now."""
    a, b = torch.randn(SQUARE, SQUARE, dtype=dtype), torch.randn(SQUARE, SQUARE, dtype=dtype)

    def run() -> None:
        torch.mm(a, b)

    return run


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(score: Callable[[], object], dtype: torch.dtype, repeats: int) -> dict[str, Any]:
    """Interleaved repeats of the pass, the replay and the square matmul, and what they say."""
    score()  # warm: kernels built, weights touched
    calls = record_gemms(score)
    if not calls:
        raise SystemExit(
            "No oneDNN linear calls recorded: this model is not run by autorerank's own modules."
        )
    replay, square = replayer(calls, dtype), square_matmul(dtype)
    replay()
    times: dict[str, list[float]] = {"pass": [], "gemms": [], "square": []}
    for _ in range(repeats):
        times["pass"].append(seconds(score))
        times["gemms"].append(seconds(replay))
        times["square"].extend(seconds(square) for _ in range(3))
    median = {name: statistics.median(values) for name, values in times.items()}
    gemm_flops = sum(call.flops for call in calls)
    gemm_gflops = gemm_flops / median["gemms"] / 1e9
    # On a shared machine the best sample is the peak; the pass and the replay are compared by their medians.
    peak_gflops = 2 * SQUARE**3 / min(times["square"]) / 1e9
    share = median["gemms"] / median["pass"]
    return {
        "gemm_calls": len(calls),
        "gemm_gflop": gemm_flops / 1e9,
        "seconds": {name: [round(value, 4) for value in values] for name, values in times.items()},
        "gemm_share": share,
        "gemm_gflops": gemm_gflops,
        "peak_gflops": peak_gflops,
        "gemm_fraction_of_peak": gemm_gflops / peak_gflops,
        "bound_without_other_work": 1 / share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model", help="a model directory (the benchmark's, or any checkpoint autorerank loads)"
    )
    parser.add_argument("pairs", type=Path, help="a pairs JSON file written by the benchmark (bench_pairs)")
    parser.add_argument("--pairs", dest="count", type=int, default=256, help="how many of the pairs to score")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument(
        "--model-class", default=None, help="autorerank's model_class, where the name does not say"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from autorerank import AutoReranker

    pairs = read_pairs(args.pairs)[: args.count]
    reranker = AutoReranker.from_finetuned(
        args.model, model_class=args.model_class, precision=args.precision, show_progress=False
    )
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    result = measure(lambda: reranker.compute_score(pairs), dtype, args.repeats)
    print(json.dumps({"model": args.model, "pairs": len(pairs), "precision": args.precision, **result}))
    print(
        f"{len(pairs)} pairs, {args.precision}: the GEMMs take {result['gemm_share']:.0%} of the pass "
        f"({result['gemm_gflops']:.0f} GFLOP/s, {result['gemm_fraction_of_peak']:.0%} of the "
        f"{result['peak_gflops']:.0f} GFLOP/s square matmul); removing all other work would be at most "
        f"{result['bound_without_other_work']:.2f}x faster."
    )


if __name__ == "__main__":
    main()
