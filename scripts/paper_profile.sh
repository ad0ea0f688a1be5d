#!/usr/bin/env bash
# The study's paper profile (4 ALIGNN + 4 GCN layers, hidden 256, MSE, 500 epochs,
# early-stopping patience 50) on trial 1, size 800 of several properties at once,
# one training process per property. Meant for a GPU: on 2 CPU cores one property
# takes about 4 h.
#
#   scripts/paper_profile.sh [PROPERTY ...]        (default: ph dc ebg)
#
# Environment: DATA_DIR (default ../shared/datasets), RUNS (default runs/paper),
# MAX_MINUTES (optional wall-clock budget per run; a run cut short is marked
# "stopped_by": "time_budget" in its metrics.json), PYTHON (default python3).
set -euo pipefail
DATA_DIR=${DATA_DIR:-../shared/datasets}
RUNS=${RUNS:-runs/paper}
PYTHON=${PYTHON:-python3}
PROPERTIES=("$@")
[ ${#PROPERTIES[@]} -gt 0 ] || PROPERTIES=(ph dc ebg)
mkdir -p "$RUNS"
CONFIG=()
if [ -n "${MAX_MINUTES:-}" ]; then
    echo "max_minutes: $MAX_MINUTES" > "$RUNS/budget.yaml"
    CONFIG=(--config "$RUNS/budget.yaml")
fi
for property in "${PROPERTIES[@]}"; do
    # Several processes share the machine: a few CPU threads each is plenty.
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} "$PYTHON" -m matxfer train "$property" \
        --data-dir "$DATA_DIR" --trial 1 --size 800 --profile paper "${CONFIG[@]}" \
        --out "$RUNS/$property" --no-progress > "$RUNS/$property.log" 2>&1 &
done
status=0
wait || status=$?
"$PYTHON" - "$RUNS" "${PROPERTIES[@]}" <<'PY'
import json, sys
from pathlib import Path

import pandas as pd

runs = Path(sys.argv[1])
print(f"{'property':9} {'epochs':>6} {'best':>5} {'stopped by':15} {'s/epoch':>8} "
      f"{'test R2':>8} {'test MAE':>9}")
for name in sys.argv[2:]:
    path = runs / name / "metrics.json"
    if not path.is_file():
        print(f"{name:9} no metrics (see {runs / name}.log)")
        continue
    metrics = json.loads(path.read_text())
    test = next(iter(metrics["test"].values()))["transformed"]
    r2, mae = (float("nan") if test[k] is None else test[k] for k in ("r2", "mae"))  # null: NaN
    log = pd.read_csv(runs / name / "logs/csv/metrics.csv")
    seconds = log["epoch_seconds"].dropna().median()
    print(f"{name:9} {metrics['epochs_trained']:6d} {metrics['best_epoch']:5d} "
          f"{metrics['stopped_by']:15} {seconds:8.2f} {r2:8.3f} {mae:9.4f}")
PY
exit $status
