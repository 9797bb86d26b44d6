"""Build one benchmark checkpoint. Runs inside the reference venv (transformers 4.46), so every library reads a
checkpoint written in the long-established format, like the ones on the model hub; the layer-wise and lightweight
models are built with FlagEmbedding's own classes for them.

    python bench_build.py NAME OUT_DIR --minilm MINILM_DIR --sentencepiece SP_MODEL

Weights are deterministic: the seed in bench_specs.SPECS, with torch and transformers pinned by the venv.
Tokenizers:
- minilm: the real all-MiniLM-L6-v2 WordPiece tokenizer files, unchanged (their tokenizer.json ships with
  truncation and padding at 128 switched on, as many hub checkpoints do).
- xlmr-base: the same English WordPiece vocabulary (30522 ids, all inside the 250002-row embedding table). XLM-R's
  own SentencePiece model is not available offline, and the fixture's 2.7k-token Unigram tokenizer would split
  English into many more pieces than a real 250k vocabulary, inflating sequence lengths; an English 30k WordPiece
  gives about the token counts XLM-R gives on English. Like XLM-R it has a single segment: the pair template
  gives the passage type id 0 and `model_input_names` omits token_type_ids.
- llm, layerwise, lightweight: Mistral's v1 SentencePiece BPE model (32000 tokens, shipped in the
  `mistral-common` wheel) converted to a tokenizer.json by transformers' LlamaTokenizerFast converter; <unk>
  doubles as the pad token (so pad != bos and the reference prepends <bos>), left padding. The SentencePiece file
  is not kept, so all libraries read tokenizer.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_specs import SPECS, ModelSpec

MINILM_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def build_minilm(spec: ModelSpec, out: Path, minilm_dir: Path) -> None:
    """Real MiniLM-L6 encoder weights under a seeded one-label classification head."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(minilm_dir)
    config.num_labels = 1
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(spec.seed)
    model = BertForSequenceClassification(config)
    state = {
        k: v for k, v in load_file(minilm_dir / "model.safetensors").items() if k != "embeddings.position_ids"
    }
    missing, unexpected = model.bert.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"MiniLM weights do not fit BertModel: missing={missing} unexpected={unexpected}")
    model.eval().save_pretrained(out, safe_serialization=True)
    for name in MINILM_TOKENIZER_FILES:
        shutil.copy(minilm_dir / name, out / name)


def _single_segment_tokenizer(minilm_dir: Path, out: Path) -> None:
    """MiniLM's WordPiece files with XLM-R's single-segment convention (see the module docstring)."""
    tokenizer = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    for piece in tokenizer["post_processor"]["pair"]:
        next(iter(piece.values()))["type_id"] = 0
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    config = json.loads((minilm_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["model_input_names"] = ["input_ids", "attention_mask"]
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for name in ("special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm_dir / name, out / name)


def build_xlmr_base(spec: ModelSpec, out: Path, minilm_dir: Path) -> None:
    """Seeded random XLM-RoBERTa classifier at bge-reranker-base dimensions."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    config = XLMRobertaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        intermediate_size=spec.intermediate,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        num_labels=1,
        pad_token_id=0,
        bos_token_id=101,
        eos_token_id=102,  # the WordPiece [PAD]/[CLS]/[SEP] ids
        architectures=["XLMRobertaForSequenceClassification"],
    )
    torch.manual_seed(spec.seed)
    model = XLMRobertaForSequenceClassification(config)
    model.eval().save_pretrained(out, safe_serialization=True)
    _single_segment_tokenizer(minilm_dir, out)


def _bpe_tokenizer(spec: ModelSpec, sentencepiece_model: Path) -> Any:
    """The decoders' 32000-token BPE tokenizer (see the module docstring): <s> 1, </s> 2, <unk> 0 as pad, left pad."""
    from transformers import LlamaTokenizerFast

    tokenizer = LlamaTokenizerFast(
        vocab_file=str(sentencepiece_model),
        from_slow=True,
        legacy=False,
        pad_token="<unk>",
        padding_side="left",
        add_bos_token=True,
        add_eos_token=False,
    )
    if len(tokenizer) != spec.vocab_size:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, spec says {spec.vocab_size}")
    return tokenizer


def _decoder_sizes(spec: ModelSpec) -> dict[str, int]:
    """The config sizes every decoder builder takes from its spec."""
    return {
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
    }


def _save(model: Any, tokenizer: Any, out: Path) -> None:
    model.eval().save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "tokenizer.model").unlink(missing_ok=True)


def build_llm(spec: ModelSpec, out: Path, sentencepiece_model: Path) -> None:
    """Seeded random Gemma causal LM with a 32000-token BPE tokenizer."""
    from transformers import GemmaConfig, GemmaForCausalLM

    tokenizer = _bpe_tokenizer(spec, sentencepiece_model)
    config = GemmaConfig(
        **_decoder_sizes(spec),
        head_dim=spec.head_dim,
        max_position_embeddings=8192,
        hidden_activation="gelu_pytorch_tanh",
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
        architectures=["GemmaForCausalLM"],
    )
    torch.manual_seed(spec.seed)
    _save(GemmaForCausalLM(config), tokenizer, out)


def build_layerwise(spec: ModelSpec, out: Path, sentencepiece_model: Path) -> None:
    """Seeded random MiniCPM layer-wise reranker, with FlagEmbedding's own classes and the published config fields."""
    from FlagEmbedding.inference.reranker.decoder_only.models.configuration_minicpm_reranker import (
        LayerWiseMiniCPMConfig,
    )
    from FlagEmbedding.inference.reranker.decoder_only.models.modeling_minicpm_reranker import (
        LayerWiseMiniCPMForCausalLM,
    )

    tokenizer = _bpe_tokenizer(spec, sentencepiece_model)
    config = LayerWiseMiniCPMConfig(
        **_decoder_sizes(spec),
        hidden_act="silu",
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        use_cache=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        scale_emb=12,
        dim_model_base=256,
        scale_depth=1.4,
        start_layer=spec.start_layer,
        head_multi=True,
        head_type="simple",
        torch_dtype="float32",
        auto_map=_auto_map(
            "configuration_minicpm_reranker.LayerWiseMiniCPMConfig",
            "modeling_minicpm_reranker",
            "LayerWiseMiniCPM",
        ),
    )
    torch.manual_seed(spec.seed)
    _save(LayerWiseMiniCPMForCausalLM(config), tokenizer, out)


def build_lightweight(spec: ModelSpec, out: Path, sentencepiece_model: Path) -> None:
    """Seeded random cost-wise Gemma2 lightweight reranker, with FlagEmbedding's own classes."""
    from FlagEmbedding.inference.reranker.decoder_only.models.gemma_config import CostWiseGemmaConfig
    from FlagEmbedding.inference.reranker.decoder_only.models.gemma_model import CostWiseGemmaForCausalLM

    tokenizer = _bpe_tokenizer(spec, sentencepiece_model)
    config = CostWiseGemmaConfig(
        **_decoder_sizes(spec),
        head_dim=spec.head_dim,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=8192,
        rms_norm_eps=1e-6,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        query_pre_attn_scalar=spec.head_dim,
        sliding_window=4096,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        start_layer=spec.start_layer,
        layer_sep=spec.layer_sep,
        layer_wise=True,
        torch_dtype="float32",
        auto_map=_auto_map("gemma_config.CostWiseGemmaConfig", "gemma_model", "CostWiseGemma"),
    )
    torch.manual_seed(spec.seed)
    _save(CostWiseGemmaForCausalLM(config), tokenizer, out)


def _auto_map(config_class: str, module: str, prefix: str) -> dict[str, str]:
    """The auto_map the published checkpoints carry (their remote code; every library here loads natively)."""
    return {
        "AutoConfig": config_class,
        "AutoModel": f"{module}.{prefix}Model",
        "AutoModelForCausalLM": f"{module}.{prefix}ForCausalLM",
    }


DECODER_BUILDERS = {"llm": build_llm, "layerwise": build_layerwise, "lightweight": build_lightweight}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SPECS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--minilm", type=Path, required=True)
    parser.add_argument("--sentencepiece", type=Path, required=True)
    args = parser.parse_args()
    spec = SPECS[args.name]
    partial = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    if args.name == "minilm":
        build_minilm(spec, partial, args.minilm)
    elif args.name == "xlmr-base":
        build_xlmr_base(spec, partial, args.minilm)
    else:
        DECODER_BUILDERS[args.name](spec, partial, args.sentencepiece)
    (partial / ".bench-build").write_text(spec.fingerprint())
    shutil.rmtree(args.out, ignore_errors=True)
    partial.rename(args.out)
    print(f"[setup] built {args.name} at {args.out}", flush=True)


if __name__ == "__main__":
    main()
