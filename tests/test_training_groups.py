"""training/train.py: which passages each training query is shown, from a small data folder written here."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from training_support import load_training_script

train = load_training_script("train")

QUERIES = 6
PASSAGES = 60  # p0..p59; query qI's relevant passage is pI, its BM25 list the next 10 passages


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    def jsonl(name: str, items: dict[str, str]) -> None:
        lines = [json.dumps({"_id": key, "text": text}) for key, text in items.items()]
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    jsonl("corpus.jsonl", {f"p{i}": f"passage {i}" for i in range(PASSAGES)})
    jsonl("queries-train.jsonl", {f"q{i}": f"query {i}" for i in range(QUERIES)})
    (tmp_path / "qrels-train.txt").write_text(
        "".join(f"q{i} 0 p{i} 1\n" for i in range(QUERIES)), encoding="utf-8"
    )
    run = [f"q{i} Q0 p{i + rank} {rank + 1} {10 - rank} bm25\n" for i in range(QUERIES) for rank in range(11)]
    (tmp_path / "bm25-train.trec").write_text("".join(run), encoding="utf-8")
    return tmp_path


def groups(data: Path, seed: int = 1, **changes: int) -> list[tuple[str, list[str]]]:
    config = train.TrainConfig(data=str(data), queries=QUERIES, **changes)
    return train.training_groups(config, random.Random(seed))


def test_each_group_is_the_relevant_passage_then_bm25_then_random_negatives(data: Path) -> None:
    made = groups(data, group=6, random_negatives=2, negatives_from=11)
    assert sorted(query for query, _ in made) == sorted(f"query {i}" for i in range(QUERIES))
    for query, passages in made:
        number = int(query.split()[1])
        ids = [int(text.split()[1]) for text in passages]
        assert len(ids) == 6 and len(set(ids)) == 6
        assert ids[0] == number  # the relevant passage first: the loss's target is index 0
        assert all(number < i <= number + 10 for i in ids[1:4])  # three from the query's BM25 list
        assert all(i != number for i in ids[4:])  # two from anywhere, never the relevant one


def test_groups_are_seeded(data: Path) -> None:
    assert groups(data, seed=3) == groups(data, seed=3)
    assert groups(data, seed=3) != groups(data, seed=4)


def test_without_random_negatives_every_negative_comes_from_bm25(data: Path) -> None:
    for query, passages in groups(data, group=4, random_negatives=0, negatives_from=11):
        number = int(query.split()[1])
        assert all(number < int(text.split()[1]) <= number + 10 for text in passages[1:])


def test_more_random_negatives_than_the_group_holds_is_refused(data: Path) -> None:
    with pytest.raises(ValueError, match="random-negatives must be 0 to 3"):
        groups(data, group=4, random_negatives=4)
