"""Pack the runs of ``scripts/train_shipped_models.sh`` as the package's shipped models.

For every finished run ``OUT/NAME``, writes ``matxfer/training/shipped_models/NAME.pt``
(float16 weights) and ``NAME.json`` (the model card: data and hashes, the command,
training time, test metrics measured with the packed weights). Needs the study's
data (``--data-dir``, default ``../shared/datasets``) to measure and hash.

Usage: ``python scripts/pack_shipped_models.py OUT [NAME ...] --machine "..."``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from matxfer.training.rundir import MERGE_REPORT_FILE, is_finished, read_config  # noqa: E402
from matxfer.training.shipped import SHIPPED_DIR  # noqa: E402

#: What each shipped model is, in one line.
SUMMARIES = {
    "mpt7": "Multi-property ALIGNN pre-trained on the study's seven properties (fe, bg, gv, "
    "ph, dc, pz, ebg), none of the crystals of their fixed test sets included.",
    "fe": "ALIGNN pre-trained on formation energies per atom (Materials Project), none of the "
    "crystals of the study's seven fixed test sets included.",
    "bg": "ALIGNN pre-trained on PBE band gaps (Materials Project), none of the crystals of "
    "the study's seven fixed test sets included.",
}
LEFT_OUT = (
    "Multi-property ALIGNN pre-trained on the study's properties but {prop} (for fine-tuning "
    "on {prop} without in-task pre-training), none of the crystals of the seven fixed test "
    "sets included."
)


def command_of(run_dir: Path) -> str:
    """The ``matxfer pretrain-multi`` command that trained ``run_dir`` (from its records)."""
    import json

    spec = json.loads((run_dir / MERGE_REPORT_FILE).read_text())["spec"]
    config = read_config(run_dir)
    parts = ["matxfer pretrain-multi", *spec["datasets"]]
    parts += [f"--exclude {name}" for name in spec["exclude"]]
    if spec.get("max_atoms") is not None:
        parts.append(f"--max-atoms {spec['max_atoms']}")
    if spec["size"] is not None:
        parts.append(f"--size {spec['size']}")
    parts.append(f"--epochs {config.epochs}")
    parts += ["--data-dir ../shared/datasets"]
    if spec["exclude_test_structures"]:
        parts.append("--exclude-test-structures")
    parts += [f"--profile {config.profile}", f"--seed {config.seed}", f"--out {run_dir.name}"]
    return " ".join(parts)


def main() -> None:
    from matxfer.transfer.shipping import card_from_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder of the training runs")
    parser.add_argument("names", nargs="*", help="models to pack (default: every finished run)")
    parser.add_argument("--machine", required=True, help="where they were trained, in words")
    parser.add_argument("--dest", type=Path, default=SHIPPED_DIR)
    args = parser.parse_args()
    names = args.names or sorted(p.name for p in args.out.iterdir() if is_finished(p))
    for name in names:
        run_dir = args.out / name
        summary = SUMMARIES.get(name) or LEFT_OUT.format(prop=name.removeprefix("mpt7-no-"))
        model = card_from_run(run_dir, name, summary, command_of(run_dir), args.machine, args.dest)
        r2 = ", ".join(f"{k} {v:.3f}" for k, v in model.test_r2().items() if v is not None)
        print(f"{name}: {model.card['weights']['bytes'] / 1024:.0f} KiB; test R² {r2}")
    total = sum(p.stat().st_size for p in args.dest.glob("*.pt"))
    print(f"shipped weights in all: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
