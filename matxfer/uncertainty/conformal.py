r"""Split-conformal prediction intervals from an ensemble's mean and spread.

An ensemble gives every structure a mean :math:`\bar y_i` and a spread :math:`s_i`
(:mod:`matxfer.study.ensemble`). The spread ranks errors but is not an interval:
members trained on similar data agree more than their errors warrant. Split
conformal prediction (Vovk, Gammerman & Shafer, *Algorithmic Learning in a Random
World*, 2005; Papadopoulos et al., ECML 2002; Lei, G'Sell, Rinaldo, Tibshirani &
Wasserman, JASA 113, 1094, 2018) rescales it on :math:`n` labelled calibration
records that no member trained on. With the normalised nonconformity score
(Papadopoulos, Vovk & Gammerman, JAIR 40, 815, 2011; Lei et al. 2018 §5.2;
the locally weighted form of Romano, Patterson & Candès, NeurIPS 2019)

.. math::
    r_j = \frac{|y_j - \bar y_j|}{s_j + \beta}, \qquad j = 1, \dots, n,

the interval at coverage :math:`1 - \alpha` is

.. math::
    C(x) = \bar y(x) \pm \hat q\,(s(x) + \beta), \qquad
    \hat q = r_{(k)}, \quad k = \lceil (n + 1)(1 - \alpha) \rceil,

:math:`r_{(k)}` the :math:`k`-th smallest score (:math:`\hat q = \infty` when
:math:`k > n`: too few records for that coverage). If the calibration and test
records are exchangeable, :math:`1 - \alpha \le P(y \in C(x)) \le 1 - \alpha +
1/(n + 1)` (Lei et al. 2018, Thm. 2.2): the guarantee is marginal, over
structures, not per structure.

:math:`\beta` keeps the score finite where the members agree exactly; it is 1 %
of the median positive calibration spread (:data:`BETA_FRACTION`). With one member, or when
every calibration spread is 0, there is no spread to scale by and the plain score
:math:`r_j = |y_j - \bar y_j|` gives intervals of constant width :math:`\pm\hat q`.

The scores are stored, not one quantile, so one calibration serves every
coverage level (the evaluation's coverage curve uses many).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from matxfer.errors import ConfigError, MatxferError

#: :math:`\beta` as a fraction of the median calibration spread.
BETA_FRACTION = 0.01
#: Fewest calibration records accepted: below this the quantile of a 90 % interval
#: rests on one or two scores.
MIN_CALIBRATION = 20


def check_level(level: float) -> float:
    """``level`` (the nominal coverage, e.g. 0.9) if it lies strictly between 0 and 1.

    Raises:
        ConfigError: It does not.
    """
    if not 0.0 < level < 1.0 or not math.isfinite(level):
        raise ConfigError(f"--interval must lie strictly between 0 and 1 (e.g. 0.9), got {level}")
    return float(level)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    r"""The finite-sample conformal quantile :math:`r_{(k)}`, :math:`k = \lceil (n+1)\,
    \mathrm{level} \rceil`, of ``scores`` (``inf`` when :math:`k > n`).

    Raises:
        MatxferError: No finite score.
    """
    check_level(level)
    finite = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    n = finite.size
    if n == 0:
        raise MatxferError("no calibration score: the calibration records have no labels")
    # round() first: (n + 1) * level in floats can land a hair above an integer.
    k = math.ceil(round((n + 1) * level, 9))
    return math.inf if k > n else float(finite[k - 1])


@dataclass
class ConformalCalibration:
    """The calibration of one target: its nonconformity scores and how they were made.

    Attributes:
        scores: :math:`r_j` of the calibration records, in ``ids`` order.
        ids: The calibration records' ids (so overlap with evaluated data can be dropped).
        normalised: Whether the scores are divided by the spread (see the module docstring).
        beta: :math:`\\beta`, in the target's units (0 when not ``normalised``).
    """

    scores: np.ndarray
    ids: list[str]
    normalised: bool
    beta: float = 0.0

    @property
    def n(self) -> int:
        return int(np.isfinite(self.scores).sum())

    def quantile(self, level: float) -> float:
        """:math:`\\hat q` at nominal coverage ``level``."""
        return conformal_quantile(self.scores, level)

    def half_width(self, std: np.ndarray, level: float) -> np.ndarray:
        """Half-widths of the intervals at ``level`` for spreads ``std``."""
        q = self.quantile(level)
        std = np.asarray(std, dtype=np.float64)
        return q * (std + self.beta) if self.normalised else np.full_like(std, q)

    def interval(
        self, mean: np.ndarray, std: np.ndarray, level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds at nominal coverage ``level``."""
        half = self.half_width(std, level)
        return mean - half, mean + half

    def without(self, ids: set[str]) -> ConformalCalibration:
        """This calibration without the records ``ids`` (e.g. those being evaluated).

        Raises:
            MatxferError: Fewer than :data:`MIN_CALIBRATION` records would remain.
        """
        keep = np.array([i not in ids for i in self.ids], dtype=bool)
        kept = [i for i, k in zip(self.ids, keep, strict=True) if k]
        if len(kept) < MIN_CALIBRATION:
            raise MatxferError(
                f"{len(self.ids) - len(kept)} of the {len(self.ids)} calibration records are "
                f"among the evaluated ones, leaving {len(kept)} (at least {MIN_CALIBRATION} "
                "needed); pass --calibration FILE with records outside the evaluated data"
            )
        return ConformalCalibration(self.scores[keep], kept, self.normalised, self.beta)

    def to_dict(self) -> dict[str, Any]:
        return {
            "normalised": self.normalised,
            "beta": self.beta,
            "n": self.n,
            "ids": list(self.ids),
            "scores": [float(s) for s in self.scores],
        }

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> ConformalCalibration:
        return cls(
            np.asarray(stored["scores"], dtype=np.float64),
            [str(i) for i in stored["ids"]],
            bool(stored["normalised"]),
            float(stored["beta"]),
        )


def calibrate(
    labels: np.ndarray, mean: np.ndarray, std: np.ndarray, ids: list[str]
) -> ConformalCalibration:
    """Scores of labelled calibration records (one target; NaN labels are left out).

    Args:
        labels, mean, std: ``[n]`` labels, ensemble means and spreads, original units.
        ids: The records' ids.

    Raises:
        MatxferError: Fewer than :data:`MIN_CALIBRATION` labelled records.
    """
    labels, mean, std = (np.asarray(a, dtype=np.float64) for a in (labels, mean, std))
    labelled = np.isfinite(labels)
    if labelled.sum() < MIN_CALIBRATION:
        raise MatxferError(
            f"only {int(labelled.sum())} labelled calibration records (at least "
            f"{MIN_CALIBRATION} needed); pass --calibration FILE with more labelled records "
            "no member trained on"
        )
    labels, mean, std = labels[labelled], mean[labelled], std[labelled]
    kept_ids = [i for i, k in zip(ids, labelled, strict=True) if k]
    errors = np.abs(labels - mean)
    positive = std[std > 0]
    if positive.size == 0:  # one member, or members that agree everywhere: no scale to use
        return ConformalCalibration(errors, kept_ids, normalised=False)
    beta = BETA_FRACTION * float(np.median(positive))
    return ConformalCalibration(errors / (std + beta), kept_ids, normalised=True, beta=beta)
