"""Builders of test inputs shared across test packages."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from pymatgen.core import Structure

#: 1 + 1 layers of width 16: a model that trains in seconds on a CPU.
TINY_MODEL: dict = {
    "alignn_layers": 1,
    "gcn_layers": 1,
    "hidden_features": 16,
    "embedding_features": 16,
    "edge_input_features": 16,
    "triplet_input_features": 8,
}


def jarvis_atoms(structure: Structure) -> dict:
    """The JARVIS/ALIGNN ``atoms`` dict of ``structure`` (fractional coordinates)."""
    return {
        "lattice_mat": structure.lattice.matrix.tolist(),
        "coords": structure.frac_coords.tolist(),
        "elements": [site.specie.symbol for site in structure],
        "cartesian": False,
    }


def alignn_entry(
    structure: Structure, jid: object = 1, target: object = 0.5, **extra: object
) -> dict:
    """An ALIGNN/JARVIS record of ``structure``; ``extra`` fields go before ``atoms``."""
    return {"jid": jid, "target": target, **extra, "atoms": jarvis_atoms(structure)}


#: Holds the lock of argv[1] (purpose argv[2]) until its stdin closes.
_LOCK_HOLDER = """
import sys
from matxfer.locking import DirectoryLock
with DirectoryLock(sys.argv[1], purpose=sys.argv[2]):
    print("locked", flush=True)
    sys.stdin.read()
"""


@contextmanager
def lock_held_elsewhere(directory: Path, purpose: str = "run") -> Iterator[subprocess.Popen]:
    """``directory``'s :class:`~matxfer.locking.DirectoryLock` held by another process
    during the block (which may kill it); yields that process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(directory), purpose],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        if holder.poll() is None:
            holder.communicate("", timeout=60)
        holder.wait(timeout=60)


def recipe_run(run: Path, r2: float, seconds: float) -> None:
    """A finished run of ``benchmarks/transfer_recipes.py`` in ``run``: test R² ``r2``, MAE
    ``1 - r2``, two epochs taking ``seconds`` in all, predictions of four test records
    (not consistent with ``r2``)."""
    run.mkdir(parents=True)
    predictions = "".join(f"t{i},{i},{i * r2}\n" for i in range(4))
    (run / "predictions_test.csv").write_text("id,target,prediction\n" + predictions)
    test = {"target": {"original": {"r2": r2, "mae": 1 - r2, "n": 10}}}
    (run / "metrics.json").write_text(json.dumps({"test": test, "epochs_trained": 2}))
    (run / "best.ckpt").write_bytes(b"")
    (run / "done.json").write_text("{}")
    (run / "logs" / "csv").mkdir(parents=True)
    rows = "".join(f"{epoch},{seconds / 2}\n" for epoch in range(2))
    (run / "logs" / "csv" / "metrics.csv").write_text("epoch,epoch_seconds\n" + rows)


#: The hand-run benchmark scripts.
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (loading it puts benchmarks/ on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def printed_lines(main: Callable[[list[str]], object], argv: list[str]) -> list[str]:
    """What ``main(argv)`` prints, line by line."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        main(argv)
    return buffer.getvalue().splitlines()
