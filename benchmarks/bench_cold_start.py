"""Cold start: seconds from process start to the first score, autorerank's CLI against the equivalent FlagEmbedding
script, on the speed benchmark's MiniLM cross-encoder.

    python benchmarks/bench_cold_start.py [--repeats 5] [--model DIR]

Each run is a fresh process that loads the model and ranks one query against three documents, alternating between
the two, ``--repeats`` times each; the clock covers the whole process (interpreter start, imports, loading,
tokenizing, scoring, printing), as a user who types the command waits for it. The report gives the median and
spread of each and their ratio, and the import time of ``autorerank`` alone. The model comes from the speed
benchmark's cache (run ``benchmarks/run.py --quick`` once to build it).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_env import venv_python

CACHE = Path.home() / ".cache" / "autorerank-bench"
QUERY = "what do pandas eat"
DOCUMENTS = (
    "The giant panda's diet is almost entirely bamboo leaves, stems and shoots.",
    "Pandas is a Python library for data analysis built on NumPy.",
    "Red pandas live in the eastern Himalayas and also feed on bamboo.",
)
REFERENCE_SCRIPT = (
    "import sys\n"
    "from FlagEmbedding import FlagReranker\n"
    "model, query, *documents = sys.argv[1:]\n"
    "reranker = FlagReranker(model, use_fp16=False)\n"
    "print(reranker.compute_score([[query, d] for d in documents]))\n"
)


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=CACHE / "models" / "minilm")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ours = [sys.executable, "-m", "autorerank", "rank", str(args.model), "--query", QUERY, *DOCUMENTS]
    reference = [str(venv_python(CACHE)), "-c", REFERENCE_SCRIPT, str(args.model), QUERY, *DOCUMENTS]
    imports = [sys.executable, "-c", "import autorerank"]
    times: dict[str, list[float]] = {"autorerank rank": [], "FlagEmbedding script": [], "import autorerank": []}
    for command in (ours, reference):  # page cache warm for both: what a second run of the day sees
        _timed(command)
    for _ in range(args.repeats):
        times["autorerank rank"].append(_timed(ours))
        times["FlagEmbedding script"].append(_timed(reference))
        times["import autorerank"].append(_timed(imports))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:22} {medians[name]:6.2f} s [{min(values):.2f}-{max(values):.2f}] over {len(values)} runs")
    ratio = medians["FlagEmbedding script"] / medians["autorerank rank"]
    print(f"autorerank rank reaches its first score {ratio:.2f}x as fast as the FlagEmbedding script")


if __name__ == "__main__":
    main()
