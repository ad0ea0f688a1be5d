"""Find the same crystal across datasets, and merge datasets into multi-property records.

Property datasets drawn from one database (here: Materials Project subsets)
share many crystals under unrelated ids. Multi-property pre-training (MPT,
Devi, Butler & Sai Gautam, arXiv 2406.13142) should see each crystal once,
carrying every label it has; a leakage audit needs the same matching
(:mod:`matxfer.transfer.leakage`). Both use :func:`find_matches`.

Matching is pymatgen's :class:`~pymatgen.analysis.structure_matcher.StructureMatcher`
(primitive cell, Niggli reduction, volume scaling), run only on candidate pairs
that pass a cheap prefilter: equal reduced formula (structures are bucketed by
it, so comparisons stay within a bucket) and volume per atom within
``volume_tol``. Both are invariant to supercells and translations, so matching
stays near-linear in the number of structures. Primitive cells are computed
once per structure (:class:`StructureIndex`), only for structures that have a
candidate, and pairs whose primitive cells differ in size are not compared.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from pymatgen.analysis.structure_matcher import ElementComparator, StructureMatcher
from pymatgen.core import Structure

from matxfer.data.records import Record
from matxfer.errors import ConfigError


@dataclass(frozen=True)
class MatchSettings:
    """How close two structures must be to count as the same crystal.

    Args:
        ltol: Fractional length tolerance of StructureMatcher (default: 0.2).
        stol: Site tolerance, in units of (V / n_sites)^(1/3) (default: 0.3).
        angle_tol: Angle tolerance in degrees (default: 5).
        volume_tol: Largest relative difference of volume per atom,
            ``|v1 - v2| / max(v1, v2)``, for a pair to be compared at all
            (default: 0.1). StructureMatcher itself rescales volumes, so this
            also decides how different two relaxations of one crystal may be.
    """

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0
    volume_tol: float = 0.1

    def matcher(self) -> StructureMatcher:
        """A StructureMatcher for already primitive, Niggli-reduced structures."""
        return StructureMatcher(
            ltol=self.ltol,
            stol=self.stol,
            angle_tol=self.angle_tol,
            primitive_cell=False,
            scale=True,
            attempt_supercell=False,
            comparator=ElementComparator(),
        )


def _reduced(structure: Structure) -> Structure:
    """Primitive, Niggli-reduced cell: what StructureMatcher compares."""
    return structure.get_primitive_structure().get_reduced_structure()


class StructureIndex:
    """Structures prepared for repeated matching.

    Holds the prefilter keys (reduced formula, volume per atom) of every
    structure and computes each primitive, Niggli-reduced cell at most once,
    when a comparison first needs it. Pass the same index to several
    :func:`find_matches` calls to reuse that work.

    Args:
        structures: The structures, indexed by position.
    """

    def __init__(self, structures: Iterable[Structure] = ()) -> None:
        self.structures: list[Structure] = []
        self.formulas: list[str] = []
        self.volumes: list[float] = []
        self._reduced: dict[int, Structure] = {}
        self.extend(structures)

    def __len__(self) -> int:
        return len(self.structures)

    def extend(self, structures: Iterable[Structure] | StructureIndex) -> None:
        """Append structures (or another index, keeping its reduced cells)."""
        if isinstance(structures, StructureIndex):
            offset = len(self)
            self.structures += structures.structures
            self.formulas += structures.formulas
            self.volumes += structures.volumes
            self._reduced.update({offset + i: s for i, s in structures._reduced.items()})
            return
        for structure in structures:
            self.structures.append(structure)
            self.formulas.append(structure.composition.reduced_formula)
            self.volumes.append(structure.volume / len(structure))

    def reduced(self, i: int) -> Structure:
        """Primitive, Niggli-reduced cell of structure ``i`` (cached)."""
        if i not in self._reduced:
            self._reduced[i] = _reduced(self.structures[i])
        return self._reduced[i]


def _as_index(structures: Sequence[Structure] | StructureIndex) -> StructureIndex:
    return structures if isinstance(structures, StructureIndex) else StructureIndex(structures)


def find_matches(
    left: Sequence[Structure] | StructureIndex,
    right: Sequence[Structure] | StructureIndex,
    settings: MatchSettings | None = None,
) -> list[tuple[int, int]]:
    """All pairs ``(i, j)`` where ``left[i]`` and ``right[j]`` are the same crystal.

    Candidates must share the reduced formula and volume per atom (within
    ``settings.volume_tol``), then the number of sites of the primitive cell,
    before StructureMatcher compares them. The same structure compared with
    itself matches, so ``find_matches(a, a)`` contains every ``(i, i)``.

    Args:
        left: Structures, or a :class:`StructureIndex` of them.
        right: Structures to compare with, or a :class:`StructureIndex`.
        settings: Tolerances (default: :class:`MatchSettings`).

    Returns:
        Matching index pairs, sorted.
    """
    settings = settings or MatchSettings()
    left, right = _as_index(left), _as_index(right)
    buckets: dict[str, list[int]] = defaultdict(list)
    for j, formula in enumerate(right.formulas):
        buckets[formula].append(j)

    matcher = settings.matcher()
    matches = []
    for i, (formula, volume) in enumerate(zip(left.formulas, left.volumes, strict=True)):
        for j in buckets.get(formula, ()):
            other = right.volumes[j]
            if abs(volume - other) > settings.volume_tol * max(volume, other):
                continue
            a, b = left.reduced(i), right.reduced(j)
            # Without supercells or subsets, a match maps sites one to one.
            if len(a) == len(b) and matcher.fit(a, b, skip_structure_reduction=True):
                matches.append((i, j))
    return sorted(matches)


@dataclass
class MergeReport:
    """What :func:`merge_datasets` did.

    Args:
        counts: Input records per dataset.
        overlaps: ``(a, b)`` → number of merged records labelled by both
            datasets ``a`` and ``b`` (dataset order as given).
        merged_total: Number of merged records.
        duplicates_within: Per dataset, records that matched a merged record
            already holding a label from their own dataset (kept as separate
            records: their labels would conflict).
        seconds: Wall time of the merge.
    """

    counts: dict[str, int]
    overlaps: dict[tuple[str, str], int]
    merged_total: int
    duplicates_within: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def input_total(self) -> int:
        """Records before merging."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (pair keys joined with ``"+"``)."""
        return {
            "counts": dict(self.counts),
            "overlaps": {f"{a}+{b}": n for (a, b), n in self.overlaps.items()},
            "merged_total": self.merged_total,
            "input_total": self.input_total,
            "duplicates_within": dict(self.duplicates_within),
            "seconds": round(self.seconds, 3),
        }

    def __str__(self) -> str:
        counts = ", ".join(f"{name} {n}" for name, n in self.counts.items())
        overlaps = ", ".join(f"{a}&{b} {n}" for (a, b), n in self.overlaps.items() if n)
        return (
            f"merged {self.input_total} records ({counts}) into {self.merged_total}; "
            f"shared crystals: {overlaps or 'none'} ({self.seconds:.1f} s)"
        )


def _labels(dataset: str, record: Record) -> dict[str, float]:
    if len(record.targets) == 1:
        return {dataset: record.target}
    return {f"{dataset}.{name}": value for name, value in record.targets.items()}


def merge_datasets(
    datasets: Mapping[str, Sequence[Record]],
    settings: MatchSettings | None = None,
) -> tuple[list[Record], MergeReport]:
    """Merge property datasets so each crystal appears once with all its labels.

    Datasets are taken in the given order. Each record is matched (by
    :func:`find_matches`) against every record merged so far and joins the
    first merged record it matches that has no label from its own dataset yet;
    otherwise it starts a new merged record. A merged record has the structure
    of its first member, and its id joins its members' ids:
    ``"ph:mp-1|dc:mp-7"`` (order of ``datasets``).

    Labels are named after their dataset: a record's single target becomes
    ``targets[dataset]``; a record with several targets keeps them as
    ``targets[f"{dataset}.{name}"]``. A missing label is simply absent.

    Args:
        datasets: Dataset name → its records, e.g. ``{"ph": ..., "dc": ...}``.
        settings: Match tolerances (default: :class:`MatchSettings`).

    Returns:
        The merged records and a :class:`MergeReport`.

    Raises:
        ConfigError: If a dataset name is empty or contains ``|`` or ``:``
            (they separate parts of merged ids).
    """
    bad = [name for name in datasets if not name or "|" in name or ":" in name]
    if bad:
        raise ConfigError(f"dataset names must be non-empty without '|' or ':', got {bad}")
    start = time.perf_counter()
    members: list[dict[str, Record]] = []
    seen = StructureIndex()
    seen_group: list[int] = []
    duplicates: dict[str, int] = {}
    for name, records in datasets.items():
        candidates: dict[int, set[int]] = defaultdict(set)
        incoming = StructureIndex(r.structure for r in records)
        for i, k in find_matches(incoming, seen, settings):
            candidates[i].add(seen_group[k])
        duplicates[name] = 0
        new_members = []
        for i, record in enumerate(records):
            free = sorted(g for g in candidates.get(i, ()) if name not in members[g])
            if free:
                members[free[0]][name] = record
                group = free[0]
            else:
                duplicates[name] += bool(candidates.get(i))
                members.append({name: record})
                group = len(members) - 1
            new_members.append(group)
        seen.extend(incoming)
        seen_group.extend(new_members)

    merged = []
    for index, group in enumerate(members):
        targets: dict[str, float] = {}
        for name, record in group.items():
            targets.update(_labels(name, record))
        merged.append(
            Record(
                id="|".join(f"{name}:{record.id}" for name, record in group.items()),
                structure=next(iter(group.values())).structure,
                targets=targets,
                source="merged",
                index=index,
            )
        )
    overlaps = {
        (a, b): sum(1 for group in members if a in group and b in group)
        for a, b in combinations(datasets, 2)
    }
    report = MergeReport(
        counts={name: len(records) for name, records in datasets.items()},
        overlaps=overlaps,
        merged_total=len(merged),
        duplicates_within=duplicates,
        seconds=time.perf_counter() - start,
    )
    return merged, report
