#!/usr/bin/env bash
# One GPU call (about 9 minutes): the engine's CUDA test, then the end-to-end generation benchmark
# (headline measurements first; rows written as they are measured), then the plot. Logs, JSONL
# rows and the plot go to $OUT (default benchmarks/results).
#   bash benchmarks/run_generate_gpu.sh                 # everything that fits in the deadline
#   BENCH_ARGS="--shapes llama-3.2-1b --batches 1,64" bash benchmarks/run_generate_gpu.sh
# repeng / steering-vectors are measured if importable: copy their packages (pure Python) into
# .peers/ and carry that folder; it is put on PYTHONPATH here.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
[ -d .peers ] && export PYTHONPATH="$PWD/.peers${PYTHONPATH:+:$PYTHONPATH}"
tag=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())" 2>/dev/null || echo gpu)
start=$(date +%s)

python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
rm -f "$OUT/install.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -p no:cacheprovider -p no:logging -q -s -rs tests/test_engine.py \
  -k gpu 2>&1 | tee "$OUT/tests-generate-$tag.txt" | tail -15
echo "after tests: $(( $(date +%s) - start )) s"

left=$(( ${TOTAL_S:-530} - ($(date +%s) - start) ))
deadline=$(( left - 110 ))  # the last measurement started (an 8B one with its compile) must still end
[ "$deadline" -lt 60 ] && deadline=60
timeout "$(( left - 10 ))" python3 benchmarks/bench_generate.py --deadline "$deadline" --out "$OUT" ${BENCH_ARGS:-} \
  2>&1 | grep -v -i "warn" | tee "$OUT/generate-$tag.txt"
echo "after benchmark: $(( $(date +%s) - start )) s"

files=$(ls "$OUT"/generate-*.jsonl 2>/dev/null | paste -sd, -)
[ -n "$files" ] && python3 benchmarks/bench_generate.py --plot-from "$files" --plot "$OUT/generate-$tag.png"
