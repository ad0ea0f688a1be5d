"""Constants and types shared by the uncertainty tests and their fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

#: Records of the tiny pool and test set (see ``conftest.dataset``).
POOL, TEST = 60, 12

#: ``make_run(run_dir, spec, seed=0, weights=None, **config) -> run_dir``.
MakeRun = Callable[..., Path]
