"""A cheap overview of a list of records: counts, elements, sizes, target ranges."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from matxfer.data.records import Record, target_names
from matxfer.data.validate import ATOMIC_NUMBERS

if TYPE_CHECKING:
    from rich.table import Table


@dataclass(frozen=True)
class TargetStats:
    """Range of one target.

    Args:
        count: Records that have this target.
        min: Smallest value.
        mean: Mean value.
        max: Largest value.
    """

    count: int
    min: float
    mean: float
    max: float


@dataclass(frozen=True)
class DatasetSummary:
    """What a dataset holds.

    Args:
        n_records: Number of records.
        elements: Distinct element symbols, ordered by atomic number.
        atoms_min: Fewest atoms in a structure.
        atoms_mean: Mean atoms per structure.
        atoms_max: Most atoms in a structure.
        targets: Target name -> :class:`TargetStats`.
    """

    n_records: int
    elements: tuple[str, ...]
    atoms_min: int
    atoms_mean: float
    atoms_max: int
    targets: dict[str, TargetStats]


def summarize(records: Sequence[Record]) -> DatasetSummary:
    """Summary of ``records`` (one pass; no neighbour searches).

    Args:
        records: Records to describe.
    """
    sizes = [len(r.structure) for r in records]
    symbols: set[str] = set()
    for record in records:
        symbols.update(str(element) for element in record.structure.composition.elements)
    targets = {}
    for name in target_names(records):
        values = [r.targets[name] for r in records if name in r.targets]
        targets[name] = TargetStats(
            len(values), min(values), math.fsum(values) / len(values), max(values)
        )
    return DatasetSummary(
        n_records=len(records),
        elements=tuple(sorted(symbols, key=lambda s: ATOMIC_NUMBERS.get(s, 999))),
        atoms_min=min(sizes, default=0),
        atoms_mean=sum(sizes) / len(sizes) if sizes else 0.0,
        atoms_max=max(sizes, default=0),
        targets=targets,
    )


def abbreviate(items: Sequence[str], limit: int = 20) -> str:
    """``"a, b, c, ... (+n more)"`` for long lists.

    Args:
        items: Strings to join.
        limit: Most items shown (default: ``20``).
    """
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def summary_table(summary: DatasetSummary, title: str) -> Table:
    """A rich table of ``summary`` for the terminal.

    Args:
        summary: What to show.
        title: Table title (e.g. the source file).
    """
    from rich.table import Table
    from rich.text import Text

    # Text, not str: file names and target names are user text that rich must not
    # parse as markup ("a[/b].json" would raise, "[red]" would vanish).
    table = Table(title=Text(title), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("records", str(summary.n_records))
    table.add_row("elements", f"{len(summary.elements)}: {abbreviate(summary.elements)}")
    table.add_row(
        "atoms per structure",
        f"min {summary.atoms_min}, mean {summary.atoms_mean:.1f}, max {summary.atoms_max}",
    )
    for name, stats in summary.targets.items():
        table.add_row(
            Text(f"target '{name}'"),
            f"min {stats.min:.4g}, mean {stats.mean:.4g}, max {stats.max:.4g} (n={stats.count})",
        )
    return table
