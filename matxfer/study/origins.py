"""Where a study's fine-tuning starts: one of its PT jobs, or an already pre-trained model.

A ``from`` entry of a spec (:class:`~matxfer.study.spec.PretrainEntry`) names a run
directory, checkpoint, shipped model or foundation model instead of a PT job; its
outputs and checkpoint hash go into the fine-tuning's job id
(:mod:`~matxfer.study.jobs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Origin:
    """Where a fine-tuning starts: a PT job of the study or an already pre-trained model.

    Attributes:
        source: The source label of its rows (``fe``, ``mpt-no-ph``, ``mpt7``).
        settings: What :func:`~matxfer.study.execute.run_job` needs to find the model:
            ``pt_job`` (a PT job's id) or ``pretrained`` (``from``) and its checkpoint's
            ``pretrained_sha256`` (``None`` for a foundation model).
        depends_on: The PT job's id (``None``: nothing to wait for).
        pt_size: Records per property of the PT job.
        records_read: Records the PT job read (its fine-tunings' leakage audit reads them
            again; unknown, so ``0``, for a ``from`` source).
        outputs: The pre-trained model's outputs (several: its head cannot be reused).
    """

    source: str
    settings: dict[str, Any]
    depends_on: str | None = None
    pt_size: int | None = None
    records_read: int = 0
    outputs: tuple[str, ...] = ()


def external_model(pretrained: str) -> tuple[tuple[str, ...], str | None]:
    """(outputs, checkpoint sha256) of an already pre-trained model (``from``).

    Raises:
        MatxferError: ``pretrained`` is no run directory, checkpoint file, shipped
            model or foundation model, or its checkpoint is unreadable.
    """
    from matxfer.training.checkpoint import read_checkpoint, resolve_checkpoint
    from matxfer.transfer.foundation import foundation_source
    from matxfer.transfer.pretrained import checkpoint_sha256

    foundation = foundation_source(pretrained)
    if foundation is not None:
        return tuple(foundation.target_names), None
    path = resolve_checkpoint(pretrained)
    names = read_checkpoint(path)["matxfer"]["target_names"]
    return tuple(names), checkpoint_sha256(path)
