"""Transfer learning: fine-tuning strategies, heads, multi-property pre-training, leakage.

- :mod:`~matxfer.transfer.freeze`: :class:`FreezeSpec` (which layer groups
  train), :func:`apply_freeze`, per-group learning rates.
- :mod:`~matxfer.transfer.heads`: reuse, replace or deepen the output head.
- :func:`masked_l1` for labels with gaps (defined in :mod:`matxfer.training.losses`,
  re-exported here as part of the multi-property API).
- :mod:`~matxfer.transfer.merge`: find the same crystal across datasets and
  merge them into multi-property records.
- :mod:`~matxfer.transfer.leakage`: fine-tuning test crystals present in the
  pre-training data.
"""

from matxfer.training.losses import masked_l1
from matxfer.transfer.freeze import (
    GROUPS,
    PRESETS,
    FreezeSpec,
    FreezeSummary,
    Group,
    apply_freeze,
    freeze_batchnorm_stats,
    param_groups,
    parameter_groups,
    parse_freeze,
    parse_lr_multipliers,
)
from matxfer.transfer.heads import HEAD_MODES, HeadMode, build_head, prepare_head
from matxfer.transfer.leakage import LeakageReport, audit_leakage, exclude_structures
from matxfer.transfer.merge import (
    MatchSettings,
    MergeReport,
    StructureIndex,
    find_matches,
    merge_datasets,
)

__all__ = [
    "GROUPS",
    "HEAD_MODES",
    "PRESETS",
    "FreezeSpec",
    "FreezeSummary",
    "Group",
    "HeadMode",
    "LeakageReport",
    "MatchSettings",
    "MergeReport",
    "StructureIndex",
    "apply_freeze",
    "audit_leakage",
    "build_head",
    "exclude_structures",
    "find_matches",
    "freeze_batchnorm_stats",
    "masked_l1",
    "merge_datasets",
    "param_groups",
    "parameter_groups",
    "parse_freeze",
    "parse_lr_multipliers",
    "prepare_head",
]
