"""Accuracy matrix: our scratch and fine-tuned test accuracy per property at one FT size,
beside the study's published scratch and best fine-tuning.

Reads one or more finished study directories (``matxfer study run``; e.g. the one
``examples/studies/accuracy_matrix.yaml`` makes) and prints, per property of the
study (fe bg gv ph dc pz ebg): our scratch R² and MAE mean ± std over the runs
measured (n), each fine-tuning source's, the best source, minutes per run, and
the study's scratch mean and best fine-tuning mean at that size
(``matxfer/study/anchors.csv``). The last line counts the properties where we
match or beat the study (see :mod:`matxfer.study.matrix`)::

    beats_study: <k>/7 scratch, <m>/7 best-FT

``--recipes DIR`` reads the cache of ``benchmarks/transfer_recipes.py`` instead
(``DIR/<target><size>/<recipe>/s<seed>``: trial 1, seeds), with the runs of its
committed record no longer in the cache (``--no-record``: the cache only):
scratch is its ``scratch`` recipe, every ``ft*`` recipe a fine-tuning group.

    python benchmarks/accuracy_matrix.py --study /work/studies/matrix
    python benchmarks/accuracy_matrix.py --study A --study B --size 100 --json matrix.json
    python benchmarks/accuracy_matrix.py --recipes /work/runs --size 800
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # transfer, recipe_runs

from recipe_runs import add_record_options  # noqa: E402


def recipe_matrix(cache: Path, size: int, record: Path | None) -> list:
    """The matrix from the ``transfer_recipes.py`` cache and ``record`` (see
    ``recipe_runs.py``): the finished runs of each recipe at trial 1."""
    import pandas as pd
    from recipe_runs import Split, cached_runs, merged_runs

    from matxfer.study.matrix import PROPERTIES, property_row, run_accuracy

    matrix = []
    for target in PROPERTIES:
        split = Split(target, size)
        scratch, tuned = None, []
        for recipe, seeds in sorted(merged_runs(record, split, cached_runs(cache, split)).items()):
            runs = pd.DataFrame(
                [(m["r2"], m["mae"], 60 * m["minutes"]) for _, m in sorted(seeds.items())],
                columns=["test_r2", "test_mae", "seconds"],
            )
            if recipe == "scratch":
                scratch = run_accuracy("scratch", runs)
            elif recipe.startswith("ft"):
                tuned.append(run_accuracy(recipe, runs))
        matrix.append(property_row(target, scratch, tuned, size))
    return matrix


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sources = parser.add_mutually_exclusive_group(required=True)
    sources.add_argument("--study", type=Path, action="append", help="study directory (repeatable)")
    sources.add_argument(
        "--recipes", type=Path, help="cache of benchmarks/transfer_recipes.py (its --out)"
    )
    add_record_options(parser)
    parser.add_argument("--size", type=int, default=800, help="FT size (default: 800)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    import pandas as pd

    from matxfer.errors import MatxferError
    from matxfer.study.matrix import accuracy_matrix, beats_line, format_matrix
    from matxfer.study.store import read_results

    if args.recipes is not None:
        if not args.recipes.is_dir():
            sys.exit(f"error: {args.recipes}: no such directory")
        matrix = recipe_matrix(args.recipes, args.size, args.record)
        source = f" and record {args.record}" if args.record is not None else ""
        print(f"transfer_recipes cache: {args.recipes}{source} (trial 1, seeds as found)")
    else:
        try:
            for study in args.study:
                if not (study / "results").is_dir():
                    raise MatxferError(f"{study}: not a study directory (no results/ folder)")
            results = pd.concat([read_results(study) for study in args.study], ignore_index=True)
        except MatxferError as error:
            sys.exit(f"error: {error}")
        matrix = accuracy_matrix(results, args.size)
        print(f"studies: {', '.join(str(s) for s in args.study)}")
    print("\n".join(format_matrix(matrix, args.size)))
    if args.json:
        numbers = {
            "studies": [str(s) for s in args.study or []],
            "recipes": str(args.recipes) if args.recipes else None,
            "size": args.size,
            "properties": [row.to_dict() for row in matrix],
            "beats_study": beats_line(matrix).split(": ", 1)[1],
            "beats_study_scratch": sum(row.beats_scratch for row in matrix),
            "beats_study_best_ft": sum(row.beats_best_ft for row in matrix),
        }
        args.json.write_text(json.dumps(numbers, indent=1) + "\n")


if __name__ == "__main__":
    main()
