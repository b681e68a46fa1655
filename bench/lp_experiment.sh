#!/usr/bin/env bash
# The first pre-train → linear-probe experiment (docs/evaluation.md): LAM3C pre-training on scannet-mini/train and,
# separately, on a store made by the RoomTours graph from generated videos; then the same linear probe on
# scannet-mini val for each, and for a randomly initialised backbone. Usage:
#   bash bench/lp_experiment.sh OUT_DIR [STEPS] [extra --set flags for pre-training...]
# STEPS: pre-training steps (default: the tiny preset's 60). Needs stores/scannet-mini (pcdag preprocess
# graphs/scannet.yaml) and stores/roomtours-synth (docs/evaluation.md says how it was made).
set -u
out=${1:?usage: bench/lp_experiment.sh OUT_DIR [STEPS] [--set ...]}
steps=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p "$out"
t() { local s=$(date +%s); "$@"; local rc=$?; echo "TIME $(( $(date +%s) - s )) s rc=$rc: $*" | tee -a "$out/times.txt"; }
for src in scannet roomtours; do
  store=stores/scannet-mini; [ $src = roomtours ] && store=stores/roomtours-synth
  t pcdag train graphs/lam3c.yaml --preset tiny --quiet --out "$out/lam3c-$src" --set store.path=$store \
    --set settings.train.steps=$steps "$@"
done
for ck in lam3c-scannet lam3c-roomtours; do
  t pcdag eval graphs/eval/scannet-lp.yaml --preset small --quiet --checkpoint "$out/$ck" --out "$out/lp-$ck" "$@"
done
t pcdag eval graphs/eval/scannet-lp.yaml --preset small --quiet --out "$out/lp-random" "$@"
grep -h '"miou"' /dev/null "$out"/lp-*/metrics.json >/dev/null 2>&1 || true
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
for run in sorted(Path(sys.argv[1]).glob("lp-*")):
    m = json.loads((run / "metrics.json").read_text())
    e = m["evaluators"]["evaluate"]
    print(f"{run.name}: mIoU {e['miou']:.4f} mAcc {e['macc']:.4f} allAcc {e['all_acc']:.4f} "
          f"(train {m['run']['train_seconds']} s, eval {m['run']['eval_seconds']} s, {m['run']['device']})")
PY
