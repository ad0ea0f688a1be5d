"""The jobs of a study and their stable ids.

A :class:`Job` is one training run of a study: a pre-training (``pretrain``), a
scratch baseline (``scratch``) or a fine-tuning (``finetune``). Its id
(:func:`job_id`) hashes everything that determines the run, leaving out the
settings that only change how it executes (:data:`EXECUTION_KEYS`), so that
re-planning an edited spec finds the jobs that still match. A
:class:`StudyPlan` holds a spec's jobs in dependency order;
:func:`~matxfer.study.jobs.plan_study` makes it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from matxfer.study.datasets import DatasetFacts
from matxfer.study.spec import StudySpec

JobKind = Literal["pretrain", "scratch", "finetune"]
#: Config keys that change how a run executes, not what it computes: left out of job ids.
EXECUTION_KEYS = (
    "max_minutes",
    "accelerator",
    "num_workers",
    "profile",
    "devices",
    "strategy",
)


@dataclass(frozen=True)
class Job:
    """One training run of a study.

    Attributes:
        id: Stable id (16 hex digits).
        kind: ``pretrain``, ``scratch`` or ``finetune``.
        target: FT dataset (scratch/finetune) or the PT label.
        source: ``scratch``, or the PT label a fine-tuning starts from (PT: its label).
        settings: Everything :func:`~matxfer.study.execute.run_job` needs (JSON-ready).
        depends_on: Id of the pre-training a fine-tuning starts from (``None`` for a
            ``from`` source: its model already exists).
        size: Training + validation records (PT: per property; ``None`` = whole pool).
        pt_size: Records per property of the pre-training (finetune only).
        trial: The study's trial, if any.
        seed: Seed of sampling, split, initialisation and shuffling.
        strategy, head: Fine-tuning strategy and head (finetune only).
        lr: Peak learning rate.
        sampling: How records are drawn.
        profile: Profile name or config file.
        epochs: Maximum epochs.
        structures: Structures trained per epoch (for cost estimates).
        mean_atoms: Mean atoms per structure of the training data.
        test_structures: Structures evaluated at the end.
        records_read: Records a job reads and validates (pools, test sets, and for a
            fine-tuning the pre-training data again for its leakage audit).
    """

    id: str
    kind: JobKind
    target: str
    source: str
    settings: dict[str, Any] = field(hash=False, compare=False)
    depends_on: str | None = None
    size: int | None = None
    pt_size: int | None = None
    trial: int | None = None
    seed: int = 0
    strategy: str | None = None
    head: str | None = None
    lr: float = 1e-3
    sampling: str = "random"
    profile: str = "fast"
    epochs: int = 100
    structures: int = 0
    mean_atoms: float = 10.0
    test_structures: int = 0
    records_read: int = 0

    @property
    def name(self) -> str:
        """A readable name, also the run directory's (``ph-100-t1-s0-from-fe-<id>``)."""
        parts = [Path(self.target).name or self.target]  # a dataset folder: its name
        if self.size is not None:
            parts.append(str(self.size))
        if self.trial is not None:
            parts.append(f"t{self.trial}")
        parts.append(f"s{self.seed}")
        if self.kind == "finetune":
            parts += [f"from-{self.source}", str(self.strategy).replace(":", "_"), str(self.head)]
        return "-".join(parts).replace("/", "_") + f"-{self.id[:8]}"

    def run_dir(self, study_dir: Path) -> Path:
        """Where the job's run directory lives inside a study directory."""
        return study_dir / "runs" / self.kind / self.name

    def describe(self) -> dict[str, Any]:
        """The job's identifying columns (those of the results table)."""
        return {
            "job_id": self.id,
            "kind": self.kind,
            "target": self.target,
            "source": self.source,
            "pt_job_id": self.depends_on,
            "pt_size": self.pt_size,
            "size": self.size,
            "trial": self.trial,
            "seed": self.seed,
            "strategy": self.strategy,
            "head": self.head,
            "lr": self.lr,
            "sampling": self.sampling,
            "profile": self.profile,
        }


@dataclass
class StudyPlan:
    """The jobs of a spec, pre-trainings first.

    Attributes:
        spec: The validated spec.
        jobs: Every job once, each after the job it depends on.
        facts: Dataset name → what planning read of it.
    """

    spec: StudySpec
    jobs: list[Job]
    facts: dict[str, DatasetFacts]

    def by_id(self) -> dict[str, Job]:
        """Job id → job."""
        return {job.id: job for job in self.jobs}

    def counts(self) -> dict[str, int]:
        """Jobs per kind."""
        counts = Counter(job.kind for job in self.jobs)
        return {kind: counts.get(kind, 0) for kind in ("pretrain", "scratch", "finetune")}

    def dependants(self) -> dict[str, list[str]]:
        """Pre-training id → ids of the fine-tunings waiting for it."""
        waiting: dict[str, list[str]] = {}
        for job in self.jobs:
            if job.depends_on is not None:
                waiting.setdefault(job.depends_on, []).append(job.id)
        return waiting


def job_id(kind: str, settings: dict[str, Any], hashes: list[str]) -> str:
    """16 hex digits of the sha256 of a job's kind, settings (config without
    :data:`EXECUTION_KEYS`, data options) and the content hashes of its datasets."""
    config = {k: v for k, v in settings["config"].items() if k not in EXECUTION_KEYS}
    identity = {
        **{k: v for k, v in settings.items() if k not in ("config", "data_dir")},
        "kind": kind,
        "config": config,
        "data_sha256": sorted(hashes),
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
