"""Tiny study datasets for the study tests: the first records of a shipped demo set."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def subset(source: Path, target: Path, pool: int, test: int) -> Path:
    """A study folder with the first records of a shipped one (small: fast jobs)."""
    target.mkdir(parents=True, exist_ok=True)
    for name, count in (("pool.json.gz", pool), ("test.json.gz", test)):
        if (source / name).is_file():
            with gzip.open(source / name, "rt") as handle:
                records = json.load(handle)[:count]
            with gzip.open(target / name, "wt") as handle:
                json.dump(records, handle)
    return target
