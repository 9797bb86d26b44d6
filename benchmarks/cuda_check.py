"""Replay every golden record on a GPU: fp32 against FlagEmbedding's CPU scores, fp16 and bf16 against fp32.

CI has no GPU, so the CUDA paths are checked with this script on a machine that has one::

    python benchmarks/cuda_check.py --fixtures ../shared/fixtures [--device cuda:0] [--json out.json]

For each golden record without an expected error (``golden_public.json``, and ``golden_qwen3_public.json`` for
the Qwen3 kind) it loads the fixture on the GPU with the record's arguments and reports the largest difference
from the golden scores in fp32 (TF32 off), and the largest difference and Spearman correlation of fp16 and bf16
against the GPU's own fp32. The exit status is 1 when an fp32 score is off by more than the fixture's tolerance or
a run fails, so the script is a check, not only a report.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autorerank import AutoReranker

# Records of reference bugs that autorerank deliberately does not reproduce (see tests/test_layerwise.py and
# tests/test_lightweight.py): no fp32 comparison is meaningful for them.
REFERENCE_BUGS = {"lw-cutoff-unsorted", "lw-cutoff-partly-invalid", "lt-cutoff-partly-invalid"}


def spearman(a: list[float], b: list[float]) -> float:
    rank_a, rank_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(rank_a, rank_b)[0, 1]) if len(a) > 1 else 1.0


def golden_cases(fixtures: Path) -> list[dict[str, Any]]:
    """Records of both golden files in one shape: fixture, loader, init and call arguments, pairs, scores."""
    public = json.loads((fixtures / "golden_public.json").read_text(encoding="utf-8"))
    tolerances = public["meta"]["suggested_abs_tolerance"]
    cases = []
    for record in public["records"]:
        if record["error"] is not None or record["case_id"] in REFERENCE_BUGS:
            continue
        init = {
            k: v for k, v in record["init_kwargs"].items() if k not in ("devices", "use_fp16", "use_bf16")
        }
        pairs = record["pairs"] if record["input_mode"] == "list" else [record["pairs"][0]]
        cases.append({
            "case": record["case_id"], "fixture": record["fixture"].rstrip("/"), "loader": record["loader"],
            "init": init, "call": record["call_kwargs"], "pairs": pairs, "scores": record["scores"],
            "tolerance": max(1e-4, tolerances[record["fixture"].rstrip("/")]),
        })  # fmt: skip
    qwen3 = json.loads((fixtures / "golden_qwen3_public.json").read_text(encoding="utf-8"))
    for record in qwen3["records"]:
        cases.append({
            "case": record["case_id"], "fixture": record["fixture"], "loader": "auto",
            "init": {"max_length": record["max_length"], "prompt": record["instruction"]}, "call": {},
            "pairs": record["pairs"], "scores": record["raw"], "tolerance": 1e-4,
        })  # fmt: skip
    return cases


def score(case: dict[str, Any], fixtures: Path, device: str, precision: str) -> list[float]:
    model_class = None if case["loader"] == "auto" else case["loader"]
    flags = {"use_fp16": precision == "fp16", "use_bf16": precision == "bf16"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reranker = AutoReranker.from_finetuned(
            str(fixtures / case["fixture"]),
            model_class,
            devices=device,
            show_progress=False,
            **flags,
            **case["init"],
        )
    scores = reranker.compute_score([tuple(pair) for pair in case["pairs"]], **case["call"])
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    return [float(value) for value in flat]


def check(case: dict[str, Any], fixtures: Path, device: str) -> dict[str, Any]:
    row: dict[str, Any] = {"case": case["case"]}
    fp32 = score(case, fixtures, device, "fp32")
    golden = np.asarray(case["scores"], dtype=np.float64).reshape(-1)
    row["fp32_max_diff"] = float(np.max(np.abs(np.asarray(fp32) - golden))) if len(fp32) else 0.0
    row["fp32_ok"] = row["fp32_max_diff"] <= case["tolerance"]
    for precision in ("fp16", "bf16"):
        low = score(case, fixtures, device, precision)
        row[f"{precision}_max_diff"] = (
            float(np.max(np.abs(np.asarray(low) - np.asarray(fp32)))) if low else 0.0
        )
        row[f"{precision}_spearman"] = round(spearman(low, fp32), 4)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, required=True, help="the shared fixtures folder")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows, failed = [], 0
    for case in golden_cases(args.fixtures):
        try:
            row = check(case, args.fixtures, args.device)
        except Exception as error:  # noqa: BLE001 - a failing case is reported, and the others still run
            row = {"case": case["case"], "error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        failed += not row.get("fp32_ok", False)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"{len(rows) - failed}/{len(rows)} cases within tolerance in fp32 on {args.device}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
