"""Fused C kernels of the edge-gated update, compiled on first use.

The per-edge work of :mod:`matxfer.models.ops.gated_edges` is a dozen elementwise
passes (sigmoid, gathers, LayerNorm, SiLU, residual, and their gradients) over
``[E, 256]`` rows plus sums over edges into node tables; ``csrc/gated_edges.c``
does each direction in one pass per row (each thread summing into its own
node table), and BatchNorm's column sums in one pass each. It is compiled
with the system C compiler (``$CC``, else ``cc``) into the cache
(``$MATXFER_CACHE/kernels``) the first time it is needed, and loaded with
:mod:`ctypes`. The cached library is keyed by the source, flags, compiler
(``cc --version``) and CPU type (``-march=native``), and loaded only when this
user built it and its SHA-256 matches the record written at build time
(``gated_edges-KEY.json``); otherwise it is rebuilt. OpenMP's runtime is the
one torch already loaded (same soname), so the kernels share torch's threads
(a torch built with another OpenMP, such as Intel's, would run a second
thread pool beside them). Linux only: elsewhere, where there is no compiler,
with ``MATXFER_KERNELS=0``, or when the build fails or takes over
:data:`COMPILE_TIMEOUT` seconds, :func:`load` returns ``None`` (with one
warning for a failed build) and the torch code runs.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import platform
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

from matxfer.atomic import write_text_atomic
from matxfer.paths import cache_dir

SOURCE = Path(__file__).parent / "csrc" / "gated_edges.c"
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC"]
#: Linked without -ffast-math: with it, gcc (< 13) and clang link crtfastmath.o, whose
#: constructor would switch the whole process (torch, numpy) to flush denormals to zero.
LINK_FLAGS = ["-shared", "-fopenmp"]
#: Seconds one compiler step may take before the torch code is used instead.
COMPILE_TIMEOUT = 120.0

#: Norm kinds of the C code.
NORM_CODES = {"affine": 0, "layer": 1}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _compiler_identity(compiler: str) -> str:
    """First line of ``compiler --version`` (e.g. ``cc (Debian 12.2.0-14) 12.2.0``): a
    compiler upgrade gets a fresh build instead of a library built by the old one."""
    done = subprocess.run(
        [compiler, "--version"], check=True, capture_output=True, text=True, timeout=30
    )
    return next(iter(done.stdout.splitlines()), "")


#: ``/proc/cpuinfo`` fields that tell what ``-march=native`` targets: x86 ``flags`` and
#: ``model name``; arm64 ``Features``, ``CPU implementer``, ``CPU part``, ``CPU variant``.
_CPU_FIELDS = ("flags", "model name", "Features", "CPU implementer", "CPU part", "CPU variant")


def _cpu_id(cpuinfo: str | None = None) -> bytes:
    """What identifies this CPU type to ``-march=native``: the machine plus its cpuinfo fields.

    Args:
        cpuinfo: ``/proc/cpuinfo``'s text (default: read it; empty where unreadable).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    lines = {
        " ".join(line.split())  # "flags\t\t: a b" and "flags : a b" alike
        for line in cpuinfo.splitlines()
        if line.startswith(_CPU_FIELDS)
    }
    return "\n".join([platform.machine(), *sorted(lines)]).encode()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record_of(library: Path) -> Path:
    """The JSON beside a built library: who built it and its SHA-256."""
    return library.with_suffix(".json")


def _trusted(library: Path) -> bool:
    """Whether ``library`` is one this user built, unchanged since (owner uid and
    SHA-256 as recorded at build time). Loading a library runs its code, so one left
    in a shared cache by another user, or altered, is never loaded."""
    try:
        record = json.loads(_record_of(library).read_text())
        uid = os.getuid()
        return (
            library.stat().st_uid == uid
            and record.get("uid") == uid
            and record.get("sha256") == _sha256(library)
        )
    except (OSError, ValueError, AttributeError):
        return False


def _build(compiler: str, target: Path) -> None:
    """Compile and link into ``target`` (atomically), and record its owner and hash.

    Raises:
        subprocess.CalledProcessError: The compiler failed.
        subprocess.TimeoutExpired: A step took over :data:`COMPILE_TIMEOUT` seconds.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built, obj = Path(tmp) / target.name, Path(tmp) / "gated_edges.o"
        for command in (
            [compiler, *FLAGS, "-c", str(SOURCE), "-o", str(obj)],
            [compiler, *LINK_FLAGS, str(obj), "-o", str(built), "-lm"],
        ):
            subprocess.run(
                command, check=True, capture_output=True, text=True, timeout=COMPILE_TIMEOUT
            )
        record = {"uid": os.getuid(), "sha256": _sha256(built), "compiler": compiler}
        write_text_atomic(_record_of(target), json.dumps(record) + "\n")
        os.replace(built, target)  # atomic; concurrent builds are serialised by a lock


def _library_path(compiler: str) -> Path:
    """The cached library for this source, flags, compiler and CPU type."""
    # -march=native: the build is for this CPU, so its type is part of the key
    # (a cache shared by different machines gets one build per CPU type and compiler).
    flags = " ".join(FLAGS + LINK_FLAGS).encode()
    identity = _compiler_identity(compiler).encode()
    key = hashlib.sha256(SOURCE.read_bytes() + flags + _cpu_id() + identity)
    return cache_dir() / "kernels" / f"gated_edges-{key.hexdigest()[:16]}.so"


def _built_library(compiler: str) -> Path:
    """The trusted library, built (or rebuilt, when not trusted) first."""
    target = _library_path(compiler)
    if _trusted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; others wait, then reuse it
        if not _trusted(target):
            _build(compiler, target)
        if not _trusted(target):
            raise OSError(f"{target} does not match the record of its build")
    return target


@cache
def load() -> ctypes.CDLL | None:
    """The compiled kernels, or ``None`` (disabled, no compiler, or the build failed or
    timed out: one warning, then the torch code runs)."""
    if os.environ.get("MATXFER_KERNELS", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    compiler = _compiler()
    if compiler is None:
        return None
    try:
        library = ctypes.CDLL(str(_built_library(compiler)))
    except subprocess.TimeoutExpired as error:
        warnings.warn(
            f"matxfer: could not build the fused CPU kernels ({error.cmd[0]} took over "
            f"{error.timeout:.0f} s); using the slower torch code",
            stacklevel=2,
        )
        return None
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
