#!/usr/bin/env bash
# Issue 6 measurements on one GPU (nvidia-h200), in parts that each fit one device call:
#   bash bench/gpu_profile.sh profile   host time per layer kind and node, sync sites (backbone Base, LAM3C Base at
#                                       2 scenes), and the LAM3C step's operators by GPU time
#   bash bench/gpu_profile.sh time      backbone step Base/Large (spconv); the full LAM3C step at 2 and 4 scenes
#   bash bench/gpu_profile.sh torch     backbone step Base with the torch sparse convolution
#   bash bench/gpu_profile.sh memory    activation checkpointing (backbone, then the clustering heads too): the
#                                       backbone step, the LAM3C step at 2 scenes and at BIG_SCENES (12)
# Carries .devbundle (../shared/device/make-bundle.sh .devbundle plyfile) and a store (STORE, default .devdata/big:
# the 13 scannet-mini training scans, `pcdag preprocess graphs/scannet.yaml --set scans.splits=[train]
# --set scans.fields=[color] --set store.path=.devdata/big`). One JSON line per measurement to $OUT/bench.jsonl;
# the operator tables to $OUT/profile.txt.
set -uo pipefail
mkdir -p /tmp/site && tar xJf .devbundle/site.tar.xz -C /tmp/site
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
STORE=${STORE:-.devdata/big}
b() { timeout "$1" "${@:2}" 2>>"$OUT/errors.txt" | tee -a "$OUT/bench.jsonl"; }
CKPT=(--set student.checkpoint=true --set mask_head.checkpoint=true --set unmask_head.checkpoint=true)
parts=("$@"); [ ${#parts[@]} -gt 0 ] || parts=(profile time memory)
for part in "${parts[@]}"; do
  case $part in
    profile)
      b 150 python3 bench/backbone_step.py --preset base --backend spconv --steps 10 --host-profile
      b 150 python3 bench/lam3c_step.py --preset base --scenes 2 --backend spconv --store "$STORE" --host-profile
      timeout 150 python3 bench/lam3c_step.py --preset base --scenes 2 --backend spconv --store "$STORE" --profile \
        >> "$OUT/profile.txt" 2>>"$OUT/errors.txt" ;;
    time)
      b 120 python3 bench/backbone_step.py --preset base --backend spconv
      b 120 python3 bench/backbone_step.py --preset large --backend spconv
      b 150 python3 bench/lam3c_step.py --preset base --scenes 2 --backend spconv --store "$STORE"
      b 150 python3 bench/lam3c_step.py --preset base --scenes 4 --backend spconv --store "$STORE" ;;
    torch)
      b 120 python3 bench/backbone_step.py --preset base --backend torch ;;
    memory)
      b 120 python3 bench/backbone_step.py --preset base --backend spconv --checkpoint
      b 150 python3 bench/lam3c_step.py --preset base --scenes 2 --backend spconv --store "$STORE" "${CKPT[@]}"
      b 240 python3 bench/lam3c_step.py --preset base --scenes "${BIG_SCENES:-12}" --steps 8 --backend spconv \
        --store "$STORE" "${CKPT[@]}" ;;
    *) echo "unknown part $part (profile, time, torch, memory)" >&2; exit 2 ;;
  esac
done
tail -5 "$OUT/errors.txt" 2>/dev/null
