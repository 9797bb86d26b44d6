"""A leaner forward pass for BERT-family cross-encoders, computing exactly what transformers computes.

transformers' ``BertForSequenceClassification`` and ``XLMRobertaForSequenceClassification`` (bge-reranker-base,
-large, -v2-m3, bce) spend time that a reranker does not need:

- three query/key/value GEMMs per layer where one wider GEMM does the same work;
- the whole last layer for every token, although the classification head reads only the first token.
  Keys and values still need every token; the query, attention output, feed-forward and layer norms of
  the last layer run on the first token alone (about 1/7 of MiniLM-L6's GEMM work, 1/14 of a 12-layer model);
- on the CPU, a bias copy before every GEMM and separate passes over memory for GELU and the residual
  additions. oneDNN's linear (the one torch.compile uses on CPUs) takes the bias, GELU and residual as
  post-ops, and runs these shapes 15-50% faster than the MKL GEMM behind ``F.linear``;
- on CPUs with AMX, a new oneDNN kernel for every batch's GEMM shapes (building one costs more than running it).
  The layers keep the batch as (rows, H), its B x T tokens followed by zero rows up to one of a few row counts
  (``padded_rows``), so the kernels repeat across batches.

The module is built from the weights by name, either a transformers model's own tensors
(:func:`fast_bert_classifier`) or a checkpoint's, read without transformers' modelling code
(:func:`read_bert_classifier`: importing that code costs about 2 s of a command's cold start). The fused QKV
matrix is a concatenation; every other tensor is used as stored, so every score equals transformers' up to float
summation order. Models this module does not recognise keep the transformers forward.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..compat import onednn_linear
from .linear import ACTIVATIONS, Activation, activated_linear, linear, padded_rows, rows_of

__all__ = [
    "BertShape",
    "ClassifierOutput",
    "FastBertClassifier",
    "fast_bert_classifier",
    "read_bert_classifier",
]

logger = logging.getLogger(__name__)

# Sequence classifiers whose layers, embeddings and heads have the layout read below: their family.
_SUPPORTED = {
    "BertForSequenceClassification": "bert",
    "RobertaForSequenceClassification": "roberta",
    "XLMRobertaForSequenceClassification": "roberta",
    "CamembertForSequenceClassification": "roberta",
}
# The config.json entries the module is sized by; a checkpoint lacking one is left to transformers and its defaults.
_SIZES = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act",
)  # fmt: skip


class ClassifierOutput(NamedTuple):
    """What the model returns: one logit per row, ``(B, 1)``, under the name transformers uses."""

    logits: torch.Tensor


@dataclass(frozen=True)
class BertShape:
    """The sizes and choices of one BERT-family classifier, from its config."""

    family: str  # "bert": pooler then linear head, positions 0..T-1; "roberta": dense+tanh head, positions past pad
    prefix: str  # the base model's name in the weights ("bert." or "roberta.")
    layers: int
    heads: int
    norm_eps: float
    pad_id: int
    hidden_act: object
    config: Mapping[str, Any]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BertShape | None:
        """The shape of a one-label classifier this module computes exactly, or None (keep transformers')."""
        family = _SUPPORTED.get(next(iter(config.get("architectures") or []), ""))
        if family is None or "auto_map" in config or any(config.get(name) is None for name in _SIZES):
            return None  # auto_map: the checkpoint brings its own modelling code
        if config.get("position_embedding_type", "absolute") != "absolute":
            logger.info("%s positions: keeping the transformers forward.", config["position_embedding_type"])
            return None
        if config.get("is_decoder") or config.get("add_cross_attention") or _labels(config) != 1:
            return None
        pad_id = config.get("pad_token_id", 0 if family == "bert" else None)
        if not isinstance(pad_id, int):
            return None
        return cls(
            family=family,
            prefix="bert." if family == "bert" else "roberta.",
            layers=int(config["num_hidden_layers"]),
            heads=int(config["num_attention_heads"]),
            norm_eps=float(config["layer_norm_eps"]),
            pad_id=pad_id,
            hidden_act=config["hidden_act"],
            config=dict(config),
        )

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every weight the module reads, by its name in the checkpoint, with the shape the config gives it."""
        c, p = self.config, self.prefix
        hidden, inner = int(c["hidden_size"]), int(c["intermediate_size"])
        shapes: dict[str, tuple[int, ...]] = {
            f"{p}embeddings.word_embeddings.weight": (int(c["vocab_size"]), hidden),
            f"{p}embeddings.position_embeddings.weight": (int(c["max_position_embeddings"]), hidden),
            f"{p}embeddings.token_type_embeddings.weight": (int(c["type_vocab_size"]), hidden),
        }
        shapes.update(_norm(f"{p}embeddings.LayerNorm", hidden))
        for index in range(self.layers):
            layer = f"{p}encoder.layer.{index}."
            for projection in ("query", "key", "value"):
                shapes.update(_dense(f"{layer}attention.self.{projection}", hidden, hidden))
            shapes.update(_dense(f"{layer}attention.output.dense", hidden, hidden))
            shapes.update(_norm(f"{layer}attention.output.LayerNorm", hidden))
            shapes.update(_dense(f"{layer}intermediate.dense", hidden, inner))
            shapes.update(_dense(f"{layer}output.dense", inner, hidden))
            shapes.update(_norm(f"{layer}output.LayerNorm", hidden))
        if self.family == "bert":
            shapes.update(_dense(f"{p}pooler.dense", hidden, hidden))
            shapes.update(_dense("classifier", hidden, 1))
        else:
            shapes.update(_dense("classifier.dense", hidden, hidden))
            shapes.update(_dense("classifier.out_proj", hidden, 1))
        return shapes


def _labels(config: Mapping[str, Any]) -> int:
    """How many labels transformers gives a config: its ``id2label`` decides, then ``num_labels``, else 2."""
    id2label = config.get("id2label")
    return len(id2label) if isinstance(id2label, Mapping) else int(config.get("num_labels", 2))


def _dense(name: str, fan_in: int, fan_out: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (fan_out, fan_in), f"{name}.bias": (fan_out,)}


def _norm(name: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (width,), f"{name}.bias": (width,)}


def fast_bert_classifier(model: nn.Module) -> FastBertClassifier | None:
    """The lean twin of a transformers ``model``, or None when its class or configuration is one this module does
    not handle (a subclass may change forward: not ours to replace)."""
    if type(model).__name__ not in _SUPPORTED or type(model).__module__.split(".")[0] != "transformers":
        return None  # autorerank's own module among them
    config = getattr(model, "config", None)
    if config is None:
        return None
    shape = BertShape.from_config({**config.to_dict(), "architectures": [type(model).__name__]})
    if shape is None:
        return None
    intermediate: Any = model.get_submodule(f"{shape.prefix}encoder.layer.0.intermediate")
    # transformers' own activation module; fused into the GEMM where oneDNN computes the same function
    known = ACTIVATIONS.get(shape.hidden_act) if isinstance(shape.hidden_act, str) else None
    activation = Activation(intermediate.intermediate_act_fn, known.onednn if known else None)
    return FastBertClassifier(shape, dict(model.state_dict()), activation)


def read_bert_classifier(
    config: Mapping[str, Any], read_weights: Callable[[], Mapping[str, torch.Tensor] | None]
) -> FastBertClassifier | None:
    """The module built straight from a checkpoint's config.json and weights, or None where transformers must
    load it: a class or activation this module does not compute, or weights that do not fit the config (then
    transformers' loader reports what is wrong). ``read_weights`` runs only once the config is known to fit."""
    shape = BertShape.from_config(config)
    if shape is None or shape.hidden_act not in ACTIVATIONS:
        return None  # others (gelu_new, ...) come from a transformers model's own activation module
    activation = ACTIVATIONS[str(shape.hidden_act)]
    weights = read_weights()
    if weights is None:
        return None
    misfits = [
        name
        for name, expected in shape.expected_shapes().items()
        if name not in weights or tuple(weights[name].shape) != expected
    ]
    if misfits:
        logger.info("Weights do not fit the lean classifier (%s): loading through transformers.", misfits[0])
        return None
    return FastBertClassifier(shape, weights, activation)


class FastBertClassifier(nn.Module):
    """Embeddings -> fused encoder layers (the last one for the first token only) -> the classification head."""

    def __init__(self, shape: BertShape, weights: Mapping[str, torch.Tensor], activation: Activation) -> None:
        super().__init__()
        p = shape.prefix
        self.family = shape.family
        self.config_dict = shape.config
        self.embeddings = Embeddings(shape, weights)
        self.layers = nn.ModuleList(
            FusedEncoderLayer(shape, weights, f"{p}encoder.layer.{index}.", activation)
            for index in range(shape.layers)
        )
        onednn_linear()  # probe the fused CPU linear now (cached), not on the first batch
        if shape.family == "bert":
            self.pooler = _frozen_linear(weights, f"{p}pooler.dense")  # then tanh, on the first token
            self.classifier = _frozen_linear(weights, "classifier")
        else:
            self.dense = _frozen_linear(weights, "classifier.dense")  # then tanh
            self.classifier = _frozen_linear(weights, "classifier.out_proj")

    @property
    def config(self) -> Any:
        """The model's transformers config (built when first asked: reading it needs transformers)."""
        from transformers import AutoConfig

        return AutoConfig.for_model(**self.config_dict)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> ClassifierOutput:
        hidden = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        batch, length, width = hidden.shape
        rows = padded_rows(hidden.view(batch * length, width))  # (R, H): the tokens, then zero rows
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): keys each row may attend to
        *inner, last = self.layers
        for layer in inner:
            rows = layer(rows, keep)
        first = last(rows, keep, first_token_only=True)[:batch]  # (B, H)
        head = self.pooler if self.family == "bert" else self.dense
        return ClassifierOutput(logits=self.classifier(torch.tanh(head(first))))  # (B, 1)


def _frozen_linear(weights: Mapping[str, torch.Tensor], name: str) -> nn.Linear:
    """An ``nn.Linear`` holding the named weight and bias as they are (no initialisation, no copy)."""
    weight = weights[f"{name}.weight"]
    with torch.device("meta"):
        module = nn.Linear(weight.shape[1], weight.shape[0])
    module.weight = nn.Parameter(weight, requires_grad=False)
    module.bias = nn.Parameter(weights[f"{name}.bias"], requires_grad=False)
    return module


def _frozen_norm(weights: Mapping[str, torch.Tensor], name: str, eps: float) -> nn.LayerNorm:
    weight = weights[f"{name}.weight"]
    with torch.device("meta"):
        module = nn.LayerNorm(weight.shape[0], eps=eps)
    module.weight = nn.Parameter(weight, requires_grad=False)
    module.bias = nn.Parameter(weights[f"{name}.bias"], requires_grad=False)
    return module


class Embeddings(nn.Module):
    """Word + token-type + position embeddings, then a layer norm, summed in transformers' order.

    Positions: BERT counts 0..T-1; RoBERTa-family models count 1 past the pad id along each row's real tokens
    (pads keep the pad id), so right padding leaves every real token's position unchanged.
    """

    def __init__(self, shape: BertShape, weights: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        prefix = f"{shape.prefix}embeddings."
        self.counts_past_pad = shape.family == "roberta"
        self.pad_id = shape.pad_id
        self.words = nn.Embedding.from_pretrained(weights[f"{prefix}word_embeddings.weight"], freeze=True)
        self.positions = nn.Embedding.from_pretrained(
            weights[f"{prefix}position_embeddings.weight"], freeze=True
        )
        self.token_types = nn.Embedding.from_pretrained(
            weights[f"{prefix}token_type_embeddings.weight"], freeze=True
        )
        self.norm = _frozen_norm(weights, f"{prefix}LayerNorm", shape.norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if self.counts_past_pad:
            real = input_ids.ne(self.pad_id).int()  # (B, T)
            positions = (torch.cumsum(real, dim=1) * real).long() + self.pad_id  # (B, T)
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]  # (1, T)
        summed = self.words(input_ids) + self.token_types(token_type_ids) + self.positions(positions)
        return self.norm(summed)  # (B, T, H)


class FusedEncoderLayer(nn.Module):
    """One post-norm transformer layer with a single QKV projection."""

    def __init__(
        self, shape: BertShape, weights: Mapping[str, torch.Tensor], prefix: str, activation: Activation
    ) -> None:
        super().__init__()
        self.heads = shape.heads
        projections = [f"{prefix}attention.self.{name}" for name in ("query", "key", "value")]
        self.qkv_weight = nn.Parameter(
            torch.cat([weights[f"{name}.weight"] for name in projections]), requires_grad=False
        )
        self.qkv_bias = nn.Parameter(
            torch.cat([weights[f"{name}.bias"] for name in projections]), requires_grad=False
        )
        self.attention_out = _frozen_linear(weights, f"{prefix}attention.output.dense")
        self.attention_norm = _frozen_norm(weights, f"{prefix}attention.output.LayerNorm", shape.norm_eps)
        self.up = _frozen_linear(weights, f"{prefix}intermediate.dense")
        self.activation = activation
        self.down = _frozen_linear(weights, f"{prefix}output.dense")
        self.output_norm = _frozen_norm(weights, f"{prefix}output.LayerNorm", shape.norm_eps)

    def forward(self, rows: torch.Tensor, keep: torch.Tensor, first_token_only: bool = False) -> torch.Tensor:
        """(R, H) -> (R, H): ``rows`` holds the batch's B x T tokens first (``keep`` is (B, 1, 1, T)), then rows
        that only pad the GEMMs (:func:`autorerank.models.linear.padded_rows`). With ``first_token_only``:
        (R', H), each sequence's first token first."""
        batch, length, width = keep.shape[0], keep.shape[-1], rows.shape[1]
        heads, head_size, tokens = self.heads, width // self.heads, batch * length
        if first_token_only:
            residual = padded_rows(rows[:tokens].view(batch, length, width)[:, 0])  # (R', H)
            query = linear(residual, self.qkv_weight[:width], self.qkv_bias[:width])[:batch]  # (B, H)
            query = query.view(batch, 1, heads, head_size).transpose(1, 2)  # (B, h, 1, d)
            key_value = linear(rows, self.qkv_weight[width:], self.qkv_bias[width:])[:tokens]  # (B*T, 2H)
            key, value = key_value.view(batch, length, 2, heads, head_size).permute(2, 0, 3, 1, 4)
        else:
            residual = rows
            qkv = linear(rows, self.qkv_weight, self.qkv_bias)[:tokens]  # (B*T, 3H)
            query, key, value = qkv.view(batch, length, 3, heads, head_size).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=keep)  # (B, h, Tq, d)
        context_rows = rows_of(context.transpose(1, 2), residual.shape[0])  # (R', H)
        out, up, down = self.attention_out, self.up, self.down
        attended = self.attention_norm(linear(context_rows, out.weight, out.bias, residual=residual))
        inner = activated_linear(attended, up.weight, up.bias, self.activation)  # (R', I)
        return self.output_norm(linear(inner, down.weight, down.bias, residual=attended))
