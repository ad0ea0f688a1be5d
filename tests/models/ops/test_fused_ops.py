"""The hand-written autograd functions agree with plain autograd (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from model_graphs import random_norm
from torch import nn
from torch.nn import functional as F

from matxfer.models.ops import block_norm, fused_ops
from matxfer.models.ops.block_norm import linear_norm_silu, norm_silu
from matxfer.models.ops.fused_ops import linear
from matxfer.models.ops.gated_edges import edge_gated_update, edge_gated_update_reference


def _edges(num_nodes: int, num_edges: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    return src, dst


def _norm(kind: str, width: int) -> nn.Module:
    return random_norm(kind, width, momentum=None).double()


def _inputs(width: int = 4, num_nodes: int = 6, num_edges: int = 23) -> list[torch.Tensor]:
    torch.manual_seed(0)
    shapes = [(num_edges, width), (num_nodes, width), (num_nodes, width), (num_nodes, width)]
    tensors = [torch.randn(*shape, dtype=torch.float64) for shape in shapes]
    tensors.append(torch.randn(width, width, dtype=torch.float64) / 2)
    return [t.requires_grad_() for t in tensors]


@pytest.mark.parametrize("kind", ["layer", "batch", "batch-eval", "none"])
@pytest.mark.parametrize("residual", [True, False])
def test_blockwise_edge_update_matches_plain_autograd(
    monkeypatch: pytest.MonkeyPatch, kind: str, residual: bool
) -> None:
    monkeypatch.setattr(block_norm, "BLOCK_ELEMENTS", 5 * 4)  # blocks of 5 edges
    src, dst = _edges(6, 23, seed=1)
    inputs = _inputs()
    norm, plain_norm = _norm(kind, 4), _norm(kind, 4)
    plain_norm.load_state_dict(norm.state_dict())

    got = edge_gated_update(*inputs, src, dst, norm, residual)
    want = edge_gated_update_reference(*inputs, src, dst, plain_norm, residual)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    for name, buffer in plain_norm.named_buffers():  # running statistics advance alike
        torch.testing.assert_close(dict(norm.named_buffers())[name], buffer)

    weights = [torch.randn_like(t) for t in got]
    params, plain_params = list(norm.parameters()), list(plain_norm.parameters())
    grads = torch.autograd.grad(
        sum((t * w).sum() for t, w in zip(got, weights, strict=True)), inputs + params
    )
    expected = torch.autograd.grad(
        sum((t * w).sum() for t, w in zip(want, weights, strict=True)), inputs + plain_params
    )
    for a, b in zip(grads, expected, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["layer", "batch"])
def test_blockwise_edge_update_passes_gradcheck(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setattr(block_norm, "BLOCK_ELEMENTS", 4 * 3)
    src, dst = _edges(5, 11, seed=2)
    inputs = _inputs(width=3, num_nodes=5, num_edges=11)
    norm = _norm(kind, 3)
    if kind == "batch":  # gradcheck re-runs forward: keep the running statistics out of it
        norm.track_running_stats = False
        norm.running_mean = norm.running_var = norm.num_batches_tracked = None

    def function(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return edge_gated_update(*args, src, dst, norm)

    assert torch.autograd.gradcheck(function, tuple(inputs))


def test_nodes_without_incoming_edges_get_zero_aggregate() -> None:
    src, dst = torch.tensor([0, 1]), torch.tensor([1, 1])
    y, s, d, v, w = (t.detach().float() for t in _inputs(width=3, num_nodes=4, num_edges=2))
    h, y_new = edge_gated_update(y, s, d, v, w, src, dst, nn.LayerNorm(3))
    assert h.shape == (4, 3) and y_new.shape == (2, 3)
    assert torch.all(h[[0, 2, 3]] == 0)
    assert torch.all(h[1] != 0)


@pytest.fixture(params=["blas", "onednn"])
def matmul_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both dense-matmul backends (oneDNN is opt-in with MATXFER_ONEDNN=1)."""
    monkeypatch.setenv("MATXFER_ONEDNN", "1" if request.param == "onednn" else "0")
    fused_ops.onednn_available.cache_clear()
    if request.param == "onednn" and not fused_ops.onednn_available():
        pytest.skip("oneDNN's fused linear is not available in this torch build")
    yield request.param
    monkeypatch.undo()
    fused_ops.onednn_available.cache_clear()


@pytest.mark.usefixtures("matmul_backend")
def test_float32_blockwise_matches_reference() -> None:
    src, dst = _edges(30, 400, seed=3)
    y, s, d, v, w = (t.detach().float() for t in _inputs(width=32, num_nodes=30, num_edges=400))
    norm = nn.LayerNorm(32)
    got = edge_gated_update(y, s, d, v, w, src, dst, norm)
    want = edge_gated_update_reference(y, s, d, v, w, src, dst, norm)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("matmul_backend")
@pytest.mark.parametrize("with_add", [True, False])
def test_linear_matches_functional_linear(with_add: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(7, 5, requires_grad=True)
    weight = torch.randn(3, 5, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    add = torch.randn(7, 3, requires_grad=True) if with_add else None
    out = linear(x, weight, bias, add)
    expected = F.linear(x, weight, bias) + (add if with_add else 0)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    inputs = [x, weight, bias, *([add] if with_add else [])]
    grads = torch.autograd.grad(out.square().sum(), inputs)
    expected_grads = torch.autograd.grad(expected.square().sum(), inputs)
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["layer", "batch", "none"])
@pytest.mark.parametrize("with_residual", [True, False])
def test_norm_silu_matches_plain_autograd(kind: str, with_residual: bool) -> None:
    norm, plain_norm = _norm(kind, 4), _norm(kind, 4)
    plain_norm.load_state_dict(norm.state_dict())
    m = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    residual = torch.randn(9, 4, dtype=torch.float64, requires_grad=True) if with_residual else None

    out = norm_silu(m, norm, residual)
    expected = F.silu(plain_norm(m)) + (residual if with_residual else 0)
    torch.testing.assert_close(out, expected)
    for name, buffer in plain_norm.named_buffers():
        torch.testing.assert_close(dict(norm.named_buffers())[name], buffer)

    inputs = [m, *([residual] if with_residual else []), *norm.parameters()]
    plain_inputs = [m, *([residual] if with_residual else []), *plain_norm.parameters()]
    grads = torch.autograd.grad(out.square().sum(), inputs)
    expected_grads = torch.autograd.grad(expected.square().sum(), plain_inputs)
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_norm_silu_eval_batch_norm_uses_running_statistics() -> None:
    norm = nn.BatchNorm1d(3)
    norm.running_mean.fill_(2.0)
    norm.eval()
    m = torch.full((4, 3), 2.0, requires_grad=True)
    torch.testing.assert_close(norm_silu(m, norm), torch.zeros(4, 3))
    assert int(norm.num_batches_tracked) == 0


@pytest.mark.parametrize("kind", ["layer", "batch", "batch-eval", "none"])
def test_blockwise_mlp_layer_matches_plain_autograd(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setattr(block_norm, "BLOCK_ELEMENTS", 4 * 3)  # blocks of 3 rows
    torch.manual_seed(0)
    x = torch.randn(10, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    norm, plain_norm = _norm(kind, 4), _norm(kind, 4)
    plain_norm.load_state_dict(norm.state_dict())

    out = linear_norm_silu(x, weight, bias, norm)
    expected = F.silu(plain_norm(F.linear(x, weight, bias)))
    torch.testing.assert_close(out, expected)
    for name, buffer in plain_norm.named_buffers():
        torch.testing.assert_close(dict(norm.named_buffers())[name], buffer)
    grads = torch.autograd.grad(out.square().sum(), [x, weight, bias, *norm.parameters()])
    expected_grads = torch.autograd.grad(
        expected.square().sum(), [x, weight, bias, *plain_norm.parameters()]
    )
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b)
