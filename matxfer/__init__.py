"""matxfer: transfer learning for materials property prediction.

Pipeline: :mod:`matxfer.data` (records, readers, validation, splits) →
:mod:`matxfer.graphs` (ALIGNN atom graph + line graph) → :mod:`matxfer.models`
(ALIGNN) → :mod:`matxfer.training` (Lightning) → :mod:`matxfer.transfer`
(pre-train / fine-tune strategies, multi-property pre-training) →
:mod:`matxfer.study`.
"""

__version__ = "0.1.0"
