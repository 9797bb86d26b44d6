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

QUERY_WORDS = (5, 15)
PASSAGE_WORDS = (30, 200)

_FUNCTION_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there one all we their has been more if will would who its so can when other than "
    "into some only about these two may first then do any like new also most after over such our between"
).split()

_CONTENT_WORDS = (
    "history system water energy protein market government river city century species computer network "
    "temperature population university language economy treatment disease patient policy election engine "
    "battery mountain island ocean climate carbon membrane enzyme hormone vitamin algorithm database server "
    "protocol bandwidth latency compiler kernel processor memory storage cluster satellite telescope galaxy "
    "planet orbit gravity particle electron photon molecule reaction catalyst polymer crystal mineral volcano "
    "earthquake glacier desert forest wetland habitat migration predator insect fungus bacteria virus antibody "
    "vaccine therapy surgery diagnosis symptom inflammation metabolism nutrition exercise muscle skeleton "
    "neuron cortex behavior cognition emotion language grammar vocabulary literature poetry novel theater "
    "painting sculpture architecture cathedral empire dynasty revolution treaty constitution parliament "
    "senate judiciary amendment taxation inflation currency exchange investment mortgage insurance pension "
    "employment wages productivity agriculture irrigation fertilizer harvest livestock fishery forestry "
    "manufacturing textile steel aluminum petroleum pipeline refinery electricity turbine generator reactor "
    "transmission voltage circuit transistor semiconductor wafer lithography sensor camera display keyboard "
    "software interface encryption authentication password firewall malware vulnerability migration "
    "deployment container orchestration scheduler throughput benchmark optimization regression classifier "
    "embedding transformer attention gradient inference training dataset annotation evaluation retrieval "
    "ranking relevance document passage query answer question search engine index tokenizer vector "
    "neighborhood community festival tradition ceremony religion philosophy ethics morality justice freedom "
    "democracy citizenship immigration refugee border territory province municipality infrastructure highway "
    "railway airport harbor bridge tunnel canal reservoir aqueduct sanitation hospital clinic pharmacy "
    "ambulance emergency firefighter police detective prosecutor attorney verdict sentence appeal "
    "photosynthesis chlorophyll mitochondria ribosome chromosome mutation heredity evolution extinction "
    "biodiversity ecosystem pollination germination deforestation desertification acidification "
    "thermodynamics electromagnetism superconductivity spectroscopy chromatography crystallography "
    "cardiovascular gastrointestinal respiratory immunological neurological dermatological orthopedic "
    "pediatric geriatric psychiatric epidemiological pharmacological anesthesiology radiology oncology"
).split()

_ADJECTIVES = (
    "large small ancient modern early late major minor central northern southern eastern western local "
    "national global public private digital chemical biological physical economic political social "
    "cultural historical natural artificial rapid slow efficient reliable complex simple significant "
    "common rare primary secondary average typical annual seasonal urban rural coastal tropical"
).split()

_VERBS = (
    "describes explains includes requires produces reduces increases supports measures contains provides "
    "describes controls affects develops improves prevents replaces connects transports protects regulates "
    "converts generates stores releases absorbs influences determines represents"
).split()

_QUESTION_STARTS = ("what is", "how does", "why do", "when did", "where is", "which", "how many", "who")


def _word(rng: random.Random) -> str:
    """One word: function words dominate, as in real text, so word-piece counts per word stay realistic."""
    roll = rng.random()
    if roll < 0.42:
        return rng.choice(_FUNCTION_WORDS)
    if roll < 0.80:
        return rng.choice(_CONTENT_WORDS)
    if roll < 0.90:
        return rng.choice(_ADJECTIVES)
    if roll < 0.97:
        return rng.choice(_VERBS)
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
    start = rng.choice(_QUESTION_STARTS).split() if rng.random() < 0.6 else []
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
