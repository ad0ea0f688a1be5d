"""The study's published results, as yardsticks printed beside ours.

Devi, Butler & Sai Gautam, "Optimal pre-train/fine-tune strategies for accurate
material property predictions", npj Comput. Mater. 10, 300 (2024),
arXiv:2406.13142. The numbers were recomputed from the test-set predictions the
authors published (``/work/shared/study-results``, see its README): R² and MAE
(in the normalised target units of the study's datasets, which are matxfer's
original units for them) as mean and sample std (ddof = 1) over the study's
five trials.

``anchors.csv`` (shipped beside this module) holds the four experiments in one
tidy table, one row per (experiment, kind, source, target, size, pt_size):

* ``scratch``: ALIGNN from scratch per property and FT size;
* ``pairwise_pt941``: pre-trained on 941 records of ``source``, fine-tuned on ``target``;
* ``mpt_leave_one_out``: multi-property pre-training on the six other
  properties (source ``mpt-no-<target>``), fine-tuned on ``target``;
* ``jarvis2d``: out-of-domain fine-tuning on JARVIS 2D band gaps (one number per
  source, no FT size and no std).

:func:`tidy_anchors` rebuilds the table from the study's CSV files; the shipped
copy is what :func:`load_anchors` reads. They are comparisons only, never model inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd

#: The shipped table.
ANCHORS_FILE = Path(__file__).with_name("anchors.csv")
#: Its first line: where the numbers come from.
CITATION = (
    "Devi, Butler & Sai Gautam, npj Comput. Mater. 10, 300 (2024), arXiv:2406.13142: "
    "mean and sample std over the study's five trials; MAE in the datasets' normalised units"
)
COLUMNS = [
    "experiment",
    "kind",
    "source",
    "target",
    "size",
    "pt_size",
    "r2_mean",
    "r2_std",
    "mae_mean",
    "mae_std",
    "n_trials",
    "n_test",
    "label",
]
#: The study's only fine-tuning strategy: every layer trained.
STUDY_STRATEGY = "all"
#: jarvis2d.csv's ``pt`` labels → (source, pt_size).
JARVIS2D_SOURCES = {
    "Scratch": ("scratch", math.nan),
    "MPT (all props)": ("mpt", math.nan),
    "FE (100K)": ("fe", 100_000),
    "BG (50K)": ("bg", 50_000),
}


@dataclass(frozen=True)
class Anchor:
    """One published result: what it is and its numbers."""

    experiment: str
    label: str
    r2_mean: float
    r2_std: float
    mae_mean: float
    mae_std: float
    n_trials: float


def tidy_anchors(results_dir: Path) -> pd.DataFrame:
    """The four CSV files of the study's results folder as one table of :data:`COLUMNS`.

    Args:
        results_dir: Folder with ``scratch.csv``, ``pairwise_pt941.csv``,
            ``mpt_leave_one_out.csv`` and ``jarvis2d.csv``.
    """
    scratch = pd.read_csv(results_dir / "scratch.csv").assign(
        experiment="scratch", kind="scratch", source="scratch", pt_size=math.nan
    )
    pairwise = pd.read_csv(results_dir / "pairwise_pt941.csv").assign(
        experiment="pairwise_pt941", kind="finetune"
    )
    pairwise["source"] = pairwise.pop("pt")
    mpt = pd.read_csv(results_dir / "mpt_leave_one_out.csv").assign(
        experiment="mpt_leave_one_out", kind="finetune", pt_size=math.nan
    )
    mpt["source"] = "mpt-no-" + mpt["ft"]
    parts = []
    for part in (scratch, pairwise, mpt):
        part = part.rename(columns={"ft": "target", "ft_size": "size"})
        arrow = part["source"].map(lambda s: "on" if s == "scratch" else "→")
        part["label"] = part["source"] + " " + arrow + " " + part["target"]
        parts.append(part)
    jarvis = pd.read_csv(results_dir / "jarvis2d.csv")
    # Bare property codes (PH, GV, EBG) are single-property PT of unpublished size.
    known = [JARVIS2D_SOURCES.get(pt, (pt.lower(), math.nan)) for pt in jarvis["pt"]]
    jarvis = jarvis.assign(
        experiment="jarvis2d",
        target="jarvis2d",
        source=[source for source, _ in known],
        pt_size=[pt_size for _, pt_size in known],
        label=jarvis["pt"] + " → jarvis2d",
        r2_mean=jarvis["r2"],
        mae_mean=jarvis["mae"],
    )
    jarvis["kind"] = jarvis["source"].map(lambda s: "scratch" if s == "scratch" else "finetune")
    table = pd.concat([*parts, jarvis], ignore_index=True).reindex(columns=COLUMNS)
    counts = ["size", "pt_size", "n_trials", "n_test"]
    return table.astype(dict.fromkeys(counts, "Int64"))


def write_anchors(table: pd.DataFrame, path: Path = ANCHORS_FILE) -> None:
    """Write ``table`` as the anchors CSV with :data:`CITATION` as a ``#`` comment line."""
    path.write_text(f"# {CITATION}\n" + table.to_csv(index=False))


@cache
def load_anchors(path: Path = ANCHORS_FILE) -> pd.DataFrame:
    """The anchors table (:data:`COLUMNS`); read once per path."""
    return pd.read_csv(path, comment="#")


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def match_anchor(
    kind: str,
    source: str | None,
    target: str,
    size: float | None,
    pt_size: float | None,
    strategy: str | None,
    anchors: pd.DataFrame | None = None,
) -> Anchor | None:
    """The study's result for one group of our results table, or ``None``.

    The match rules (fine-tuning anchors only for strategy ``"all"``, the study's):

    * target ``jarvis2d``: the ``jarvis2d`` row of the same source, whatever the sizes
      (the study published one number per source);
    * kind ``scratch``: ``scratch`` at the same target and size;
    * source ``mpt-no-<target>``: ``mpt_leave_one_out`` at the same target and size;
    * a single-property source with ``pt_size`` 941: ``pairwise_pt941`` at the same
      source, target and size.

    Args:
        kind: ``"scratch"``, ``"finetune"`` or ``"pretrain"`` (never matched).
        source: PT label (``"scratch"`` for scratch).
        target: FT property.
        size: FT size (training + validation records).
        pt_size: Records per PT property.
        strategy: FT strategy.
        anchors: The table (default: :func:`load_anchors`).
    """
    table = load_anchors() if anchors is None else anchors
    if kind == "pretrain" or (kind == "finetune" and strategy != STUDY_STRATEGY):
        return None
    rows = table[(table["target"] == target) & (table["kind"] == kind)]
    if target == "jarvis2d":
        rows = rows[(rows["experiment"] == "jarvis2d") & (rows["source"] == source)]
    elif kind == "scratch":
        rows = rows[(rows["experiment"] == "scratch") & (rows["size"] == _number(size))]
    elif source == f"mpt-no-{target}":
        rows = rows[(rows["experiment"] == "mpt_leave_one_out") & (rows["size"] == _number(size))]
    elif _number(pt_size) == 941:
        rows = rows[
            (rows["experiment"] == "pairwise_pt941")
            & (rows["source"] == source)
            & (rows["size"] == _number(size))
        ]
    else:
        return None
    if rows.empty:
        return None
    row = rows.iloc[0]
    return Anchor(
        experiment=str(row["experiment"]),
        label=str(row["label"]),
        r2_mean=float(row["r2_mean"]),
        r2_std=float(row["r2_std"]),
        mae_mean=float(row["mae_mean"]),
        mae_std=float(row["mae_std"]),
        n_trials=float(row["n_trials"]),
    )
