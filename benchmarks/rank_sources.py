"""Validate ``matxfer rank-sources`` against real fine-tuning: do the scores rank sources?

For every target of the study's pair-wise matrix (Devi, Butler & Sai Gautam,
npj Comput. Mater. 2024, arXiv 2406.13142; ``matxfer/study/anchors.csv``,
experiment ``pairwise_pt941``), the training structures of one FT subset
(default: size 800, trial 1) are embedded by each of the six other pre-trained
models (941 structures each, from the studies given with ``--pt-study``) and
scored (LogME, ridge R², kNN R²). The scores are compared with fine-tuned test R²:

* the study's published 5-trial mean R² at FT 800 from PT 941 (its paper
  configuration, its own pre-trained models);
* the FT R² our study runner measured (``--ft-study``: finetune rows at that
  size; the chosen trial, and the mean over trials), for the pairs it ran.

Per target: Spearman ρ and Kendall τ over the sources, whether the top-scored
source is the best fine-tuned one, and the regret (best R² minus R² of the
top-scored source); overall: their means over targets. Because the published R²
of the six sources often differ by less than their trial-to-trial std, a noise
ceiling is printed too: the mean Spearman ρ between the published means and
means re-drawn from N(mean, std²/n_trials), i.e. how well a perfect score
could agree with these numbers. Cost: the seconds of scoring vs the seconds of
fine-tuning every source (FT rows of ``--ft-study`` at that size; scratch rows,
the same data and epochs, when no FT row is done).

    python benchmarks/rank_sources.py --pt-study /work/studies/mini /work/studies/pt941 \\
        --ft-study /work/studies/mini --data-dir /work/shared/datasets --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from matxfer.study.anchors import load_anchors  # noqa: E402
from matxfer.study.store import read_results  # noqa: E402
from matxfer.training.inputs import DataSpec  # noqa: E402
from matxfer.transfer.ranking import rank_sources  # noqa: E402

#: The seven properties of the study's pair-wise matrix.
PROPERTIES = ("fe", "bg", "gv", "ph", "dc", "pz", "ebg")
SCORES = ("logme", "ridge_r2", "knn_r2")


def pretrained_runs(studies: Sequence[Path], pt_size: int | None) -> dict[str, Path]:
    """``{property: run_dir}`` of the finished single-property PT runs of ``studies``."""
    runs: dict[str, Path] = {}
    for study in studies:
        rows = read_results(study)
        if rows.empty:
            continue
        done = rows[(rows["kind"] == "pretrain") & (rows["status"] == "done")]
        for row in done.itertuples():
            if pt_size is None or row.size == pt_size or row.source == "pz":
                runs.setdefault(str(row.source), Path(str(row.run_dir)))
    return runs


def agreement(scores: Sequence[float], r2: Sequence[float]) -> dict[str, float]:
    """Spearman, Kendall, top-1 hit and regret of ``scores`` against fine-tuned ``r2``."""
    scores, r2 = np.asarray(scores, float), np.asarray(r2, float)
    chosen = int(np.argmax(scores))
    found = {
        "n": len(scores),
        "top1": float(chosen == int(np.argmax(r2))),
        "regret": float(r2.max() - r2[chosen]),
    }
    # Rank correlations of two sources are only +-1: reported from three on.
    many = len(scores) >= 3
    found["spearman"] = float(spearmanr(scores, r2).statistic) if many else np.nan
    found["kendall"] = float(kendalltau(scores, r2).statistic) if many else np.nan
    return found


def noise_ceiling(
    mean: np.ndarray, std: np.ndarray, trials: np.ndarray, draws: int = 2000
) -> float:
    """Mean Spearman ρ between the published means and means re-drawn within their error."""
    rng = np.random.default_rng(0)
    sem = std / np.sqrt(trials)
    rhos = [spearmanr(mean, rng.normal(mean, sem)).statistic for _ in range(draws)]
    return float(np.nanmean(rhos))


def ft_rows(study: Path | None, size: int) -> pd.DataFrame:
    """Finished fine-tuning and scratch rows of ``study`` at FT ``size``."""
    if study is None:
        return pd.DataFrame()
    rows = read_results(study)
    if rows.empty:
        return rows
    return rows[(rows["size"] == size) & (rows["status"] == "done")]


def summarise(per_target: dict[str, dict[str, Any]], reference: str) -> dict[str, float]:
    """Means over targets of each score's agreement with ``reference``."""
    summary: dict[str, float] = {}
    for score in SCORES:
        found = [t[reference][score] for t in per_target.values() if reference in t]
        for key in ("spearman", "kendall", "top1", "regret"):
            values = [f[key] for f in found if key in f and np.isfinite(f[key])]
            summary[f"{score}_{key}"] = float(np.mean(values)) if values else np.nan
        summary[f"{score}_targets"] = len(found)  # top-1 and regret: all of them
        summary[f"{score}_ranked_targets"] = sum(np.isfinite(f["spearman"]) for f in found)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pt-study", type=Path, nargs="+", required=True)
    parser.add_argument("--ft-study", type=Path, default=None)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--targets", default=",".join(PROPERTIES))
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--trial", type=int, default=1)
    parser.add_argument("--pt-size", type=int, default=941)
    parser.add_argument("--json", type=Path, default=None, help="Write all numbers here.")
    args = parser.parse_args()

    runs = pretrained_runs(args.pt_study, args.pt_size)
    print(f"pre-trained sources found: {sorted(runs)}", file=sys.stderr)
    anchors = load_anchors()
    published = anchors[
        (anchors["experiment"] == "pairwise_pt941") & (anchors["size"] == args.size)
    ].set_index(["source", "target"])
    measured = ft_rows(args.ft_study, args.size)
    ft = measured[measured["kind"] == "finetune"] if not measured.empty else measured
    results: dict[str, dict[str, Any]] = {}
    for target in args.targets.split(","):
        sources = [s for s in PROPERTIES if s != target and s in runs]
        if len(sources) < 2:
            print(f"{target}: {len(sources)} sources available, skipped", file=sys.stderr)
            continue
        start = time.perf_counter()
        spec = DataSpec(target, data_dir=args.data_dir, trial=args.trial, size=args.size)
        ranking = rank_sources(spec, [runs[s] for s in sources], device="cpu")
        by_run = {Path(s.source): s for s in ranking.scores}
        rows = []
        for source in sources:
            score = by_run[runs[source]]
            row = {"source": source, **{k: getattr(score, k) for k in SCORES}}
            row["seconds"] = score.seconds
            row["graph_seconds"] = score.graph_seconds
            if (source, target) in published.index:
                row["published_r2"] = float(published.loc[(source, target), "r2_mean"])
                row["published_std"] = float(published.loc[(source, target), "r2_std"])
                row["published_trials"] = int(published.loc[(source, target), "n_trials"])
            if not ft.empty:
                pair = ft[(ft["source"] == source) & (ft["target"] == target)]
                if not pair.empty:
                    trial = pair[pair["trial"] == args.trial]
                    row["measured_r2"] = float(trial["test_r2"].mean()) if len(trial) else np.nan
                    row["measured_r2_mean"] = float(pair["test_r2"].mean())
                    row["measured_trials"] = len(pair)
            rows.append(row)
        frame = pd.DataFrame(rows)
        entry: dict[str, Any] = {
            "table": rows,
            "n": ranking.n,
            "scoring_seconds": time.perf_counter() - start,
            "scoring_cpu_seconds": ranking.cpu_seconds,
            "graph_seconds": sum(s.graph_seconds for s in ranking.scores),
        }
        for reference in ("published_r2", "measured_r2", "measured_r2_mean"):
            if reference in frame and frame[reference].notna().sum() >= 2:
                known = frame[frame[reference].notna()]
                entry[reference] = {
                    score: agreement(known[score], known[reference]) for score in SCORES
                }
        if "published_r2" in frame:
            entry["published_spread"] = float(
                frame["published_r2"].max() - frame["published_r2"].min()
            )
            entry["published_mean_std"] = float(frame["published_std"].mean())
            entry["noise_ceiling_spearman"] = noise_ceiling(
                frame["published_r2"].to_numpy(),
                frame["published_std"].to_numpy(),
                frame["published_trials"].to_numpy(),
            )
        results[target] = entry
        print(
            f"\n== {target}: {ranking.n} training structures, scored in "
            f"{entry['scoring_seconds']:.1f} s ({entry['scoring_cpu_seconds']:.1f} s CPU, "
            f"graphs {entry['graph_seconds']:.1f} s)",
            flush=True,
        )
        print(frame.round(4).to_string(index=False), flush=True)
        for reference in ("published_r2", "measured_r2", "measured_r2_mean"):
            if reference in entry:
                line = ", ".join(
                    f"{score} ρ {entry[reference][score]['spearman']:+.2f} "
                    f"τ {entry[reference][score]['kendall']:+.2f}"
                    for score in SCORES
                )
                print(f"  vs {reference} ({entry[reference]['logme']['n']} sources): {line}")
        if "noise_ceiling_spearman" in entry:
            print(
                f"  published R² spread over sources {entry['published_spread']:.3f}, "
                f"mean trial std {entry['published_mean_std']:.3f}, noise ceiling ρ "
                f"{entry['noise_ceiling_spearman']:.2f}"
            )

    overall = {
        ref: summarise(results, ref) for ref in ("published_r2", "measured_r2", "measured_r2_mean")
    }
    ceilings = [
        r["noise_ceiling_spearman"] for r in results.values() if "noise_ceiling_spearman" in r
    ]
    scoring = sum(r["scoring_seconds"] for r in results.values())
    pairs = sum(len(r["table"]) for r in results.values())
    cost: dict[str, Any] = {
        "scoring_seconds": scoring,
        "scoring_cpu_seconds": sum(r["scoring_cpu_seconds"] for r in results.values()),
        "graph_seconds": sum(r["graph_seconds"] for r in results.values()),
        "pairs": pairs,
    }
    if not measured.empty:
        kind = "finetune" if not ft.empty else "scratch"
        unit = float(measured[measured["kind"] == kind]["seconds"].mean())
        cost.update(ft_seconds_per_job=unit, ft_seconds_basis=kind, ft_seconds_all=unit * pairs)
        cost["fraction"] = scoring / (unit * pairs)
        cost["fraction_cpu"] = cost["scoring_cpu_seconds"] / (unit * pairs)
    print("\n== overall (means over targets)")
    for reference, summary in overall.items():
        if summary["logme_targets"]:
            print(
                f"  vs {reference} (top-1, regret: {summary['logme_targets']} targets; ρ, τ: "
                f"{summary['logme_ranked_targets']} with 3 or more sources):"
            )
            for score in SCORES:
                print(
                    f"    {score:9s} ρ {summary[score + '_spearman']:+.2f}  "
                    f"τ {summary[score + '_kendall']:+.2f}  top-1 {summary[score + '_top1']:.2f}  "
                    f"regret {summary[score + '_regret']:.3f}"
                )
    if ceilings:
        print(f"  noise ceiling of the published matrix: mean ρ {np.mean(ceilings):.2f}")
    print(f"  cost: {json.dumps(cost)}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"targets": results, "overall": overall, "noise_ceiling": ceilings, "cost": cost},
                indent=1,
                default=float,
            )
        )


if __name__ == "__main__":
    main()
