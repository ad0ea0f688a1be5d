"""Build the small demo set shipped inside the package (``matxfer/data/demo``).

Draws from the study's published data in ``../shared/datasets`` (Materials
Project, CC BY 4.0, via Devi, Butler & Sai Gautam, arXiv 2406.13142):

* ``fe/pool.json.gz`` — formation energies of small cells (≤ 12 atoms),
  the pre-training source;
* ``ph/pool.json.gz``, ``ph/test.json.gz``, ``ph/trials.json`` — highest
  phonon peaks: the study's whole phonon pool, its fixed test set and its
  trial subsets, the fine-tuning target.

Both folders use the study layout, so they resolve as the named datasets
``demo-fe`` and ``demo-ph``.

Usage: ``python scripts/make_demo_data.py [--shared ../shared/datasets]``.
Deterministic: the same inputs give byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

import numpy as np

DEMO_DIR = Path(__file__).resolve().parents[1] / "matxfer" / "data" / "demo"
N_PRETRAIN = 2000
MAX_ATOMS = 12


def load(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def dump(records: list[dict], path: Path) -> None:
    text = json.dumps(records, separators=(",", ":")).encode()
    # mtime=0 keeps the gzip bytes reproducible.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    parser.add_argument("--shared", type=Path, default=default)
    args = parser.parse_args()

    fe = [
        r
        for r in load(args.shared / "fe" / "pool.json.gz")
        if len(r["atoms"]["elements"]) <= MAX_ATOMS
    ]
    rng = np.random.default_rng(2024)
    picked = sorted(rng.choice(len(fe), size=N_PRETRAIN, replace=False).tolist())
    for folder in ("fe", "ph"):
        (DEMO_DIR / folder).mkdir(parents=True, exist_ok=True)
    dump([fe[i] for i in picked], DEMO_DIR / "fe" / "pool.json.gz")
    dump(load(args.shared / "ph" / "pool.json.gz"), DEMO_DIR / "ph" / "pool.json.gz")
    dump(load(args.shared / "ph" / "test.json.gz"), DEMO_DIR / "ph" / "test.json.gz")
    shutil.copyfile(args.shared / "ph" / "trials.json", DEMO_DIR / "ph" / "trials.json")
    for f in sorted(DEMO_DIR.glob("*/*")):
        print(f"{f.name}: {f.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
