"""Build the Debian package-description retrieval set that ``autorerank-mini`` is trained and measured on.

Source: Debian bookworm's English package descriptions (``main/i18n/Translation-en``), which
``apt-get update -o Acquire::Languages=en`` stores lz4-compressed under ``/var/lib/apt/lists``. Each package has a
one-line synopsis and a long description; here a **query** is a synopsis and a **passage** a long description, and
the relevant passages of a query are the long descriptions of every package with that synopsis (a description
shared by several packages is one passage, relevant to each of their synopses).

Split: packages that share a synopsis or a long description are joined into one group (so no text is on both
sides); a group goes to **dev** when the first 8 hex digits of the sha256 of its alphabetically first package name,
read as an integer, are below 4% of 16^8 and to **train** otherwise.

First stage: BM25 (``bm25s``: Lucene's BM25, k1=1.5, b=0.75, English stop words, Snowball English stemmer) over
every passage, top 100 per dev query (and top ``--train-depth`` per train query, where the hard negatives come
from), written as TREC runs beside TREC qrels and BEIR JSONL queries and corpus, which ``autorerank rerank-run``
and ``autorerank eval`` read. Nothing written here is committed except the small test sample
(``--sample-out``). Run from the repo root (needs ``pip install -e '.[train]'``)::

    apt-get update -o Acquire::Languages=en && python training/prepare_data.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# The decompressed Translation-en of bookworm main, as listed (size 32699363) in the bookworm InRelease dated
# Sat, 11 Jul 2026 10:16:37 UTC. apt recompresses the file itself, so the lz4 bytes (sha256 a047e8ef...6a01
# here) depend on apt's lz4 version; the text does not, hence the pin is on the text.
PINNED_SHA256 = "62f59c3cdca9786e4f7adf9002f9f5729a684adcb4667e58e448dec9b5a46c7f"
DEFAULT_SOURCE = "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en.lz4"
DEV_PERCENT = 4
DEV_DEPTH = 100
SAMPLE_QUERIES = 40
SEED = 13


@dataclass(frozen=True)
class Entry:
    """One package's description, as Translation-en gives it."""

    package: str
    synopsis: str
    text: str  # the long description: paragraphs joined by "\n", lines within a paragraph by spaces


@dataclass
class Collection:
    """Queries, passages and judgments, split into train and dev."""

    passages: dict[str, str]  # passage id -> text
    queries: dict[str, dict[str, str]]  # split -> query id -> synopsis
    qrels: dict[str, dict[str, list[str]]]  # split -> query id -> relevant passage ids


# ----------------------------------------------------------------------------- reading the source
def read_source(path: Path, expected_sha256: str | None) -> str:
    """The decompressed Translation-en text, checked against the pinned sha256."""
    if path.suffix == ".lz4":  # as apt stores it
        import lz4.frame

        raw = lz4.frame.decompress(path.read_bytes())
    elif path.suffix == ".xz":  # as the archive (and snapshot.debian.org) serves it
        import lzma

        raw = lzma.decompress(path.read_bytes())
    else:
        raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        sys.exit(
            f"{path}: its text has sha256 {digest}, not the pinned {expected_sha256}. The mirror now serves "
            "another Translation-en (a Debian point release changes it), so the split, the model and the README's "
            "numbers would differ. To reproduce them, fetch the pinned file from snapshot.debian.org (bookworm's "
            "main/i18n/Translation-en.xz as of 2026-07-11, sha256 of the .xz a3d4a0bf...dfa4bf0) and pass it as "
            "--source FILE.xz; to build a new data set from this file instead, pass --expect-sha256 " + digest
        )
    return raw.decode("utf-8")


def parse_entries(text: str) -> Iterator[Entry]:
    """Each (Package, Description-en) record; continuation lines form the long description, ``' .'`` lines
    break paragraphs."""
    for block in text.split("\n\n"):
        package, synopsis, lines = "", "", []
        in_description = False
        for line in block.splitlines():
            if line.startswith("Package:"):
                package, in_description = line.split(":", 1)[1].strip(), False
            elif line.startswith("Description-en:"):
                synopsis, in_description = line.split(":", 1)[1].strip(), True
            elif in_description and line.startswith(" "):
                lines.append(line[1:])
            else:
                in_description = False
        if package and synopsis:
            yield Entry(package, synopsis, _long_text(lines))


def _long_text(lines: Iterable[str]) -> str:
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip() == ".":
            paragraphs.append([])
        else:
            paragraphs[-1].append(line.strip())
    return "\n".join(" ".join(words) for words in paragraphs if words)


# ----------------------------------------------------------------------------- ids, groups, split
def build_collection(entries: Iterable[Entry]) -> Collection:
    unique = sorted(set(entries), key=lambda e: (e.package, e.synopsis, e.text))
    unique = [entry for entry in unique if entry.text]  # a synopsis without a long description has no answer
    passage_id = _name_by_first_package({e.text: e.package for e in reversed(unique)}, unique, "text")
    query_id = _name_by_first_package({e.synopsis: e.package for e in reversed(unique)}, unique, "synopsis")
    group = _groups(unique)
    queries: dict[str, dict[str, str]] = {"train": {}, "dev": {}}
    qrels: dict[str, dict[str, list[str]]] = {"train": defaultdict(list), "dev": defaultdict(list)}
    for entry in unique:
        split = "dev" if _is_dev(group[entry.package]) else "train"
        qid, pid = query_id[entry.synopsis], passage_id[entry.text]
        queries[split][qid] = entry.synopsis
        if pid not in qrels[split][qid]:
            qrels[split][qid].append(pid)
    passages = {pid: text for text, pid in passage_id.items()}
    return Collection(passages, queries, {split: dict(judged) for split, judged in qrels.items()})


def _name_by_first_package(first: dict[str, str], entries: list[Entry], field: str) -> dict[str, str]:
    """An id per distinct text: its alphabetically first package, with ``~2``, ``~3`` when that package names
    several texts (a package listed twice with different descriptions)."""
    ids: dict[str, str] = {}
    used: dict[str, int] = {}
    for entry in entries:  # sorted by package: ids do not depend on the file's order
        value = getattr(entry, field)
        if value in ids:
            continue
        base = first[value]
        used[base] = used.get(base, 0) + 1
        ids[value] = base if used[base] == 1 else f"{base}~{used[base]}"
    return ids


def _groups(entries: list[Entry]) -> dict[str, str]:
    """Package -> the first package of its group (packages joined by a shared synopsis or long description)."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for entry in entries:
        for key in ("S:" + entry.synopsis, "T:" + entry.text):
            a, b = root("P:" + entry.package), root(key)
            if a != b:
                parent[max(a, b)] = min(a, b)  # "P:" sorts first, so a root is a package, the least one
    return {entry.package: root("P:" + entry.package)[2:] for entry in entries}


def _is_dev(group: str) -> bool:
    return int(hashlib.sha256(group.encode("utf-8")).hexdigest()[:8], 16) < DEV_PERCENT * 16**8 // 100


# ----------------------------------------------------------------------------- BM25
def bm25_runs(
    passages: dict[str, str], queries: dict[str, dict[str, str]], depths: dict[str, int]
) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """split -> query id -> [(passage id, score)], best first, for each split with a depth."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    ids = list(passages)
    retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    retriever.index(
        bm25s.tokenize([passages[i] for i in ids], stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    runs: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for split, depth in depths.items():
        qids = list(queries[split])
        tokens = bm25s.tokenize(
            [queries[split][q] for q in qids],
            stopwords="en",
            stemmer=stemmer,
            return_ids=False,
            show_progress=False,
        )
        hits, scores = retriever.retrieve(tokens, k=depth, show_progress=False, n_threads=2)
        runs[split] = {
            qid: [(ids[int(doc)], float(score)) for doc, score in zip(row_docs, row_scores) if score > 0]
            for qid, row_docs, row_scores in zip(qids, hits, scores)
        }
    return runs


# ----------------------------------------------------------------------------- writing
def write_jsonl(path: Path, texts: dict[str, str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(
            json.dumps({"_id": item_id, "text": text}, ensure_ascii=False) + "\n"
            for item_id, text in texts.items()
        )


def write_qrels(path: Path, qrels: dict[str, list[str]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for qid, relevant in qrels.items():
            handle.writelines(f"{qid} 0 {pid} 1\n" for pid in relevant)


def write_run(path: Path, run: dict[str, list[tuple[str, float]]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for qid, ranking in run.items():
            handle.writelines(
                f"{qid} Q0 {pid} {rank} {score:.6f} bm25\n" for rank, (pid, score) in enumerate(ranking, 1)
            )


def dev_subset(run: dict[str, list[tuple[str, float]]], size: int) -> list[str]:
    """``size`` dev queries in the order of the sha256 of their ids: a fixed subset for slow measurements."""
    return sorted(run, key=lambda qid: hashlib.sha256(qid.encode("utf-8")).hexdigest())[:size]


def test_sample(collection: Collection, run: dict[str, list[tuple[str, float]]], size: int) -> list[dict]:
    """A seeded sample of dev queries with one relevant passage and BM25's best-ranked wrong passage."""
    qrels = collection.qrels["dev"]
    candidates = sorted(
        qid for qid, ranking in run.items() if any(pid not in qrels[qid] for pid, _ in ranking)
    )
    sample = []
    for qid in sorted(random.Random(SEED).sample(candidates, size)):
        ranking = [pid for pid, _ in run[qid]]
        wrong = next(pid for pid in ranking if pid not in qrels[qid])
        relevant = qrels[qid][0]
        sample.append(
            {
                "query_id": qid,
                "query": collection.queries["dev"][qid],
                "relevant_id": relevant,
                "relevant": collection.passages[relevant],
                "bm25_wrong_id": wrong,
                "bm25_wrong": collection.passages[wrong],
                "bm25_prefers_wrong": ranking.index(wrong)
                < (ranking.index(relevant) if relevant in ranking else 999),
            }
        )
    return sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", type=Path, default=Path(DEFAULT_SOURCE), help="Translation-en: .lz4 (apt), .xz or plain"
    )
    parser.add_argument("--expect-sha256", default=PINNED_SHA256, help="sha256 of its decompressed text")
    parser.add_argument("--out", type=Path, default=Path("data/debian-en"), help="output folder (not in git)")
    parser.add_argument(
        "--dev-subset", type=int, default=500, help="also write a run and qrels of this many dev queries"
    )
    parser.add_argument(
        "--train-depth", type=int, default=30, help="BM25 depth for train queries (negatives)"
    )
    parser.add_argument(
        "--sample-out",
        type=Path,
        default=Path("tests/data/debian_dev_sample.json"),
        help="the committed test sample",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    collection = build_collection(parse_entries(read_source(args.source, args.expect_sha256)))
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "corpus.jsonl", collection.passages)
    for split in ("train", "dev"):
        write_jsonl(args.out / f"queries-{split}.jsonl", collection.queries[split])
        write_qrels(args.out / f"qrels-{split}.txt", collection.qrels[split])
    runs = bm25_runs(collection.passages, collection.queries, {"dev": DEV_DEPTH, "train": args.train_depth})
    for split, run in runs.items():
        write_run(args.out / f"bm25-{split}.trec", run)
    subset = dev_subset(runs["dev"], args.dev_subset)
    write_run(args.out / f"bm25-dev{len(subset)}.trec", {qid: runs["dev"][qid] for qid in subset})
    write_qrels(
        args.out / f"qrels-dev{len(subset)}.txt", {qid: collection.qrels["dev"][qid] for qid in subset}
    )
    sample = test_sample(collection, runs["dev"], SAMPLE_QUERIES)
    args.sample_out.parent.mkdir(parents=True, exist_ok=True)
    args.sample_out.write_text(json.dumps(sample, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    manifest = {
        "source": str(args.source),
        "source_text_sha256": args.expect_sha256,
        "passages": len(collection.passages),
        "queries": {split: len(queries) for split, queries in collection.queries.items()},
        "split": f"group's first package: int(sha256(name)[:8], 16) < {DEV_PERCENT}% of 16**8 -> dev",
        "bm25": {"library": "bm25s", "k1": 1.5, "b": 0.75, "stopwords": "en", "stemmer": "snowball english"},
        "depth": {"dev": DEV_DEPTH, "train": args.train_depth},
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(manifest, indent=2))
    print(f"done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
