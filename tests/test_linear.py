"""The fused linear helpers compute their F.linear expressions, through oneDNN on CPUs and without it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autorerank.compat import onednn_linear
from autorerank.models import linear
from autorerank.models.linear import ACTIVATIONS, activated_linear, gated_linear

DTYPES = [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)]


@pytest.fixture(params=["onednn", "portable"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs through oneDNN (where this torch has it) and through F.linear."""
    if request.param == "onednn" and onednn_linear() is None:
        pytest.skip("this torch build has no oneDNN fused linear")
    if request.param == "portable":
        monkeypatch.setattr(linear, "onednn_linear", lambda: None)
    return str(request.param)


def _tensors(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    x, weight, bias, other = (
        torch.randn(shape, generator=generator) / 4 for shape in ((2, 7, 16), (24, 16), (24,), (2, 7, 24))
    )  # (B, T, K), (N, K), (N,), (B, T, N)
    return tuple(t.to(dtype) for t in (x, weight, bias, other))


def _close(got: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    torch.testing.assert_close(got.float(), expected.float(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype,tolerance", DTYPES)
def test_linear_with_and_without_bias_and_residual(path: str, dtype: torch.dtype, tolerance: float) -> None:
    x, weight, bias, other = _tensors(dtype)
    _close(linear.linear(x, weight, bias), F.linear(x, weight, bias), tolerance)
    _close(linear.linear(x, weight), F.linear(x, weight), tolerance)
    _close(linear.linear(x, weight, bias, residual=other), F.linear(x, weight, bias) + other, tolerance)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype,tolerance", DTYPES)
def test_every_activation_rides_on_the_gemm(
    path: str, name: str, dtype: torch.dtype, tolerance: float
) -> None:
    x, weight, bias, _ = _tensors(dtype)
    activation = ACTIVATIONS[name]
    _close(activated_linear(x, weight, bias, activation), activation.fn(F.linear(x, weight, bias)), tolerance)
    _close(activated_linear(x, weight, None, activation), activation.fn(F.linear(x, weight)), tolerance)


@pytest.mark.parametrize("dtype,tolerance", DTYPES)
def test_the_gating_product(path: str, dtype: torch.dtype, tolerance: float) -> None:
    x, weight, _, gate = _tensors(dtype)
    _close(gated_linear(x, weight, gate), F.linear(x, weight) * gate, tolerance)


def test_activations_compute_what_their_names_say() -> None:
    x = torch.linspace(-4, 4, 33)
    torch.testing.assert_close(ACTIVATIONS["silu"].fn(x), x * torch.sigmoid(x))
    assert torch.equal(ACTIVATIONS["relu"].fn(x), x.clamp(min=0))
    torch.testing.assert_close(ACTIVATIONS["gelu"].fn(x), 0.5 * x * (1 + torch.erf(x / 2**0.5)))
    tanh_gelu = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
    torch.testing.assert_close(ACTIVATIONS["gelu_pytorch_tanh"].fn(x), tanh_gelu)


def test_a_tracer_records_the_portable_op() -> None:
    """OpenVINO's converter traces the module: it must see aten::linear, not torch's internal oneDNN op."""
    x, weight, bias, other = _tensors(torch.float32)
    traced = torch.jit.trace(lambda x: linear.linear(x, weight, bias, residual=other), x)
    graph = str(traced.graph)
    assert "aten::linear" in graph and "mkldnn" not in graph
    torch.testing.assert_close(traced(x), F.linear(x, weight, bias) + other)


def test_padded_rows_append_zero_rows_up_to_a_few_sizes_on_onednn(path: str) -> None:
    sizes = set()
    for count in range(1, 3000):
        rows = torch.full((count, 4), 2.0)
        padded = linear.padded_rows(rows)
        if path == "portable":
            assert padded is rows
            continue
        assert torch.equal(padded[:count], rows) and not padded[count:].any()
        assert count <= padded.shape[0] < max(17, count + max(8, count / 8))
        sizes.add(padded.shape[0])
    if path == "onednn":
        assert len(sizes) < 100  # 2,999 row counts share a few GEMM shapes


def test_padded_rows_leave_a_dtype_onednn_does_not_compute_alone() -> None:
    rows = torch.ones(21, 4, dtype=torch.float64)
    assert linear.padded_rows(rows) is rows
