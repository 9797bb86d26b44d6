"""What the command-line tests share: the inputs and how to run the CLI in-process."""

from __future__ import annotations

import io
import sys

from autorerank.cli import main

ENC = "enc/bge-reranker-v2-m3"


QUERY = "what is a panda?"


DOCS = [
    "The giant panda is a bear native to China.",
    "Paris is the capital of France.",
    "hi",
    "Pandas eat bamboo.",
]


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_cli(argv, capsys, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(
            sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8")
        )
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
