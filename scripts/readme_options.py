"""Rewrite the README's option table from the option table in src/autorerank/options.py.

Run after adding or changing an option: `.venv/bin/python scripts/readme_options.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

from autorerank.options import markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE = re.compile(r"^\| option \| default \|.*?\n(?=\n)", re.MULTILINE | re.DOTALL)


def main() -> None:
    text = README.read_text(encoding="utf-8")
    updated, count = TABLE.subn(lambda _: markdown_table(), text, count=1)
    if count != 1:
        raise SystemExit("README.md has no option table to replace")
    README.write_text(updated, encoding="utf-8")


if __name__ == "__main__":
    main()
