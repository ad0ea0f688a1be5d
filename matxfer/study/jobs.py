"""A study spec expanded into a graph of jobs with stable ids.

Every job is one training run: a pre-training (``pretrain``), a scratch
baseline (``scratch``) or a fine-tuning (``finetune``, after its pre-training).
Its id is a hash of everything that determines the run: the resolved training
config, the data options and the content hash of every dataset it reads, and
for a fine-tuning the id of its pre-training, or, for a fine-tuning from an
already pre-trained model (a ``from`` source), that model as named (after
``{target}`` substitution and path resolution) and the sha256 of its
checkpoint. Editing a spec therefore adds jobs without redoing those that
still match, and a changed dataset or checkpoint file makes new jobs rather
than silently reusing old results. A ``from`` source has no PT job: its
fine-tunings wait for nothing and cost only their own training.

:func:`plan_study` also checks the spec against the data (unknown datasets,
sizes larger than the pool, trials or sizes missing from ``trials.json``,
unknown strategies, sources and profiles) before anything trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matxfer.errors import ConfigError, MatxferError
from matxfer.study.datasets import DatasetFacts, dataset_facts
from matxfer.study.origins import Origin, external_model
from matxfer.study.plan import Job, StudyPlan, job_id
from matxfer.study.spec import EXTERNAL_KEYS, FinetuneGrid, PretrainEntry, StudySpec
from matxfer.training.config import TrainConfig, load_config, merge_nested, resolve_config
from matxfer.transfer.freeze import parse_freeze

#: The masked L1 loss of the study's multi-property pre-training.
_MPT_LOSS = "masked_l1"


class _Planner:
    """Expands one spec; remembers dataset facts and the jobs made so far."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        self.facts: dict[str, DatasetFacts] = {}
        self.jobs: dict[str, Job] = {}
        self.models: dict[str, tuple[tuple[str, ...], str | None]] = {}

    # ------------------------------------------------------------ helpers

    def fact(self, name: str, loc: tuple[Any, ...]) -> DatasetFacts:
        if name not in self.facts:
            try:
                self.facts[name] = dataset_facts(name, self.spec.data_dir)
            except MatxferError as error:
                raise self.spec.error(loc, str(error)) from None
        return self.facts[name]

    def config(self, loc: tuple[Any, ...], *overrides: dict[str, Any]) -> TrainConfig:
        merged: dict[str, Any] = {}
        for update in (self.spec.config, *overrides):
            merged = merge_nested(merged, {k: v for k, v in update.items() if v is not None})
        profile = self.spec.profile
        try:
            if profile in ("fast", "paper"):
                return resolve_config(profile, merged, source="study spec")
            if not Path(profile).is_file():
                raise ConfigError(
                    f"profile {profile!r}: choose fast, paper or an existing config YAML"
                )
            return load_config(profile, overrides=merged)
        except ConfigError as error:
            raise self.spec.error(loc, str(error)) from None

    def add(self, job: Job) -> Job:
        self.jobs.setdefault(job.id, job)
        return self.jobs[job.id]

    def _check_size(self, size: int | None, facts: DatasetFacts, loc: tuple[Any, ...]) -> None:
        if size is not None and not 2 <= size <= facts.pool_size:
            raise self.spec.error(
                loc, f"size {size} is outside 2..{facts.pool_size}, the pool of {facts.name!r}"
            )

    # ------------------------------------------------------------ pre-training

    def pretrain_jobs(self, entry: PretrainEntry, index: int, target: str | None) -> list[Job]:
        """The PT jobs of one entry (for ``target`` when it is leave-one-out)."""
        loc = ("pretrain", index)
        if (entry.data is None) == (entry.mpt is None):
            raise self.spec.error(
                loc,
                "give exactly one of 'data' (one property), 'mpt' (several) or 'from' "
                "(an already pre-trained model)",
            )
        if entry.leave_one_out and entry.mpt is None:
            raise self.spec.error((*loc, "leave_one_out"), "applies to 'mpt' sources only")
        datasets = [entry.data] if entry.data is not None else list(entry.mpt or [])
        if entry.mpt is not None and len(set(datasets)) != len(datasets):
            raise self.spec.error((*loc, "mpt"), f"datasets listed twice: {datasets}")
        facts = [self.fact(name, (*loc, "data" if entry.data else "mpt")) for name in datasets]
        label, excluded = entry.label, []
        if entry.leave_one_out and target in datasets:
            excluded = [target]
            label = f"{entry.label}-no-{target}"
        used = [f for f in facts if f.name not in excluded]
        if not used:
            raise self.spec.error((*loc, "mpt"), f"nothing left after leaving out {target!r}")
        targets = self._targets()
        jobs = []
        for size in entry.sizes:
            # MPT draws up to `size` per property: a smaller pool (pz: 847) gives all it has.
            for fact in used if entry.mpt is None else []:
                self._check_size(size, fact, (*loc, "sizes"))
            for seed in entry.seeds:
                extra: dict[str, Any] = {"seed": seed, "sampling": entry.sampling}
                if entry.mpt is not None:
                    extra["loss"] = _MPT_LOSS
                config = self.config(loc, extra, {"epochs": entry.epochs}, entry.config)
                settings = {
                    "data": entry.data,
                    "mpt": [f.name for f in used] if entry.mpt is not None else None,
                    "size": size,
                    "data_dir": self.spec.data_dir,
                    "exclude_test_structures": entry.exclude_test_structures,
                    # Single-property exclusion removes the FT targets' test crystals.
                    "exclude_test_of": targets if entry.exclude_test_structures else [],
                    "config": config.model_dump(mode="json"),
                }
                if entry.exclude_test_structures and any(
                    self.fact(t, ("finetune",)).test_size == 0 for t in targets
                ):  # the crystals the FT jobs hold out (ft_settings) are the ones to exclude
                    settings["held_out"] = {
                        "test_fraction": self.spec.test_fraction,
                        "test_seed": self.spec.test_seed,
                    }
                hashes = [f.sha256 for f in used]
                if entry.exclude_test_structures and entry.data is not None:
                    hashes += [self.fact(t, ("finetune",)).sha256 for t in targets]
                structures = sum(min(size or f.pool_size, f.pool_size) for f in used)
                atoms = sum(f.mean_atoms * min(size or f.pool_size, f.pool_size) for f in used)
                job = Job(
                    id=job_id("pretrain", settings, hashes),
                    kind="pretrain",
                    target=label,
                    source=label,
                    settings=settings,
                    size=size,
                    pt_size=size,
                    seed=seed,
                    lr=config.lr,
                    sampling=entry.sampling,
                    profile=Path(self.spec.profile).name,
                    epochs=config.epochs,
                    structures=int(structures * (1 - config.val_fraction)),
                    mean_atoms=atoms / max(structures, 1),
                    test_structures=sum(
                        f.test_size or int(f.pool_size * config.test_fraction) for f in used
                    ),
                    records_read=sum(f.pool_size + f.test_size for f in used),
                )
                jobs.append(self.add(job))
        return jobs

    def check_external(self, entry: PretrainEntry, index: int) -> None:
        """Refuse pre-training keys beside ``from`` (nothing is pre-trained for it)."""
        for key in sorted(entry.model_fields_set - set(EXTERNAL_KEYS)):
            raise self.spec.error(
                ("pretrain", index, key),
                f"does not apply to a 'from' source ({entry.from_!r} is already pre-trained); "
                f"an entry with 'from' takes only {', '.join(k.rstrip('_') for k in EXTERNAL_KEYS)}"
                ": drop it, or pre-train with 'data' or 'mpt' instead of 'from'",
            )

    def external_origin(self, entry: PretrainEntry, index: int, target: str) -> Origin:
        """The model a ``from`` source names for FT target ``target``, checked to exist."""
        pretrained = entry.pretrained_for(target)
        if pretrained not in self.models:
            try:
                self.models[pretrained] = external_model(pretrained)
            except MatxferError as error:
                raise self.spec.error(("pretrain", index, "from"), str(error)) from None
        outputs, sha256 = self.models[pretrained]
        settings = {"pretrained": pretrained, "pretrained_sha256": sha256}
        return Origin(entry.label_for(target), settings, outputs=outputs)

    def origins(self, entry: PretrainEntry, index: int, target: str) -> list[Origin]:
        """Where the fine-tunings of ``target`` from one source start."""
        if entry.external:
            return [self.external_origin(entry, index, target)]
        outputs = tuple(entry.mpt or ())  # a single property: one output
        return [
            Origin(pt.source, {"pt_job": pt.id}, pt.id, pt.size, pt.records_read, outputs)
            for pt in self.pretrain_jobs(entry, index, target)
        ]

    def _check_heads(self, grid: FinetuneGrid, index: int, origin: Origin) -> None:
        if len(origin.outputs) > 1 and "reuse" in grid.heads:
            raise self.spec.error(
                ("finetune", index, "heads"),
                f"source {origin.source!r} is a multi-property model: its head cannot be "
                f"reused for one target (it predicts {', '.join(origin.outputs)}); "
                "use heads: [new] or [deeper] (a separate finetune grid)",
            )

    def _targets(self) -> list[str]:
        return sorted({t for grid in self.spec.finetune for t in grid.targets})

    # ------------------------------------------------------------ scratch and fine-tuning

    def subsets(self, grid: FinetuneGrid, index: int, target: str) -> list[tuple[int, int | None]]:
        """(size, trial) pairs of one target, checked against its data."""
        loc = ("finetune", index)
        facts = self.fact(target, (*loc, "targets"))
        pairs: list[tuple[int, int | None]] = []
        for size in grid.sizes:
            if self.spec.trials is None:
                self._check_size(size, facts, (*loc, "sizes"))
                pairs.append((size, None))
                continue
            if not facts.trials:
                raise self.spec.error(
                    (*loc, "targets"),
                    f"{target!r} has no trials.json; drop 'trials' to draw seeded samples",
                )
            for trial in self.spec.trials:
                if trial not in facts.trials:
                    raise self.spec.error(
                        ("trials",), f"trial {trial} not in {target!r}: {sorted(facts.trials)}"
                    )
                if size not in facts.trials[trial]:
                    raise self.spec.error(
                        (*loc, "sizes"),
                        f"size {size} is not a subset of trial {trial} of {target!r}; "
                        f"allowed: {list(facts.trials[trial])}",
                    )
                pairs.append((size, trial))
        return pairs

    def ft_settings(
        self,
        grid: FinetuneGrid,
        index: int,
        target: str,
        size: int,
        trial: int | None,
        seed: int,
        lr: float | None,
    ) -> tuple[dict[str, Any], TrainConfig]:
        extra = {"seed": seed, "lr": lr, "epochs": grid.epochs, "sampling": self.spec.sampling}
        if self.facts[target].test_size == 0:  # no fixed test set: one held-out share for all
            extra |= {"test_fraction": self.spec.test_fraction, "test_seed": self.spec.test_seed}
        config = self.config(("finetune", index), extra, grid.config)
        settings = {
            "data": target,
            "data_dir": self.spec.data_dir,
            "trial": trial,
            "size": size,
            "config": config.model_dump(mode="json"),
        }
        return settings, config

    def grid_jobs(self, grid: FinetuneGrid, index: int) -> None:
        loc = ("finetune", index)
        for position, strategy in enumerate(grid.strategies):
            try:
                parse_freeze(strategy)
            except ConfigError as error:
                raise self.spec.error((*loc, "strategies", position), str(error)) from None
        labels = [e.label for e in self.spec.pretrain]
        sources = grid.sources if grid.sources is not None else labels
        for position, source in enumerate(sources):
            if source not in labels:
                raise self.spec.error(
                    (*loc, "sources", position),
                    f"unknown source {source!r}; the pretrain labels are {labels}",
                )
        entries = {e.label: (i, e) for i, e in enumerate(self.spec.pretrain)}
        for target in grid.targets:
            facts = self.fact(target, (*loc, "targets"))
            origins = {s: self.origins(entries[s][1], entries[s][0], target) for s in sources}
            for found in origins.values():
                for origin in found:
                    self._check_heads(grid, index, origin)
            for size, trial in self.subsets(grid, index, target):
                for seed in self.spec.seeds:
                    for lr in grid.lrs:
                        settings, config = self.ft_settings(
                            grid, index, target, size, trial, seed, lr
                        )
                        common = {
                            "target": target,
                            "size": size,
                            "trial": trial,
                            "seed": seed,
                            "lr": config.lr,
                            "sampling": self.spec.sampling,
                            "profile": Path(self.spec.profile).name,
                            "epochs": config.epochs,
                            "structures": int(size * (1 - config.val_fraction)),
                            "mean_atoms": facts.mean_atoms,
                            "records_read": facts.pool_size + facts.test_size,
                            "test_structures": facts.test_size
                            or int(facts.pool_size * config.test_fraction),
                        }
                        if self.spec.scratch:
                            self.add(
                                Job(
                                    id=job_id("scratch", settings, [facts.sha256]),
                                    kind="scratch",
                                    source="scratch",
                                    settings=settings,
                                    **common,
                                )
                            )
                        for source in sources:
                            for origin in origins[source]:
                                self._finetunes(grid, settings, facts, origin, common)

    def _finetunes(
        self,
        grid: FinetuneGrid,
        settings: dict[str, Any],
        facts: DatasetFacts,
        origin: Origin,
        common: dict[str, Any],
    ) -> None:
        for strategy in grid.strategies:
            for head in grid.heads:
                ft = {**settings, "strategy": strategy, "head": head, **origin.settings}
                # The leakage audit reads the PT data again and matches structures.
                read = common["records_read"] + 2 * origin.records_read
                self.add(
                    Job(
                        id=job_id("finetune", ft, [facts.sha256]),
                        kind="finetune",
                        source=origin.source,
                        settings=ft,
                        depends_on=origin.depends_on,
                        pt_size=origin.pt_size,
                        strategy=strategy,
                        head=head,
                        **{**common, "records_read": read},
                    )
                )


def plan_study(spec: StudySpec) -> StudyPlan:
    """Expand and check a spec.

    Raises:
        ConfigError: A key names something the data or matxfer does not have
            (file, line, key and the allowed values in the message).
    """
    planner = _Planner(spec)
    for index, entry in enumerate(spec.pretrain):
        if entry.external:
            planner.check_external(entry, index)
    for index, grid in enumerate(spec.finetune):
        planner.grid_jobs(grid, index)
    for index, entry in enumerate(spec.pretrain):  # sources no grid uses are still trained
        if not entry.leave_one_out and not entry.external:
            planner.pretrain_jobs(entry, index, None)
    jobs = list(planner.jobs.values())
    order = {"pretrain": 0, "scratch": 1, "finetune": 2}
    jobs.sort(key=lambda j: order[j.kind])  # stable: spec order within a kind
    return StudyPlan(spec, jobs, planner.facts)
