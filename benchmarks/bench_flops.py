"""Model FLOPs of one forward pass, counted from unpadded token counts.

The count is the work a reranker *must* do to score a pair, so the same number is charged to every library: padding,
logits at positions nobody reads and other waste show up as a lower fraction of the machine's matmul peak. A
multiply-add is two FLOPs. Counted: every weight matmul in every layer, the attention score and mix products over
the full (non-causal) L x L square, and the scoring head at the one position that is read. Not counted:
embeddings (lookups), norms, softmax and activations (elementwise, a few percent at most).
"""

from __future__ import annotations

from collections.abc import Iterable

from bench_specs import ModelSpec


def layer_flops(spec: ModelSpec, seq_len: int) -> int:
    """FLOPs of one transformer layer over one sequence of `seq_len` tokens."""
    tokens = seq_len
    q_width = spec.heads * spec.head_dim
    kv_width = spec.kv_heads * spec.head_dim
    projections = 2 * tokens * spec.hidden * (q_width + 2 * kv_width) + 2 * tokens * q_width * spec.hidden
    attention = 2 * 2 * tokens * tokens * q_width  # Q @ K^T, then probabilities @ V
    mlp_matrices = 3 if spec.gated_mlp else 2
    mlp = mlp_matrices * 2 * tokens * spec.hidden * spec.intermediate
    return projections + attention + mlp


def head_flops(spec: ModelSpec) -> int:
    """FLOPs of the scoring head at the single position that produces the score."""
    if spec.kind == "llm":
        return 2 * spec.hidden * spec.vocab_size  # one row of the LM head (a library may compute only "Yes")
    return 2 * spec.hidden * spec.hidden + 2 * spec.hidden  # pooler/dense on [CLS], then the one-label output


def forward_flops(spec: ModelSpec, seq_len: int) -> int:
    """FLOPs to score one pair whose unpadded input is `seq_len` tokens."""
    return spec.layers * layer_flops(spec, seq_len) + head_flops(spec)


def total_flops(spec: ModelSpec, seq_lens: Iterable[int]) -> int:
    """FLOPs to score pairs with these unpadded lengths."""
    return sum(forward_flops(spec, length) for length in seq_lens)
