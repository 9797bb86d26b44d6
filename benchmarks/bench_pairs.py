"""Deterministic, realistic-length query/passage pairs for the speed benchmark.

Speed depends on token counts, not on meaning, so the text only has to look like English to a subword tokenizer:
frequent function words, content words of mixed length (some split into several word pieces), numbers and
punctuation. Everything comes from one seeded `random.Random`, so a seed always gives the same pairs; the pairs are
written to one file that every library's subprocess reads, so all libraries score exactly the same inputs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from bench_words import ADJECTIVES, CONTENT_WORDS, FUNCTION_WORDS, QUESTION_STARTS, VERBS

QUERY_WORDS = (5, 15)
PASSAGE_WORDS = (30, 200)


def _word(rng: random.Random) -> str:
    """One word: function words dominate, as in real text, so word-piece counts per word stay realistic."""
    roll = rng.random()
    if roll < 0.42:
        return rng.choice(FUNCTION_WORDS)
    if roll < 0.80:
        return rng.choice(CONTENT_WORDS)
    if roll < 0.90:
        return rng.choice(ADJECTIVES)
    if roll < 0.97:
        return rng.choice(VERBS)
    return str(rng.randint(2, 2025))


def _sentence_words(rng: random.Random, count: int) -> list[str]:
    """`count` words with sentence capitals, commas and full stops, as one flat list of words."""
    words: list[str] = []
    left_in_sentence = 0
    for _ in range(count):
        if left_in_sentence == 0:
            left_in_sentence = rng.randint(6, 22)
            word = _word(rng).capitalize()
        else:
            word = _word(rng)
        left_in_sentence -= 1
        if left_in_sentence == 0:
            word += "."
        elif rng.random() < 0.06:
            word += ","
        words.append(word)
    if not words[-1].endswith("."):
        words[-1] = words[-1].rstrip(",") + "."
    return words


def make_query(rng: random.Random) -> str:
    """A question-like query of QUERY_WORDS words."""
    count = rng.randint(*QUERY_WORDS)
    start = rng.choice(QUESTION_STARTS).split() if rng.random() < 0.6 else []
    start = start[: count - 1]
    body = [_word(rng) for _ in range(count - len(start))]
    words = start + body
    words[0] = words[0].capitalize()
    return " ".join(words) + ("?" if start else "")


def make_passage(rng: random.Random) -> str:
    """A passage of PASSAGE_WORDS words (uniform, so short and long passages mix in every batch)."""
    return " ".join(_sentence_words(rng, rng.randint(*PASSAGE_WORDS)))


def generate_pairs(count: int, seed: int) -> list[tuple[str, str]]:
    """`count` (query, passage) pairs; the same seed always gives the same pairs."""
    rng = random.Random(seed)
    return [(make_query(rng), make_passage(rng)) for _ in range(count)]


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> None:
    """Write pairs as JSON, the one input file every library's subprocess reads."""
    path.write_text(json.dumps([list(pair) for pair in pairs]), encoding="utf-8")


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """Read pairs written by `write_pairs`."""
    return [(query, passage) for query, passage in json.loads(path.read_text(encoding="utf-8"))]
