#!/usr/bin/env bash
# SAE kernels on one GPU. Logs and JSONL rows go to $OUT (default benchmarks/results).
#   bash benchmarks/run_sae_gpu.sh            # install, the CUDA tests of the SAE op files, all
#                                             # SAE benchmarks (under 8 minutes)
#   QUICK=1 bash benchmarks/run_sae_gpu.sh    # no tests: the targets only (d = 4096, F = 65536,
#                                             # T = 4096 / 16384; sae_steer T = 1, 16, 4096), with the
#                                             # topk / decode / steer launch-config sweeps and result
#                                             # checks ("MISMATCH" lines), about 2 minutes at most
set -uo pipefail
OUT=${OUT:-benchmarks/results}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)
tag=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())" 2>/dev/null || echo gpu)
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
rm -f "$OUT/install.log"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
if [ "$QUICK" = "1" ]; then
  timeout -s INT 55 python3 benchmarks/bench_sae_encode_topk.py --T 4096,16384 --d 4096 --F 65536 --no-jumprelu --sweep \
      --deadline 35 \
      --out "$OUT" 2>&1 | tee "$OUT/bench-sae-encode-topk-quick-$tag.txt"
  echo "after topk: $(( $(date +%s) - start )) s"
  timeout -s INT 30 python3 benchmarks/bench_sae_decode.py --T 4096,16384 --d 4096 --F 65536 --sweep --deadline 15 \
      --out "$OUT" 2>&1 | tee "$OUT/bench-sae-decode-quick-$tag.txt"
  echo "after decode: $(( $(date +%s) - start )) s"
  timeout -s INT 30 python3 benchmarks/bench_sae_steer.py --T 1,16,4096 --d 4096 --sweep --deadline 20 \
      --out "$OUT" 2>&1 | tee "$OUT/bench-sae-steer-quick-$tag.txt"
  echo "total: $(( $(date +%s) - start )) s"
  exit 0
fi
( cd tests && timeout 190 python3 -m pytest -p no:cacheprovider -q -rs -n 8 test_sae_encode_topk.py \
    test_sae_encode_jumprelu.py test_sae_encode_selected.py test_sae_decode.py test_sae_steer.py ) 2>&1 \
  | tee "$OUT/tests-sae-$tag.txt" | tail -30
echo "after tests: $(( $(date +%s) - start )) s"
# benchmarks: T = 4096 and 16384 first (the targets), then the decode sizes
timeout 150 python3 benchmarks/bench_sae_encode_topk.py --T 4096,16384,1,64 --deadline 110 --out "$OUT" 2>&1 \
  | tee "$OUT/bench-sae-encode-topk-$tag.txt"
echo "after topk: $(( $(date +%s) - start )) s"
timeout 70 python3 benchmarks/bench_sae_decode.py --T 4096,16384,1,64 --deadline 45 --out "$OUT" 2>&1 \
  | tee "$OUT/bench-sae-decode-$tag.txt"
timeout 50 python3 benchmarks/bench_sae_steer.py --deadline 30 --out "$OUT" 2>&1 | tee "$OUT/bench-sae-steer-$tag.txt"
echo "total: $(( $(date +%s) - start )) s"
