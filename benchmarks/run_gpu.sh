#!/usr/bin/env bash
# One GPU session: install, build the CUDA extension, run the test suite on the GPU, run the
# benchmarks. Logs and JSONL rows go to $OUT (default benchmarks/results).
#   bash benchmarks/run_gpu.sh [test] [bench] [compile]     (default: all three)
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
stages=${*:-test bench compile}
export PYTHONUNBUFFERED=1
tag=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())" 2>/dev/null || echo gpu)

python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
rm -f "$OUT/install.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
start=$(date +%s)
python3 -c "from steerkit import _cuda_ext; _cuda_ext.load(); print('CUDA extension loaded')" 2>&1 | tee "$OUT/build-$tag.txt"
echo "build: $(( $(date +%s) - start )) s"

for stage in $stages; do
  case $stage in
    test)
      timeout "${TEST_TIMEOUT:-420}" python3 -m pytest -p no:cacheprovider -n 8 -rs 2>&1 | tee "$OUT/tests-$tag.txt" | tail -25 ;;
    bench)
      timeout "${BENCH_TIMEOUT:-420}" steerkit bench --out "$OUT" 2>&1 | tee "$OUT/bench-$tag.txt" ;;
    compile)
      timeout "${COMPILE_TIMEOUT:-400}" steerkit bench-compile --backends triton,cuda --out "$OUT" 2>&1 | tee "$OUT/compile-$tag.txt" ;;
  esac
  echo "after $stage: $(( $(date +%s) - start )) s"
done
