"""``matxfer train ... --ensemble K``: K members on one split, seeds differ.

Deep ensembles (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017) average
networks that differ only in their random initialisation and batch order. Here
the K members share the records of one split (made once, with the run's
``seed``) and train with seeds ``seed``, ``seed + 1``, ... into ``OUT/member-<k>``:
member 0 is the plain run of the same command. ``matxfer finetune ... --ensemble K``
does the same with fine-tuning runs (:func:`train_ensemble`'s ``run_member``); the
seed then also draws a new head's weights. ``OUT/ensemble.json``
(:data:`ENSEMBLE_FILE`) records the split's seed, so the records each member
trained on can be re-derived for calibration (:mod:`~matxfer.uncertainty.calset`):
a member's own ``config.yaml`` holds its model seed, which is not the one its
split was made with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matxfer.errors import ConfigError, MatxferError
from matxfer.training.checkpoint import LAST_CHECKPOINT
from matxfer.training.config import TrainConfig
from matxfer.training.inputs import DataSpec, Splits, prepare_splits
from matxfer.training.outputs import write_json
from matxfer.training.rundir import is_finished, read_metrics

if TYPE_CHECKING:
    from matxfer.training.run import TrainResult

#: The ensemble's manifest: members and the seed of their shared split.
ENSEMBLE_FILE = "ensemble.json"
#: Member directories: ``member-0``, ``member-1``, ...
MEMBER_PREFIX = "member-"
#: Trains one member: ``(splits, run_dir, config, resume) -> TrainResult``, where
#: ``config`` carries the member's seed and ``resume`` says whether its interrupted run
#: continues (it left ``last.ckpt``).
RunMember = Callable[[Splits, Path, TrainConfig, bool], "TrainResult"]


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """``folder/ensemble.json``, or ``None`` when ``folder`` holds no ensemble."""
    path = folder / ENSEMBLE_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MatxferError(f"{path}: unreadable ({error}); train the ensemble again") from None
    if not isinstance(manifest, dict) or "split_seed" not in manifest:
        raise MatxferError(f"{path}: not an ensemble manifest (no split_seed)")
    return manifest


def first_member(out: Path, members: int | None) -> Path:
    """Member 0's run directory of an ensemble of ``members`` in ``out``; ``out`` itself
    when ``members`` is ``None`` (a plain run)."""
    return out if members is None else out / f"{MEMBER_PREFIX}0"


def split_config(run_dir: Path, config: TrainConfig) -> TrainConfig:
    """The config a member's split was made with: its own, with the seed of the
    ensemble's shared split when ``run_dir`` is a member of one."""
    manifest = read_manifest(run_dir.parent)
    if manifest is None or run_dir.name not in manifest.get("members", []):
        return config
    return config.model_copy(update={"seed": int(manifest["split_seed"])})


def train_ensemble(
    spec: DataSpec,
    out: Path,
    config: TrainConfig,
    members: int,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    run_member: RunMember | None = None,
) -> list[dict[str, Any]]:
    """Train ``members`` runs on one split of ``spec`` into ``out/member-<k>``.

    With ``resume``, finished members are kept, interrupted ones continue and missing
    ones start.

    Args:
        spec: The data; split once, with ``config.seed``.
        out: The ensemble's directory (``ensemble.json`` and the members).
        config: The members' config; member ``k`` trains with seed ``config.seed + k``.
        members: How many members (at least 2).
        resume: Keep finished members and continue interrupted ones.
        overwrite, progress: As in :func:`~matxfer.training.run.train` (default
            ``run_member`` only; a given one binds its own).
        run_member: Trains one member from the shared splits (e.g. a fine-tuning,
            :func:`~matxfer.transfer.finetune.finetune`); default: a plain
            :func:`~matxfer.training.run.train`.

    Returns:
        Per member: ``{"run_dir", "metrics"}`` (``metrics.json``'s content).

    Raises:
        ConfigError: Fewer than two members, or a resume with another seed.
        MatxferError: What ``run_member`` raises for a member.
    """
    if members < 2:
        raise ConfigError(f"--ensemble needs at least 2 members, got {members}")
    if run_member is None:
        from matxfer.training.run import train  # Lightning: only when training

        def plain(splits: Splits, run_dir: Path, member: TrainConfig, again: bool) -> TrainResult:
            return train(splits, run_dir, config=member, resume=again, overwrite=overwrite,
                         progress=progress)  # fmt: skip

        run_member = plain

    names = [f"{MEMBER_PREFIX}{k}" for k in range(members)]
    saved = read_manifest(out)
    if saved is not None and resume and saved["split_seed"] != config.seed:
        raise ConfigError(
            f"{out}: its members share the split of seed {saved['split_seed']}, not "
            f"{config.seed}; resume with --seed {saved['split_seed']}"
        )
    splits = prepare_splits(spec, config)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [config.seed + k for k in range(members)]
    write_json(out / ENSEMBLE_FILE, {"members": names, "split_seed": config.seed, "seeds": seeds})
    results = []
    for name, seed in zip(names, seeds, strict=True):
        run_dir = out / name
        if resume and is_finished(run_dir):
            results.append({"run_dir": str(run_dir), "metrics": read_metrics(run_dir)})
            continue
        result: TrainResult = run_member(
            splits,
            run_dir,
            config.model_copy(update={"seed": seed}),
            resume and (run_dir / LAST_CHECKPOINT).is_file(),
        )
        results.append({"run_dir": str(result.run_dir), "metrics": result.metrics})
    return results
