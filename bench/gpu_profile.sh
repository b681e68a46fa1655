#!/usr/bin/env bash
# Issue 6 measurements on one GPU (nvidia-h200): backbone step Base/Large (spconv, and Base with the torch sparse
# convolution), with an operator profile of Base, then the full LAM3C step at 2 and 4 scenes per GPU, then the
# same with activation checkpointing (backbone and clustering heads) at 2 and 12 scenes. Carries .devbundle
# (../shared/device/make-bundle.sh .devbundle plyfile) and .devdata/store (5 preprocessed scannet-mini scans;
# BIG_STORE: a store of >= 12 scenes for the 12-scene run). Writes one JSON line per measurement to
# $OUT/bench.jsonl and the profile to $OUT/profile.txt.
set -uo pipefail
mkdir -p /tmp/site && tar xJf .devbundle/site.tar.xz -C /tmp/site
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
b() { timeout "$1" "${@:2}" 2>>"$OUT/errors.txt" | tee -a "$OUT/bench.jsonl"; }
python3 bench/backbone_step.py --preset base --backend spconv --profile > "$OUT/profile.txt" 2>>"$OUT/errors.txt"
head -1 "$OUT/profile.txt" | tee -a "$OUT/bench.jsonl"
b 120 python3 bench/backbone_step.py --preset large --backend spconv
b 120 python3 bench/backbone_step.py --preset base --backend torch
b 150 python3 bench/lam3c_step.py --preset base --scenes 2 --backend spconv --store .devdata/store
b 150 python3 bench/lam3c_step.py --preset base --scenes 4 --backend spconv --store .devdata/store
# memory: activation checkpointing (backbone, then heads too); 12 scenes needs a store of >= 12 scenes
b 120 python3 bench/backbone_step.py --preset base --backend spconv --checkpoint
CKPT=(--set student.checkpoint=true --set mask_head.checkpoint=true --set unmask_head.checkpoint=true)
b 150 python3 bench/lam3c_step.py --preset base --scenes 2 --backend spconv --store .devdata/store "${CKPT[@]}"
b 240 python3 bench/lam3c_step.py --preset base --scenes "${BIG_SCENES:-12}" --backend spconv \
      --store "${BIG_STORE:-.devdata/store}" "${CKPT[@]}"
tail -5 "$OUT/errors.txt"
