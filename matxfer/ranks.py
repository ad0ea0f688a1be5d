"""Which process of a multi-process (DDP) training job this is.

Lightning's DDP launcher starts rank 0 as the command the user ran; it re-runs
the same command for ranks 1 to N-1 with ``LOCAL_RANK``, ``NODE_RANK`` and
``WORLD_SIZE`` set (``torchrun`` sets ``RANK`` as well). Every rank runs the
data preparation and the fit; only rank 0 owns the run directory: it takes
its lock, checks and prepares it before the other ranks exist, and writes
every output. The other ranks (*secondary* ranks) therefore skip the lock and
the directory checks, which would otherwise refuse the directory their own
rank 0 holds.
"""

from __future__ import annotations

import os

#: Environment variables naming a process's rank; any of them above 0 means a secondary rank.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK")


def is_secondary_rank() -> bool:
    """Whether this process is a rank other than 0 of a multi-process job.

    ``False`` outside such a job (no ``WORLD_SIZE`` above 1), so a stray
    ``LOCAL_RANK`` in a single-process run changes nothing.
    """
    env = os.environ
    try:
        if int(env.get("WORLD_SIZE", "1")) <= 1:
            return False
        return any(int(env.get(name, "0")) > 0 for name in _RANK_VARIABLES)
    except ValueError:  # not numbers: not set by a launcher
        return False
