"""The fused C kernels compute what the torch code computes, or stand aside cleanly."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from model_graphs import random_norm
from torch import nn

from matxfer.atomic import atomic_path
from matxfer.models.ops import block_norm, kernels
from matxfer.models.ops.gated_edges import edge_gated_update, edge_gated_update_reference


@pytest.fixture
def fresh_kernels(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[pytest.MonkeyPatch]:
    """``kernels.load`` re-decided under the test's environment, in a private cache."""
    monkeypatch.setenv("MATXFER_CACHE", str(tmp_path))
    kernels.load.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    kernels.load.cache_clear()


def _float32_and_float64(
    kind: str, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]
) -> tuple[nn.Module, nn.Module, list[torch.Tensor], list[torch.Tensor]]:
    """A random norm and leaf inputs in float32 (under test), and their float64 copies
    (the ground truth)."""
    norm = random_norm(kind, 32)
    exact_norm = random_norm(kind, 32).double()
    exact_norm.load_state_dict(norm.state_dict())
    inputs = [t.clone().requires_grad_() for t in tensors]
    exact_inputs = [t.double().requires_grad_() for t in tensors]
    return norm, exact_norm, inputs, exact_inputs


def _problem(seed: int, nodes: int = 40, edges: int = 700, width: int = 32):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, nodes, (edges,), generator=gen)
    dst = torch.randint(0, nodes, (edges,), generator=gen)
    shapes = [(edges, width), (nodes, width), (nodes, width), (nodes, width), (width, width)]
    tensors = [torch.randn(*shape, generator=gen) / (4 if shape == (width, width) else 1)
               for shape in shapes]  # fmt: skip
    return tensors, src, dst


@pytest.mark.skipif(kernels.load() is None, reason="no C compiler: the torch code runs")
@pytest.mark.parametrize("kind", ["layer", "batch", "batch-eval", "none"])
@pytest.mark.parametrize("residual", [True, False])
def test_fused_kernels_match_float64_autograd(
    monkeypatch: pytest.MonkeyPatch, kind: str, residual: bool
) -> None:
    monkeypatch.setattr(block_norm, "BLOCK_ELEMENTS", 256 * 32)  # several blocks, one short
    calls = []
    for name in ("gate_forward", "gate_backward"):
        original = getattr(kernels, name)
        monkeypatch.setattr(
            kernels, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a)
        )
    tensors, src, dst = _problem(seed=7)
    norm, exact_norm, inputs, exact_inputs = _float32_and_float64(kind, tensors)

    got = edge_gated_update(*inputs, src, dst, norm, residual)
    want = edge_gated_update_reference(*exact_inputs, src, dst, exact_norm, residual)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)

    weights = [torch.randn(t.shape, generator=torch.Generator().manual_seed(1)) for t in got]
    params = list(norm.parameters())
    grads = torch.autograd.grad(
        sum((t * w).sum() for t, w in zip(got, weights, strict=True)), inputs + params
    )
    exact = torch.autograd.grad(
        sum((t * w.double()).sum() for t, w in zip(want, weights, strict=True)),
        exact_inputs + list(exact_norm.parameters()),
    )
    for a, b in zip(grads, exact, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4)
    assert calls.count("gate_backward") == 3  # the fused path ran, block by block


@pytest.mark.skipif(kernels.load() is None, reason="no C compiler: the torch code runs")
def test_fused_and_torch_paths_agree_and_kernels_can_be_switched_off(
    fresh_kernels: pytest.MonkeyPatch,
) -> None:
    tensors, src, dst = _problem(seed=3)
    norm = nn.LayerNorm(32)
    fused = edge_gated_update(*tensors, src, dst, norm)
    fresh_kernels.setenv("MATXFER_KERNELS", "0")
    kernels.load.cache_clear()
    assert kernels.load() is None
    plain = edge_gated_update(*tensors, src, dst, norm)
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(kernels.load() is None, reason="no C compiler: the torch code runs")
@pytest.mark.parametrize("threads", [1, 3])
def test_fused_node_sums_are_right_for_any_thread_count(threads: int) -> None:
    # Sums over edges into node tables: thread 0 writes the output, the others
    # private tables that are added afterwards.
    tensors, src, dst = _problem(seed=17)
    norm, exact_norm, inputs, exact_inputs = _float32_and_float64("layer", tensors)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = edge_gated_update(*inputs, src, dst, norm)
        grads = torch.autograd.grad(sum(t.square().sum() for t in got), inputs)
    finally:
        torch.set_num_threads(before)
    want = edge_gated_update_reference(*exact_inputs, src, dst, exact_norm)
    exact = torch.autograd.grad(sum(t.square().sum() for t in want), exact_inputs)
    for a, b in zip([*got, *grads], [*want, *exact], strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(kernels.load() is None, reason="no C compiler: the torch code runs")
def test_loading_the_kernels_keeps_subnormal_floats() -> None:
    # A library linked with -ffast-math (gcc < 13) switches the whole process to
    # flush-to-zero when loaded; torch and numpy would then round 1e-40 to 0.
    tiny = torch.tensor([1e-40])
    assert (tiny * 1.0).item() > 0


def test_a_failed_build_warns_once_and_leaves_the_torch_code(
    fresh_kernels: pytest.MonkeyPatch,
) -> None:
    fresh_kernels.delenv("MATXFER_KERNELS", raising=False)
    fresh_kernels.setenv("CC", "false")  # a "compiler" that always fails
    fresh_kernels.setattr(kernels.shutil, "which", lambda name: "/bin/false")
    with pytest.warns(UserWarning, match="could not build the fused CPU kernels"):
        assert kernels.load() is None
    tensors, src, dst = _problem(seed=5, edges=50)
    h, y_new = edge_gated_update(*tensors, src, dst, nn.LayerNorm(32))
    assert torch.isfinite(h).all() and torch.isfinite(y_new).all()


@pytest.mark.skipif(kernels.load() is None, reason="no C compiler: the torch code runs")
@pytest.mark.parametrize("kind", ["layer", "batch-eval", "none"])
def test_fused_kernels_stay_finite_for_saturated_gates(kind: str) -> None:
    # Trained models reach gate pre-activations below -88, where float32 exp(-m)
    # overflows; the kernels once returned NaN there (found on a resumed paper run).
    tensors, src, dst = _problem(seed=13)
    tensors[1] = tensors[1] * 150  # s_i: m now spans about ±500
    assert tensors[1].min() < -200 and tensors[1].max() > 200
    norm, exact_norm, inputs, exact_inputs = _float32_and_float64(kind, tensors)
    got = edge_gated_update(*inputs, src, dst, norm)
    want = edge_gated_update_reference(*exact_inputs, src, dst, exact_norm)
    for a, b in zip(got, want, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)
    grads = torch.autograd.grad(sum(t.sum() for t in got), inputs)
    exact = torch.autograd.grad(sum(t.sum() for t in want), exact_inputs)
    for a, b in zip(grads, exact, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(kernels.load() is None, reason="no C compiler: the torch code runs")
@pytest.mark.parametrize("kind", ["layer", "batch"])
@pytest.mark.parametrize("used", ["h", "y_new"])
def test_fused_backward_when_only_one_output_is_used(kind: str, used: str) -> None:
    # The last ALIGNN layer's edge output feeds nothing: only h carries a gradient.
    tensors, src, dst = _problem(seed=11)
    norm, exact_norm, inputs, exact_inputs = _float32_and_float64(kind, tensors)
    h, y_new = edge_gated_update(*inputs, src, dst, norm)
    exact_h, exact_y_new = edge_gated_update_reference(*exact_inputs, src, dst, exact_norm)
    out, exact_out = (h, exact_h) if used == "h" else (y_new, exact_y_new)
    grads = torch.autograd.grad(out.square().sum(), inputs, allow_unused=True)
    exact = torch.autograd.grad(exact_out.square().sum(), exact_inputs, allow_unused=True)
    for a, b, like in zip(grads, exact, exact_inputs, strict=True):
        a = torch.zeros_like(like) if a is None else a.double()  # unused: zero either way
        torch.testing.assert_close(
            a, torch.zeros_like(like) if b is None else b, rtol=1e-3, atol=1e-4
        )


@pytest.mark.skipif(kernels.load() is None, reason="no C compiler: the torch code runs")
@pytest.mark.parametrize("kind", ["layer", "batch", "batch-eval", "none"])
@pytest.mark.parametrize("layer", ["mlp", "residual"])
def test_fused_norm_silu_layers_match_float64_autograd(
    monkeypatch: pytest.MonkeyPatch, kind: str, layer: str
) -> None:
    monkeypatch.setattr(block_norm, "BLOCK_ELEMENTS", 100 * 32)
    gen = torch.Generator().manual_seed(2)
    x, weight, bias, residual = (
        torch.randn(250, 24, generator=gen), torch.randn(32, 24, generator=gen) / 5,
        torch.randn(32, generator=gen), torch.randn(250, 32, generator=gen),
    )  # fmt: skip
    norm, exact_norm, inputs, exact_inputs = _float32_and_float64(kind, (x, weight, bias, residual))

    def run(tensors: list[torch.Tensor], module: nn.Module) -> torch.Tensor:
        x, weight, bias, residual = tensors
        if layer == "mlp":
            return block_norm.linear_norm_silu(x, weight, bias, module)
        return block_norm.norm_silu(torch.nn.functional.linear(x, weight, bias), module, residual)

    got, want = run(inputs, norm), run(exact_inputs, exact_norm)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    probe = torch.randn(got.shape, generator=gen)
    params = [*inputs, *norm.parameters()]
    exact_params = [*exact_inputs, *exact_norm.parameters()]
    grads = torch.autograd.grad((got * probe).sum(), params, allow_unused=True)
    exact = torch.autograd.grad((want * probe.double()).sum(), exact_params, allow_unused=True)
    for a, b in zip(grads, exact, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4)


ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
"""


def test_cpu_id_tells_arm64_cpu_types_and_machines_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    neoverse_n1 = kernels._cpu_id(ARM_CPUINFO)
    assert b"Features : fp asimd" in neoverse_n1 and b"CPU part : 0xd0c" in neoverse_n1
    assert kernels._cpu_id(ARM_CPUINFO.replace("0xd0c", "0xd40")) != neoverse_n1  # V1
    assert kernels._cpu_id(ARM_CPUINFO.replace(" sha2", "")) != neoverse_n1
    monkeypatch.setattr(kernels.platform, "machine", lambda: "other")
    assert kernels._cpu_id(ARM_CPUINFO) != neoverse_n1
    assert kernels._cpu_id("") == b"other"  # no /proc/cpuinfo: the machine still counts


def test_cache_key_follows_the_compiler(fresh_kernels: pytest.MonkeyPatch) -> None:
    fresh_kernels.setattr(kernels, "_compiler_identity", lambda cc: "cc (Debian 12.2.0) 12.2.0")
    old = kernels._library_path("cc")
    fresh_kernels.setattr(kernels, "_compiler_identity", lambda cc: "cc (Debian 13.1.0) 13.1.0")
    assert kernels._library_path("cc") != old
    assert kernels._library_path("cc").parent == old.parent


def altered(library: Path) -> None:
    """Append a byte to ``library`` as a new file (the loaded one stays mapped intact)."""
    content = library.read_bytes()
    with atomic_path(library) as tmp:
        tmp.write_bytes(content + b"\0")


@pytest.mark.skipif(kernels.load() is None, reason="no C compiler: the torch code runs")
def test_a_library_this_user_did_not_build_is_rebuilt(
    fresh_kernels: pytest.MonkeyPatch,
) -> None:
    fresh_kernels.delenv("MATXFER_KERNELS", raising=False)
    builds: list[object] = []
    real_build = kernels._build
    fresh_kernels.setattr(kernels, "_build", lambda *a: builds.append(a) or real_build(*a))
    assert kernels.load() is not None and len(builds) == 1
    library = kernels._library_path(kernels._compiler())
    record_path = library.with_suffix(".json")
    record = json.loads(record_path.read_text())
    assert record["uid"] == os.getuid()
    assert record["sha256"] == hashlib.sha256(library.read_bytes()).hexdigest()
    kernels.load.cache_clear()
    assert kernels.load() is not None and len(builds) == 1  # trusted: reused
    tampered = [
        # altered since its build (a new file: the loaded one stays mapped in this process)
        lambda: altered(library),
        lambda: record_path.write_text(json.dumps({**record, "uid": os.getuid() + 1})),
        lambda: record_path.unlink(),  # built by an older matxfer, or by someone else
    ]
    for count, tamper in enumerate(tampered, start=2):
        tamper()
        kernels.load.cache_clear()
        assert kernels.load() is not None and len(builds) == count


def test_a_compiler_that_hangs_is_given_up_with_one_warning(
    fresh_kernels: pytest.MonkeyPatch,
) -> None:
    fresh_kernels.delenv("MATXFER_KERNELS", raising=False)
    fresh_kernels.setattr(kernels, "_compiler", lambda: "cc")
    fresh_kernels.setattr(kernels, "_compiler_identity", lambda cc: "cc 1.0")
    timeouts: list[float] = []

    def hang(command: list[str], **options: object) -> None:
        timeouts.append(options["timeout"])
        raise subprocess.TimeoutExpired(command, options["timeout"])

    fresh_kernels.setattr(kernels.subprocess, "run", hang)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert kernels.load() is None
        assert kernels.load() is None  # decided once per process
    assert timeouts == [kernels.COMPILE_TIMEOUT]
    assert len(caught) == 1 and "took over 120 s" in str(caught[0].message)
