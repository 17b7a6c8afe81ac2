#!/usr/bin/env bash
# The probes written on a CPU-only session (2026-12-08, no GPU lent) that have not run yet, in one
# GPU call of about 8 minutes. Logs go to $OUT (default benchmarks/results); commit them with the
# commit that ran, then update docs/sae_ops.md, README and the notes from what they show.
#   bash benchmarks/run_pending_gpu.sh
# 1. TopK (issue 5): the filter epilogue in the wgmma accumulator layout ("ws s4 filter-mma",
#    no shared-memory round trip) beside the shared-memory filter ("ws s4 filter") and the plain
#    product, at d = 4096, F = 65536 and d = 2304, F = 16384, T = 4096; first the sm_90a SASS
#    counts of every variant (the same as on a CPU).
# 2. sae_steer (issue 5): 128- and 64-row sorted chunks against the default 256 at T = 4096 /
#    16384 (the d = 2304, T = 4096 random-row cell sits at 68.8-70.0% of its floor).
# 3. Compiled mix decode (issue 3): the lowering without per-row flags and direction counts
#    ("steerkit-mix-full") beside the shipped one and the plain hook, 1B shape cut to 8 blocks,
#    batch 16.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
start=$(date +%s)
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
rm -f "$OUT/install.log"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
run() {  # run LIMIT_S LOG command...: the log starts with the commit and the command
  local limit=$1 log=$2
  shift 2
  { echo "# commit $rev: $*"; timeout -s INT "$limit" "$@" 2>&1; } | tee "$OUT/$log"
  echo "after $log: $(( $(date +%s) - start )) s"
}
run 60 probe-topk-gluon-mma-sass.txt python3 benchmarks/probe_topk_gluon.py compile ws
run 150 probe-topk-gluon-mma-h100.txt python3 benchmarks/probe_topk_gluon.py quick ws
run 150 probe-sae-steer-chunks-h100.txt python3 benchmarks/probe_sae_steer.py large
run 200 probe-mix-full-1b-b16-h100.txt python3 benchmarks/probe_mix.py llama-3.2-1b 16 8
echo "total: $(( $(date +%s) - start )) s"
