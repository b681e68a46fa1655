#!/usr/bin/env bash
# Issue 13 measurements on one GPU, in one device call (nvidia-h100-x1 or nvidia-h200), in parts:
#   tests    the pcdag tests that need CUDA: test files that mention CUDA, tests whose id says cuda, gpu or spconv
#   lam3c    the LAM3C Base step (bench/lam3c_step.py, 2 scenes, spconv) on this checkout's code and on the code
#            before the issue's refactor (OLD, default .ref/old), alternating, PAIRS times (default 2)
#   spunet   bench/backbone_step.py --backbone sparse_unet --impl both: pcdag's SparseUNet (preset 34c, spconv)
#            against Pointcept's own SpUNet-v1m1, AMP fp16, 2 scenes x 100k points (pcdag's side is skipped with
#            a message while the SparseUNet node is not registered)
#   bash bench/issue13_gpu.sh [tests] [lam3c] [spunet]      (default: all three)
# Prepare here, then carry .devbundle, .devdata and .ref:
#   ../shared/device/make-bundle.sh .devbundle plyfile       Python packages the GPU machine lacks (spconv, zarr, ...)
#   a store of 5 scannet-mini training scans at .devdata/store: `pcdag preprocess graphs/scannet.yaml
#     --set scans.root=ROOT --set 'scans.splits=[train]' --set store.path=.devdata/store` (ROOT: a folder whose
#     train/ holds links to 5 scans of ../shared/data/scannet-mini/train)
#   bash bench/ref_spunet.sh                                 .ref/pointcept_spunet (Pointcept's model file)
#   mkdir -p .ref/old && git archive 02f8af7 pcdag | tar -x -C .ref/old    the code before the refactor
# One JSON line per measurement in $OUT/issue13.jsonl (LAM3C lines gain "code": "new" | "old"); test output in
# $OUT/tests.txt; errors in $OUT/errors.txt.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/site
tar xJf .devbundle/site.tar.xz -C /tmp/site || { echo "no .devbundle/site.tar.xz: carry it" >&2; exit 2; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
STORE=${STORE:-$PWD/.devdata/store} OLD=${OLD:-$PWD/.ref/old} PAIRS=${PAIRS:-2}
JSON=$OUT/issue13.jsonl
# b SECONDS TAG CMD...: run CMD with a time limit, its JSON lines tagged (TAG: a JSON fragment or empty) to $JSON
b() {
  local limit=$1 tag=$2
  shift 2
  timeout "$limit" "$@" 2>>"$OUT/errors.txt" | sed -u "s/^{/{${tag}/" | tee -a "$JSON"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || echo "{${tag}\"failed\": \"exit $rc: $*\"}" | tee -a "$JSON"
}
python3 - <<'EOF' | tee -a "$JSON"
import json, torch, spconv
print(json.dumps({"bench": "environment", "torch": torch.__version__, "spconv": spconv.__version__,
                  "gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda}))
EOF
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(tests lam3c spunet)
for part in "${parts[@]}"; do
  case $part in
    tests)
      mapfile -t files < <(grep -l -E "cuda\.is_available|device=.cuda" tests/test_*.py)
      # pyproject's addopts already has -q; a second -q would drop the "N passed" line read below
      timeout 240 python3 -m pytest -p no:cacheprovider -k "cuda or gpu or spconv" "${files[@]}" >"$OUT/tests.txt" 2>&1
      rc=$?
      summary=$(grep -E "[0-9]+ (passed|failed|error|deselected)|no tests ran" "$OUT/tests.txt" | tail -1)
      echo "{\"bench\": \"cuda_tests\", \"exit\": $rc, \"files\": ${#files[@]}, \"summary\": \"${summary//\"/}\"}" |
        tee -a "$JSON" ;;
    lam3c)
      [ -d "$OLD/pcdag" ] || echo "{\"bench\": \"lam3c_step\", \"failed\": \"no old code at $OLD\"}" | tee -a "$JSON"
      args=(bench/lam3c_step.py --preset base --scenes 2 --backend spconv --store "$STORE")
      for _ in $(seq "$PAIRS"); do
        b 240 '"code": "new", ' env PYTHONPATH="/tmp/site:$PWD" python3 "${args[@]}"
        [ -d "$OLD/pcdag" ] && b 240 '"code": "old", ' env PYTHONPATH="/tmp/site:$OLD" python3 "${args[@]}"
      done ;;
    spunet)
      b 300 '' python3 bench/backbone_step.py --backbone sparse_unet --impl both --preset 34c --backend spconv \
        --steps "${SPUNET_STEPS:-20}" --rounds "${SPUNET_ROUNDS:-3}" ;;
    *) echo "unknown part $part (tests, lam3c, spunet)" >&2; exit 2 ;;
  esac
done
tail -20 "$OUT/errors.txt" 2>/dev/null
