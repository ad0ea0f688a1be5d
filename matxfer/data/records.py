"""The one in-memory record type of matxfer.

Every reader turns its input into a list of :class:`Record`; everything
downstream (validation, splits, graphs, training) consumes that list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pymatgen.core import Structure


@dataclass
class Record:
    """One crystal with one or more named targets.

    Args:
        id: Identifier, unique within its dataset (e.g. a JARVIS ``jid`` or a
            file name). Always a string.
        structure: The crystal.
        targets: Property name → value. A missing label is absent from the
            dict (multi-property data), never a NaN.
        source: Where the record came from (file path), for error messages.
        index: Position of the record in its source, for error messages.
    """

    id: str
    structure: Structure
    targets: dict[str, float] = field(default_factory=dict)
    source: str = "<memory>"
    index: int = 0

    @property
    def target(self) -> float:
        """The single target of a one-property record."""
        if len(self.targets) != 1:
            raise ValueError(
                f"record {self.id} has {len(self.targets)} targets "
                f"({sorted(self.targets)}); name the one you want"
            )
        return next(iter(self.targets.values()))


#: Target name used when a format carries a single unnamed target.
DEFAULT_TARGET = "target"


def target_names(records: Iterable[Record]) -> list[str]:
    """Sorted union of the target names over ``records``."""
    names: set[str] = set()
    for record in records:
        names.update(record.targets)
    return sorted(names)


def target_values(records: Sequence[Record], name: str) -> list[float]:
    """Values of target ``name`` (NaN where a record lacks it)."""
    return [r.targets.get(name, math.nan) for r in records]
