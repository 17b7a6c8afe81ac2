#!/usr/bin/env bash
# The GPU path of the vLLM plugin without vLLM (it cannot be installed on the GPU machine): the
# steering op's CPU-free unit tests on CUDA, then the harness with vLLM's (hidden_states, residual)
# contract, torch.compile + CUDA graphs, batch 1/64/256. Fits in 5 minutes on an H100.
#   bash benchmarks/run_vllm_gpu.sh            (logs and JSONL rows under $OUT, default benchmarks/results)
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install-vllm.log" 2>&1 || { cat "$OUT/install-vllm.log"; exit 1; }
start=$(date +%s)
timeout 60 python3 -m pytest -p no:cacheprovider -q -k "steer_split or worker_rows" tests/test_vllm.py 2>&1 | tail -5
timeout 230 python3 benchmarks/bench_vllm_harness.py --out "$OUT" 2>&1 | tee "$OUT/vllm-harness-h100.txt"
echo "total: $(( $(date +%s) - start )) s"
