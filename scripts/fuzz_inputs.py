"""Fuzz the dataset readers: every mutated file must read, or fail with a MatxferError.

Seeds are small subsets of the real datasets (``../shared/datasets/*/*.json.gz``,
smallest files first), written in each JSON/XYZ format matxfer reads (ALIGNN
json and json.gz, a Matbench table, extended XYZ). Mutations:

* ``flip``: one random byte of the (decompressed) text replaced, half of the
  time by a byte JSON/XYZ gives meaning to (digits, brackets, quotes, letters);
* ``gzflip`` (``zipflip``, ``bz2flip``, ``xzflip``): one byte of the compressed
  seed replaced;
* ``cut``: the text or the compressed file truncated at a random point;
* ``edit``: a field of the parsed JSON deleted, or its value replaced by one of
  another type (null, NaN, a huge number, a string, a nested list ...).

Each mutant runs what ``matxfer data check`` runs (:func:`check_dataset`, then the
CLI's error printer or summary table, with markup-sensitive rich consoles). A
failure is any exception other than a :class:`~matxfer.errors.MatxferError`, or
a MatxferError that only wraps one (the readers' catch-alls: "could not be read
(TypeError ...)"), since each of those is a check nobody wrote. Failures are
printed with their mutation and, with ``--keep DIR``, saved for reproduction.

Usage: ``python scripts/fuzz_inputs.py [--data-dir ../shared/datasets]
[--flips 10000] [--edits 1000] [--cuts 200] [--records 4] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import json
import lzma
import random
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from matxfer import cli
from matxfer.data.registry import check_dataset
from matxfer.data.summary import summary_table
from matxfer.errors import DataError, MatxferError

ROOT = Path(__file__).resolve().parents[1]
#: Bytes that change meaning rather than only break the syntax.
MEANINGFUL = b'0123456789.-+eE[]{},:" \\\nTFNnaulCOHX'
#: Values an ``edit`` puts in place of a field.
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1e308, -1e-300, 10**40, float("nan"), float("inf"), "", "x",
    "Na", "1.0", "[/b]", [], [[]], {}, {"a": 1}, [0, 0, 0], [[0, 0, 0]] * 3, [[1e9] * 3] * 3,
]  # fmt: skip
#: Problem reasons that mean a reader's catch-all caught an exception no check foresaw.
MASKED = ("could not be read (", "could not be checked (")


@dataclass(frozen=True)
class Seed:
    """A small dataset file to mutate: its name (suffix picks the reader) and content."""

    name: str
    text: bytes
    records: Any = None  # the parsed JSON, for ``edit`` mutations


@dataclass
class Tally:
    """What the mutants did."""

    outcomes: Counter = field(default_factory=Counter)
    flips: int = 0
    failures: list[str] = field(default_factory=list)


def alignn_subset(path: Path, n: int, rng: random.Random) -> list[dict]:
    """``n`` random records of a study file."""
    records = json.loads(gzip.decompress(path.read_bytes()))
    return rng.sample(records, min(n, len(records)))


def seeds_of(records: list[dict], stem: str) -> list[Seed]:
    """The records as an ALIGNN json, a Matbench table and an extended XYZ file."""
    from pymatgen.core import Lattice, Structure

    table = {"index": [], "columns": ["material_id", "structure", "e"], "data": []}
    xyz = []
    for record in records:
        atoms = record["atoms"]
        structure = Structure(
            Lattice(atoms["lattice_mat"]),
            atoms["elements"],
            atoms["coords"],
            coords_are_cartesian=atoms.get("cartesian", False),
        )
        table["index"].append(len(table["index"]))
        table["data"].append([f"mp-{record['jid']}", structure.as_dict(), record["target"]])
        lattice = " ".join(f"{x:.6f}" for x in structure.lattice.matrix.flatten())
        xyz.append(f"{len(structure)}")
        xyz.append(
            f'Lattice="{lattice}" Properties=species:S:1:pos:R:3 '
            f'target={record["target"]} id={record["jid"]} pbc="T T T"'
        )
        for site in structure:
            x, y, z = site.coords
            xyz.append(f"{site.specie.symbol} {x:.6f} {y:.6f} {z:.6f}")
    return [
        Seed(f"{stem}.json", json.dumps(records).encode(), records),
        Seed(f"{stem}-table.json", json.dumps(table).encode(), table),
        Seed(f"{stem}.extxyz", ("\n".join(xyz) + "\n").encode()),
    ]


def _zipped(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("data.json", (2024, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


#: Compressions a seed is packed with before some flips and cuts.
PACKERS: dict[str, Callable[[bytes], bytes]] = {
    "gz": lambda data: gzip.compress(data, mtime=0),
    "zip": _zipped,
    "bz2": bz2.compress,
    "xz": lzma.compress,
}


def flip(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One byte replaced (half the time by a meaningful one)."""
    at = rng.randrange(len(data))
    new = rng.choice(MEANINGFUL) if rng.random() < 0.5 else rng.randrange(256)
    return data[:at] + bytes([new]) + data[at + 1 :], f"byte {at} 0x{data[at]:02x}->0x{new:02x}"


def cut(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """The data truncated at a random point."""
    at = rng.randrange(len(data))
    return data[:at], f"truncated to {at} of {len(data)} bytes"


def edit(document: Any, rng: random.Random) -> tuple[bytes, str]:
    """A random field of a copy of ``document`` deleted, duplicated or replaced."""
    document = json.loads(json.dumps(document))
    parent, key, path = None, None, []
    node = document
    while isinstance(node, dict | list) and node and (not path or rng.random() < 0.8):
        parent = node
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path.append(key)
        node = node[key]
    action = rng.choice(["delete", "replace", "replace", "duplicate"])
    if parent is None:
        return json.dumps(rng.choice(ODD_VALUES)).encode(), "whole document replaced"
    if action == "delete":
        del parent[key]
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(key, parent[key])
    else:
        parent[key] = rng.choice(ODD_VALUES)
    where = "/".join(str(p) for p in path)
    return json.dumps(document).encode(), f"{action} {where}"


def check(path: Path) -> tuple[str, str]:
    """(``"read"``, ``""``), (``"refused"``, the error) or (``"failure"``, what went wrong)."""
    quiet = Console(file=io.StringIO(), width=120, markup=False)
    saved = cli.console, cli.err_console
    cli.console, cli.err_console = quiet, quiet  # the CLI's printers, without a terminal
    try:
        return _check(path, quiet)
    except Exception:  # what the fuzzing looks for
        return "failure", traceback.format_exc(limit=-3).strip()
    finally:
        cli.console, cli.err_console = saved


def _check(path: Path, console: Console) -> tuple[str, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets = check_dataset(path)
    except MatxferError as error:
        cause = error.__cause__
        if cause is not None and not isinstance(cause, MatxferError):
            return "failure", f"{error} [wraps {type(cause).__name__}]"
        cli.report_error(error)
        problems = error.problems if isinstance(error, DataError) else []
        masked = [str(p) for p in problems if any(m in p.reason for m in MASKED)]
        return ("failure", masked[0]) if masked else ("refused", str(error))
    for dataset in datasets:
        console.print(summary_table(dataset.summary(), dataset.source))
    return "read", ""


def run(
    mutants: Iterator[tuple[Seed, str, Callable]],
    folder: Path,
    tally: Tally,
    keep: Path | None = None,
) -> None:
    """Write each mutant under its seed's name, check it, and tally the outcome."""
    for seed, kind, mutate in mutants:
        data, description = mutate()
        path = folder / seed.name
        path.write_bytes(data)
        tally.flips += kind.endswith("flip")
        outcome, detail = check(path)
        tally.outcomes[(kind, outcome)] += 1
        if outcome == "failure":
            line = f"{seed.name} {kind} {description}: {detail}"
            tally.failures.append(line)
            print("FAILURE", line, file=sys.stderr)
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{len(tally.failures):04d}-{seed.name}").write_bytes(data)


def mutations(
    seeds: list[Seed], rng: random.Random, flips: int, edits: int, cuts: int
) -> Iterator[tuple[Seed, str, Callable]]:
    """``flips`` byte flips, ``edits`` field edits and ``cuts`` truncations, spread
    round-robin over the seeds; a tenth of flips and cuts hit a compressed seed."""
    plan = ["flip"] * flips + ["edit"] * edits + ["cut"] * cuts
    for n, kind in enumerate(plan):
        seed = seeds[n % len(seeds)]
        if kind == "edit":
            editable = [s for s in seeds if s.records is not None]
            seed = editable[n % len(editable)]
            yield seed, kind, lambda s=seed: edit(s.records, rng)
            continue
        mutate = flip if kind == "flip" else cut
        if seed.name.endswith(".json") and rng.random() < 0.1:
            packing = rng.choice(["gz", "gz", "zip", "bz2", "xz"])
            packed = Seed(f"{seed.name}.{packing}", PACKERS[packing](seed.text))
            yield packed, packing + kind, lambda s=packed, m=mutate: m(s.text, rng)
        else:
            yield seed, kind, lambda s=seed, m=mutate: m(s.text, rng)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--flips", type=int, default=10_000, help="byte flips in all")
    parser.add_argument("--edits", type=int, default=1_000, help="JSON field edits")
    parser.add_argument("--cuts", type=int, default=200, help="truncations")
    parser.add_argument("--records", type=int, default=4, help="records per seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="save failing mutants here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    files = sorted(args.data_dir.glob("*/*.json.gz"), key=lambda p: p.stat().st_size)
    if not files:
        print(f"no datasets under {args.data_dir}", file=sys.stderr)
        return 2
    seeds = [
        seed
        for path in files
        for seed in seeds_of(
            alignn_subset(path, args.records, rng), f"{path.parent.name}-{path.name[:-8]}"
        )
    ]
    tally = Tally()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        run(
            mutations(seeds, rng, args.flips, args.edits, args.cuts),
            Path(folder),
            tally,
            args.keep,
        )
    total = sum(tally.outcomes.values())
    seconds = time.perf_counter() - start
    print(
        f"{total} mutants of {len(seeds)} seeds from {len(files)} files "
        f"({tally.flips} byte flips) in {seconds:.0f} s"
    )
    for (kind, outcome), count in sorted(tally.outcomes.items()):
        print(f"  {kind:7s} {outcome:8s} {count}")
    print(f"{len(tally.failures)} failures")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
