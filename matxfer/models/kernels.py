"""Fused C kernels of the edge-gated update, compiled on first use.

The per-edge work of :mod:`matxfer.models.gated_edges` is a dozen elementwise
passes (sigmoid, gathers, LayerNorm, SiLU, residual, and their gradients) over
``[E, 256]`` rows plus sums over edges into node tables; ``csrc/gated_edges.c``
does each direction in one pass per row (each thread summing into its own
node table), and BatchNorm's column sums in one pass each. It is compiled
with the system C compiler (``$CC``, else ``cc``) into the cache
(``$MATXFER_CACHE/kernels``) the first time it is needed, and loaded with
:mod:`ctypes`; OpenMP's runtime is the one torch already loaded (same soname),
so the kernels share torch's threads (a torch built with another OpenMP, such
as Intel's, would run a second thread pool beside them). Linux only: elsewhere,
where there is no compiler, or with ``MATXFER_KERNELS=0``, :func:`load`
returns ``None`` and the torch code runs.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).parent / "csrc" / "gated_edges.c"
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC"]
#: Linked without -ffast-math: with it, gcc (< 13) and clang link crtfastmath.o, whose
#: constructor would switch the whole process (torch, numpy) to flush denormals to zero.
LINK_FLAGS = ["-shared", "-fopenmp"]

#: Norm kinds of the C code.
NORM_CODES = {"affine": 0, "layer": 1}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built, obj = Path(tmp) / target.name, Path(tmp) / "gated_edges.o"
        for command in (
            [compiler, *FLAGS, "-c", str(SOURCE), "-o", str(obj)],
            [compiler, *LINK_FLAGS, str(obj), "-o", str(built), "-lm"],
        ):
            subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(built, target)  # atomic: concurrent processes may build too


def _cpu_id() -> bytes:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return b""
    return "\n".join(
        sorted({line for line in lines if line.startswith(("flags", "model name"))})
    ).encode()


@cache
def load() -> ctypes.CDLL | None:
    """The compiled kernels, or ``None`` (disabled, no compiler, or the build failed)."""
    if os.environ.get("MATXFER_KERNELS", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    compiler = _compiler()
    if compiler is None:
        return None
    from matxfer.training.inputs import cache_dir  # lazy: training imports models

    try:
        # -march=native: the build is for this CPU, so its flags are part of the key
        # (a cache shared by different machines gets one build per CPU type).
        flags = " ".join(FLAGS + LINK_FLAGS).encode()
        key = hashlib.sha256(SOURCE.read_bytes() + flags + _cpu_id())
        target = cache_dir() / "kernels" / f"gated_edges-{key.hexdigest()[:16]}.so"
        if not target.is_file():
            _build(compiler, target)
        library = ctypes.CDLL(str(target))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        warnings.warn(
            f"matxfer: could not build the fused CPU kernels ({detail.strip()[:200]}); "
            "using the slower torch code",
            stacklevel=2,
        )
        return None
    for name in ("gate_forward", "gate_backward", "column_moments", "silu_grad_sums"):
        getattr(library, name).restype = None
    return library


@dataclass
class GateInputs:
    """The edge-gate side of a kernel call, for one block of edge rows.

    ``src``/``dst``: the block's edge ends; ``value``: node values v; ``s_term``,
    ``d_term``: node terms added into m (forward; ``None`` when m is complete);
    ``dnum``, ``dden``: dL/d(num), dL/d(den) per node (backward; ``None`` when h is
    unused); ``table``: the node sums (output, accumulated); ``parts``: the further
    threads' tables (:func:`node_parts`).
    """

    src: Tensor | None = None
    dst: Tensor | None = None
    value: Tensor | None = None
    table: Tensor | None = None
    parts: Tensor | None = None
    s_term: Tensor | None = None
    d_term: Tensor | None = None
    dnum: Tensor | None = None
    dden: Tensor | None = None


def _ptr(tensor: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(tensor.data_ptr() if tensor is not None else None)


def usable(*tensors: Tensor) -> bool:
    """Whether the kernels can take these tensors (float32, contiguous, CPU) and are built."""
    return (
        all(
            t.dtype == torch.float32 and t.is_contiguous() and t.device.type == "cpu"
            for t in tensors
        )
        and load() is not None
    )


def node_parts(like: Tensor, nodes: int, columns: int) -> Tensor | None:
    """Zeroed private node tables ``[threads - 1, nodes, columns]`` of the threads after
    the first (``None`` on one thread), for the kernels' sums over rows."""
    threads = torch.get_num_threads()
    return like.new_zeros(threads - 1, nodes, columns) if threads > 1 else None


def add_parts(table: Tensor, parts: Tensor | None) -> Tensor:
    """``table`` plus the threads' private tables (in place)."""
    return table if parts is None else table.add_(parts.sum(0))


def gate_forward(
    m: Tensor,
    norm: str,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    residual: Tensor | None,
    y_new: Tensor | None,
    mean: Tensor | None,
    rstd: Tensor | None,
    gate: GateInputs | None = None,
) -> None:
    """Fill ``y_new`` (residual + SiLU(Norm(m)), skipped when ``None``) and, with
    ``gate``, first add ``s[src] + d[dst]`` to ``m`` in place (unless ``gate.s_term``
    is ``None``) and the gates σ(m)·v[src] | σ(m) into ``gate.table`` ``[N, 2F]``.

    ``norm``: ``"layer"`` (``weight``, ``bias`` its affine parameters; row statistics
    written to ``mean`` and ``rstd``) or ``"affine"`` (``weight``/``bias`` the
    per-column scale and shift).
    """
    rows, width = m.shape
    g = gate or GateInputs()
    nodes = 0 if g.table is None else g.table.size(0)
    load().gate_forward(  # type: ignore[union-attr]
        ctypes.c_int64(rows), ctypes.c_int64(width), ctypes.c_int64(nodes), _ptr(m),
        _ptr(g.s_term), _ptr(g.d_term), _ptr(g.value), _ptr(g.src), _ptr(g.dst),
        _ptr(g.table), _ptr(g.parts), ctypes.c_int(NORM_CODES[norm]), _ptr(weight),
        _ptr(bias), ctypes.c_float(eps), _ptr(residual), _ptr(y_new), _ptr(mean), _ptr(rstd),
        ctypes.c_int(torch.get_num_threads()),
    )  # fmt: skip


def gate_backward(
    m: Tensor,
    grad_out: Tensor | None,
    norm: str,
    weight: Tensor,
    bias: Tensor,
    coef0: Tensor | None,
    coef1: Tensor | None,
    mean: Tensor | None,
    rstd: Tensor | None,
    grad_m: Tensor,
    grad_weight_parts: Tensor | None,
    grad_bias_parts: Tensor | None,
    grad_out_copy: Tensor | None = None,
    gate: GateInputs | None = None,
) -> None:
    """Fill ``grad_m`` (dL/dm); with LayerNorm, add its weight/bias gradients into the
    per-thread ``[threads, F]`` parts. With ``"affine"``, dL/dm = coef0 + coef1·m +
    scale·dL/da (coefficients required). ``grad_out_copy`` (optional) receives a copy
    of ``grad_out``. With ``gate``, dL/dm also gets the gated mean's share from
    ``gate.dnum``/``gate.dden`` (when given), and ``gate.table`` ``[N, 3F]`` receives
    dL/ds | dL/dv | dL/dd summed per node."""
    rows, width = m.shape
    g = gate or GateInputs()
    nodes = 0 if g.table is None else g.table.size(0)
    load().gate_backward(  # type: ignore[union-attr]
        ctypes.c_int64(rows), ctypes.c_int64(width), ctypes.c_int64(nodes), _ptr(m),
        _ptr(grad_out), ctypes.c_int(NORM_CODES[norm]), _ptr(weight), _ptr(bias), _ptr(coef0),
        _ptr(coef1), _ptr(mean), _ptr(rstd), _ptr(g.dnum), _ptr(g.dden), _ptr(g.value),
        _ptr(g.src), _ptr(g.dst), _ptr(grad_m), _ptr(g.table), _ptr(g.parts),
        _ptr(grad_weight_parts), _ptr(grad_bias_parts), _ptr(grad_out_copy),
        ctypes.c_int(torch.get_num_threads()),
    )  # fmt: skip


def column_parts(like: Tensor) -> Tensor:
    """Zeroed per-thread column sums ``[threads, 2, F]`` for the two functions below."""
    return like.new_zeros(torch.get_num_threads(), 2, like.size(1))


def column_moments(m: Tensor, shift: Tensor, parts: Tensor) -> None:
    """Add the column sums of ``m - shift`` and ``(m - shift)²`` into ``parts``."""
    rows, width = m.shape
    load().column_moments(  # type: ignore[union-attr]
        ctypes.c_int64(rows), ctypes.c_int64(width), _ptr(m), _ptr(shift), _ptr(parts),
        ctypes.c_int(torch.get_num_threads()),
    )  # fmt: skip


def silu_grad_sums(
    m: Tensor, grad_out: Tensor, scale: Tensor, shift: Tensor, parts: Tensor
) -> None:
    """With ``a = m·scale + shift`` and ``g = grad_out·SiLU'(a)``, add the column sums
    of ``g`` and ``g·m`` into ``parts``."""
    rows, width = m.shape
    load().silu_grad_sums(  # type: ignore[union-attr]
        ctypes.c_int64(rows), ctypes.c_int64(width), _ptr(m), _ptr(grad_out), _ptr(scale),
        _ptr(shift), _ptr(parts), ctypes.c_int(torch.get_num_threads()),
    )  # fmt: skip
