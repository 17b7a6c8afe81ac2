#!/usr/bin/env bash
# One GPU call (about 6 minutes): the generation benchmark's follow-up items (rows written as they
# are measured), then the plot of every generate-*.jsonl row in benchmarks/results and $OUT.
# Logs, JSONL rows and the plot go to $OUT (default benchmarks/results).
#   bash benchmarks/make_peers.sh            # (here, once) repeng / steering-vectors into .peers/
#   bash benchmarks/run_generate_gpu.sh
#   RUN_TESTS=1 bash benchmarks/run_generate_gpu.sh        # also the engine's CUDA test first
#   ITEMS='llama-3.2-1b/engine:*@1' bash benchmarks/run_generate_gpu.sh   # other items
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

if [ "${RUN_TESTS:-0}" = 1 ]; then
  timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -p no:cacheprovider -p no:logging -q -s -rs tests/test_engine.py \
    -k gpu 2>&1 | tee "$OUT/tests-generate-$tag.txt" | tail -15
  echo "after tests: $(( $(date +%s) - start )) s"
fi

# engine items first (engines are closed before the other paths), then transformers' paths on the
# untouched model, the peers, and the 8B shape last (cut by the deadline if time is short)
ONE=llama-3.2-1b EIGHT=llama-3.1-8b
ITEMS=${ITEMS:-"$ONE/engine:unsteered@1,$ONE/engine-plain:unsteered@1,$ONE/engine:distinct-mix@64,\
$ONE/hf-compiled:unsteered@1,$ONE/hf-compiled:unsteered@64,$ONE/hf-eager:unsteered@64,$ONE/hf-eager:hook-add@64,\
$ONE/repeng:shared@64,$ONE/steering-vectors:shared@64,$EIGHT/engine:unsteered@64,$EIGHT/engine:distinct-mix@64"}
left=$(( ${TOTAL_S:-350} - ($(date +%s) - start) ))
deadline=$(( left - 90 ))  # the last item started (an 8B one with its compile) must still end
[ "$deadline" -lt 60 ] && deadline=60
timeout "$(( left - 10 ))" python3 benchmarks/bench_generate.py --deadline "$deadline" --out "$OUT" \
  --shapes "$ONE,$EIGHT" --batches 1,64 --variants "$ITEMS" ${BENCH_ARGS:-} \
  2>&1 | grep -v -i "warn" | tee "$OUT/generate-$tag.txt"
echo "after benchmark: $(( $(date +%s) - start )) s"

files=$( (ls benchmarks/results/generate-*.jsonl; ls "$OUT"/generate-*.jsonl) 2>/dev/null | sort -u | paste -sd, -)
[ -n "$files" ] && python3 benchmarks/bench_generate.py --plot-from "$files" --plot "$OUT/generate-$tag.png"
