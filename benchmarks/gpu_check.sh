#!/usr/bin/env bash
# Issue 14's proof on a GPU, in one run with a hard time limit; every output goes to files.
#
#   benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--limit SECONDS]
#
# 1. the engine tests with the tiny model on the GPU (CUDA graphs on: the default there);
# 2. benchmarks/moshi_batch.py: random-weight 7B, >= 500 steps per batch size, up to the
#    memory fit, with max_memory_reserved, and each size's 1-live + (B-1)-masked step time;
# 3. end to end: xswarm-voice serving Kyutai's full-size 7B with RANDOM weights
#    ([voice.moshi] random_weights = true: built on the GPU in bf16 from moshi's own config,
#    no files), self-sized (slots = 0), then `xswarm bench` with as many Twilio calls as the
#    bridge chose slots, for 60 s; its /metrics after.
# Random weights at the real size cost the same arithmetic as trained ones: the figures are
# honest speed, the audio is noise. --dry-run does the same on CPU over the TINY architecture
# (random weights too) with few steps, to know the script works.
set -u
cd "$(dirname "$0")/.."
DRY=0; OUT=""; LIMIT=840
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    --limit) LIMIT="$2"; shift ;;
    *) echo "usage: $0 [--dry-run] [--out DIR] [--limit SECONDS]" >&2; exit 64 ;;
  esac
  shift
done
OUT="${OUT:-gpu-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
PY="${PYTHON:-.venv/bin/python}"
BIN="$(dirname "$PY")"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
left() { echo $(( LIMIT - ($(date +%s) - START) )); }
stage() {  # stage NAME SHARE_OF_WHAT_IS_LEFT_PERCENT COMMAND...
  local name="$1" share="$2"; shift 2
  local budget=$(( $(left) * share / 100 ))
  if [ "$budget" -lt 10 ]; then echo "$name: SKIPPED (time limit)" | tee -a "$OUT/summary.txt"; return; fi
  echo "== $name (up to ${budget}s)" | tee -a "$OUT/summary.txt"
  timeout --kill-after=10 "$budget" "$@" >"$OUT/$name.log" 2>&1
  echo "$name: exit $?" | tee -a "$OUT/summary.txt"
}

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; STEPS=5; BATCHES=1,2; CALLS=2; SECONDS_=5
else
  DEVICE=cuda; STEPS=500; BATCHES=1,8,16,24,32,40,48,64,80,96; CALLS=32; SECONDS_=60
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
fi
"$PY" -c 'import torch,sys; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' \
  >"$OUT/env.txt" 2>&1

export XSWARM_TEST_MOSHI_DEVICE="$DEVICE"
stage engine-tests 30 "$PY" -m pytest -q -p no:cacheprovider tests/engine -m moshi \
  -k "not bridge and not models_cmd"

if [ "$DRY" = 1 ]; then
  stage moshi-batch 40 "$PY" benchmarks/moshi_batch.py --device cpu --random --arch tiny \
    --dtype fp32 --context 64 --batches "$BATCHES" --steps "$STEPS" --warm-steps 2 --masked \
    --json "$OUT/moshi_batch.json"
else
  stage moshi-batch 60 "$PY" benchmarks/moshi_batch.py --device cuda --batches "$BATCHES" \
    --steps "$STEPS" --masked --json "$OUT/moshi_batch.json"
fi

# End to end: a bridge on a free port serving random weights, then xswarm bench against it.
MODEL="$OUT/model"; PORT=$(( 20000 + RANDOM % 20000 ))
"$PY" - "$MODEL" "$DEVICE" "$PORT" "$DRY" >"$OUT/config.toml" <<'PYEOF'
import sys
sys.path.insert(0, ".")
from tests.engine.tiny_moshi import build_tiny_moshi, tiny_moshi_toml
model, device, port, dry = sys.argv[1:5]
if dry == "1":  # the tiny architecture's config and tokenizer; its weight files are not used
    tiny = build_tiny_moshi(model)
    lines = {k: tiny[k] for k in ("config", "tokenizer", "top_k", "greedy")}
    # A shared CPU: the whole frame as the budget, few slots to size among.
    lines |= {"dtype": "fp32", "warmup_steps": 20, "context": 64, "step_budget_ms": 80}
    most = 4
else:  # Kyutai's 7B: moshi's own config, bf16, no tokenizer file (made-up word ids)
    lines = {"dtype": "bf16", "warmup_steps": 200}
    most = 64
lines |= {"random_weights": True, "device": device, "slots": 0}
print(f'[voice.bridge]\nengine = "moshi"\nport = {port}\nmax_concurrent_calls = {most}')
print(f'[paths]\nstate_dir = "{model}/state"')
print(tiny_moshi_toml(lines))
PYEOF
"$BIN/xswarm-voice" --config "$OUT/config.toml" >"$OUT/voice.log" 2>&1 &
VOICE=$!
for _ in $(seq 1 600); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$VOICE" 2>/dev/null || break
  sleep 1
done
# As many calls as the bridge sized itself for (warm-up's measured batch), when it says.
SLOTS=$(curl -fsS "http://127.0.0.1:$PORT/metrics" 2>/dev/null \
  | awk '$1 == "xswarm_engine_slots" {print int($2)}')
if [ "$DRY" = 0 ] && [ -n "$SLOTS" ] && [ "$SLOTS" -gt 0 ]; then CALLS=$SLOTS; fi
echo "bridge: ${SLOTS:-?} slots; bench: $CALLS calls" | tee -a "$OUT/summary.txt"
grep -E "warm-up|MOSHI ready|RANDOM|ERRO" "$OUT/voice.log" >>"$OUT/summary.txt" 2>/dev/null
stage bench 90 "$BIN/xswarm" bench --calls "$CALLS" --seconds "$SECONDS_" \
  --url "ws://127.0.0.1:$PORT" --json
curl -fsS "http://127.0.0.1:$PORT/metrics" >"$OUT/metrics.txt" 2>&1
kill "$VOICE" 2>/dev/null; wait "$VOICE" 2>/dev/null
echo "done in $(( $(date +%s) - START ))s; files in $OUT" | tee -a "$OUT/summary.txt"
