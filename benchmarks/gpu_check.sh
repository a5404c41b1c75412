#!/usr/bin/env bash
# Issue 14's proof on a GPU, in one run with a hard time limit; every output goes to files.
#
#   benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--limit SECONDS]
#
# 1. the engine tests with the tiny model on the GPU (CUDA graphs on: the default there);
# 2. benchmarks/moshi_batch.py: random-weight 7B, >= 500 steps per batch size, up to the
#    memory fit, with max_memory_reserved;
# 3. end to end: xswarm-voice serving `xswarm bench` Twilio calls for 60 s, its /metrics after.
# --dry-run does the same on CPU with the tiny model and few steps, to know the script works.
# Step 3 serves the tiny model files (random 7B files are not written yet): on a GPU it
# measures the bridge around a real batched engine, not the 7B's step.
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
  stage moshi-batch 40 "$PY" benchmarks/moshi_batch.py --device cpu --batches "$BATCHES" \
    --steps "$STEPS" --warm-steps 2 --json "$OUT/moshi_batch.json"
else
  stage moshi-batch 60 "$PY" benchmarks/moshi_batch.py --device cuda --batches "$BATCHES" \
    --steps "$STEPS" --json "$OUT/moshi_batch.json"
fi

# End to end: a bridge on a free port with the tiny model files, then xswarm bench against it.
MODEL="$OUT/model"; PORT=$(( 20000 + RANDOM % 20000 ))
"$PY" - "$MODEL" "$DEVICE" "$PORT" >"$OUT/config.toml" <<'PYEOF'
import sys
sys.path.insert(0, ".")
from tests.engine.tiny_moshi import build_tiny_moshi, tiny_moshi_toml
lines = build_tiny_moshi(sys.argv[1]) | {"device": sys.argv[2], "warmup_steps": 200}
print(f'[voice.bridge]\nengine = "moshi"\nport = {sys.argv[3]}\nmax_concurrent_calls = 64')
print(f'[paths]\nstate_dir = "{sys.argv[1]}/state"')
print(tiny_moshi_toml(lines))
PYEOF
"$BIN/xswarm-voice" --config "$OUT/config.toml" >"$OUT/voice.log" 2>&1 &
VOICE=$!
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$VOICE" 2>/dev/null || break
  sleep 1
done
stage bench 90 "$BIN/xswarm" bench --calls "$CALLS" --seconds "$SECONDS_" \
  --url "ws://127.0.0.1:$PORT" --json
curl -fsS "http://127.0.0.1:$PORT/metrics" >"$OUT/metrics.txt" 2>&1
kill "$VOICE" 2>/dev/null; wait "$VOICE" 2>/dev/null
echo "done in $(( $(date +%s) - START ))s; files in $OUT" | tee -a "$OUT/summary.txt"
