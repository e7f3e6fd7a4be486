#!/usr/bin/env bash
# The accuracy regression gate (docs/gate.md).
#
#   scripts/regression.sh           run the regression configuration, then `bench check` it
#                                   against the committed baseline (exit 1 on a regression)
#   scripts/regression.sh baseline  run it and store the result as the new baseline
#
# Regression configuration: emoji test split, 5-way 1-shot, 15 queries, the 200 stored
# group-aware episodes episodes/emoji-test-5w1s15q-200e-seed0-grouped.npz (committed), the default offline
# backbone and protocol, protonet + ce + schane, on the CPU. Always a fresh run: the results
# folder is removed first, since `bench run` would otherwise resume (reuse) a finished run.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
BENCH=${BENCH:-.venv/bin/bench}
OUT=${REGRESSION_OUT:-results/regression}
BASELINE=results/baselines/emoji-5w1s-regression.json

rm -rf "$OUT"
"$BENCH" run --dataset emoji --split test --ways 5 --shots 1 --queries 15 --episodes 200 \
    --seed 0 --device cpu --episodes-dir episodes --out "$OUT" --no-progress

case "${1:-check}" in
  check) "$BENCH" check "$OUT" --baseline "$BASELINE" ;;
  baseline) "$BENCH" baseline "$OUT" --out "$BASELINE" ;;
  *) echo "usage: $0 [check|baseline]" >&2; exit 2 ;;
esac
