#!/usr/bin/env bash
# Copy the peers the generation benchmark compares with (repeng, steering-vectors: pure Python)
# into .peers/ so that a GPU run can carry that folder (run_generate_gpu.sh puts it on PYTHONPATH).
# Also copied: gguf (pure Python; repeng imports it at import time). tqdm and yaml go to
# .peers/fallback, used only where the GPU machine lacks them. scikit-learn (compiled) is not
# copied: both peers import it only to train vectors; the benchmark registers stand-ins.
#   bash benchmarks/make_peers.sh [python]      (default: /tmp/venv/bin/python)
set -euo pipefail
PY=${1:-/tmp/venv/bin/python}
rm -rf .peers && mkdir -p .peers/fallback
dir() { "$PY" -c "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('$1').origin))"; }
for m in repeng steering_vectors gguf; do cp -r "$(dir $m)" .peers/; done
for m in tqdm yaml; do cp -r "$(dir $m)" .peers/fallback/; done
find .peers -name __pycache__ -prune -exec rm -rf {} + ; find .peers -name '*.so' -delete
du -sh .peers
