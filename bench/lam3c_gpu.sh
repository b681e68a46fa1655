#!/usr/bin/env bash
# LAM3C Base on the GPU machine: 1 GPU vs 2 GPUs (DDP) at the same global batch, plus a seed-to-seed control,
# then step time and peak memory for 2 scenes of 100k points. Run from the repository root on nvidia-h200-x2,
# carrying .devbundle (../shared/device/make-bundle.sh) and .devdata (small stores made here, see bench/README.md).
set -euo pipefail
mkdir -p /tmp/site && tar xJf .devbundle/site.tar.xz -C /tmp/site
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/out}; RUNS=/tmp/runs; mkdir -p "$OUT" "$RUNS"
python3 -c "import torch, spconv.pytorch; print('torch', torch.__version__, 'GPUs', torch.cuda.device_count())"
STEPS=${STEPS:-30}
common=(graphs/lam3c.yaml --preset base --quiet --set store.path=.devdata/store --set student.backend=spconv
        --set settings.train.steps=$STEPS --set settings.train.global_batch=4 --set settings.train.batch_per_device=2
        --set settings.train.workers=6 --set settings.train.checkpoint_every=100000 --set settings.train.precision=bf16)
run() { local name=$1; shift; local t0=$SECONDS; "$@" --out "$RUNS/$name" > "$OUT/$name.log" 2>&1 || { tail -40 "$OUT/$name.log"; exit 1; }
        cp "$RUNS/$name/metrics.jsonl" "$OUT/$name.jsonl"; echo "$name: $((SECONDS - t0)) s"; }
run one   env CUDA_VISIBLE_DEVICES=0 python3 -m pcdag.cli train "${common[@]}"
run two   torchrun --standalone --nproc_per_node 2 -m pcdag.cli train "${common[@]}"
run seed1 env CUDA_VISIBLE_DEVICES=0 python3 -m pcdag.cli train "${common[@]}" --set settings.seed=1
run big   env CUDA_VISIBLE_DEVICES=0 python3 -m pcdag.cli train graphs/lam3c.yaml --preset base --quiet \
          --set store.path=.devdata/syn100k --set student.backend=spconv --set settings.train.steps=12 \
          --set settings.train.global_batch=2 --set settings.train.batch_per_device=2 --set settings.train.workers=6 \
          --set settings.train.checkpoint_every=100000 --set settings.train.precision=bf16 --set views.max_points=100000
python3 bench/compare_runs.py "$OUT/one.jsonl" "$OUT/two.jsonl" "$OUT/seed1.jsonl" "$OUT/big.jsonl" | tee "$OUT/summary.txt"
