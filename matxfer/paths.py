"""Where matxfer keeps its caches (graphs, compiled kernels, calibrations, benchmarks).

A ground-floor module: every layer may import it, it imports nothing of matxfer.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """matxfer's cache root: ``$MATXFER_CACHE``, else ``~/.cache/matxfer``."""
    root = os.environ.get("MATXFER_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "matxfer"


def graph_cache_dir() -> Path:
    """Where built graphs are cached (content-keyed, so safe to share between runs)."""
    return cache_dir() / "graphs"
