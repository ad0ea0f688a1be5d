"""Which pre-training source? Rank candidates for a target without fine-tuning them.

- :mod:`~matxfer.transfer.ranking.scores`: LogME, ridge and kNN probes (numpy).
- :mod:`~matxfer.transfer.ranking.sources`: frozen embeddings of the target's
  training structures from each candidate, scored and ranked
  (``matxfer rank-sources``).
"""

from matxfer.transfer.ranking.scores import knn_cv_r2, logme, r2_score, ridge_cv_r2
from matxfer.transfer.ranking.sources import (
    SourceRanking,
    SourceScore,
    embed_graphs,
    embed_records,
    load_candidate,
    rank_sources,
    record_graphs,
    score_features,
    target_records,
)

__all__ = [
    "SourceRanking",
    "SourceScore",
    "embed_graphs",
    "embed_records",
    "knn_cv_r2",
    "load_candidate",
    "logme",
    "r2_score",
    "rank_sources",
    "record_graphs",
    "ridge_cv_r2",
    "score_features",
    "target_records",
]
