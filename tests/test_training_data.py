"""training/prepare_data.py: how Debian's Translation-en becomes queries, passages, judgments and a split."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_support import load_training_script

prepare = load_training_script("prepare_data")

TRANSLATION = """Package: zstd
Description-md5: 1
Description-en: fast lossless compression algorithm -- CLI tool
 Zstd, short for Zstandard, is a fast lossless compression algorithm.
 .
 This package contains the CLI program.

Package: libzstd-dev
Description-md5: 2
Description-en: fast lossless compression algorithm -- development files
 Zstd, short for Zstandard, is a fast lossless compression algorithm.
 .
 This package contains the headers.

Package: gcc-12-arm
Description-md5: 3
Description-en: GNU C compiler (cross compiler)
 This is the GNU C compiler.

Package: gcc-12-mips
Description-md5: 4
Description-en: GNU C compiler (cross compiler)
 This is the GNU C compiler for MIPS.

Package: old-tool
Description-md5: 5
Description-en: transitional package
 This is a transitional package. It can safely be removed.

Package: other-old-tool
Description-md5: 6
Description-en: transitional dummy package
 This is a transitional package. It can safely be removed.

Package: nothing-long
Description-md5: 7
Description-en: only a synopsis

Package: zstd
Description-md5: 1
Description-en: fast lossless compression algorithm -- CLI tool
 Zstd, short for Zstandard, is a fast lossless compression algorithm.
 .
 This package contains the CLI program.
"""


def collection():
    return prepare.build_collection(prepare.parse_entries(TRANSLATION))


def test_synopsis_is_the_first_line_and_dot_lines_break_paragraphs() -> None:
    zstd = next(prepare.parse_entries(TRANSLATION))
    assert zstd.synopsis == "fast lossless compression algorithm -- CLI tool"
    assert zstd.text == (
        "Zstd, short for Zstandard, is a fast lossless compression algorithm.\nThis package contains the CLI program."
    )


def test_queries_passages_and_judgments() -> None:
    built = collection()
    queries = {**built.queries["train"], **built.queries["dev"]}
    qrels = {**built.qrels["train"], **built.qrels["dev"]}
    # A repeated record is read once, a synopsis without a long description is no query.
    assert sorted(queries) == ["gcc-12-arm", "libzstd-dev", "old-tool", "other-old-tool", "zstd"]
    # A synopsis shared by two packages is one query, relevant to both long descriptions.
    assert qrels["gcc-12-arm"] == ["gcc-12-arm", "gcc-12-mips"]
    # A long description shared by two packages is one passage, named after the first package.
    assert qrels["old-tool"] == qrels["other-old-tool"] == ["old-tool"]
    assert len(built.passages) == 5


def test_packages_sharing_a_text_stay_on_one_side_of_the_split(monkeypatch: pytest.MonkeyPatch) -> None:
    for percent in range(0, 101, 10):
        monkeypatch.setattr(prepare, "DEV_PERCENT", percent)
        dev = collection().queries["dev"]
        assert ("old-tool" in dev) == ("other-old-tool" in dev)  # one long description
    monkeypatch.setattr(prepare, "DEV_PERCENT", 0)
    assert not collection().queries["dev"]
    monkeypatch.setattr(prepare, "DEV_PERCENT", 100)
    assert not collection().queries["train"]


def test_the_split_is_a_hash_of_the_group_s_first_package_name() -> None:
    built = collection()
    for split, queries in built.queries.items():
        for qid in queries:
            group = "old-tool" if qid == "other-old-tool" else qid
            assert prepare._is_dev(group) == (split == "dev")


@pytest.mark.parametrize("suffix", [".xz", ".txt"])
def test_the_source_is_checked_against_its_pinned_sha256(tmp_path: Path, suffix: str) -> None:
    import hashlib
    import lzma

    data = TRANSLATION.encode("utf-8")
    path = tmp_path / f"Translation-en{suffix}"
    path.write_bytes(lzma.compress(data) if suffix == ".xz" else data)
    assert prepare.read_source(path, hashlib.sha256(data).hexdigest()) == TRANSLATION
    with pytest.raises(SystemExit, match="snapshot.debian.org"):
        prepare.read_source(path, prepare.PINNED_SHA256)
