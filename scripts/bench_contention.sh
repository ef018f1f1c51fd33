#!/usr/bin/env bash
# Speed on a busy CPU (not run by CI): start BUSY busy loops, let the load average rise, then run
# `isr bench dynamics --model direct --drones 65536` with --threads 1, --threads 2 and the default
# (free-capacity) thread count, ROUNDS times interleaved; prints one JSON line per run with the
# 1-minute load average, and a summary of each setting's speed relative to one thread.
#
#   scripts/bench_contention.sh [BUSY] [ROUNDS] [WARM_S]     (defaults: 4 busy loops, 2 rounds, 60 s)
#
# Compare another commit by pointing ISR at its virtualenv's isr, or PYTHONPATH at its src/*.
set -euo pipefail
cd "$(dirname "$0")/.."
BUSY="${1:-4}"; ROUNDS="${2:-2}"; WARM="${3:-60}"
ISR="${ISR:-.venv/bin/isr}"
[[ "$BUSY" =~ ^[0-9]+$ && "$ROUNDS" =~ ^[1-9][0-9]*$ && "$WARM" =~ ^[0-9]+$ ]] ||
  { echo "error: BUSY, ROUNDS and WARM_S must be integers (ROUNDS >= 1), got '$BUSY' '$ROUNDS' '$WARM'" >&2; exit 2; }
[[ -x "$ISR" ]] || { echo "error: $ISR not found; run make setup (or set ISR=path/to/isr)" >&2; exit 2; }
pids=()
cleanup() { [[ ${#pids[@]} -gt 0 ]] && kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 "$BUSY"); do python3 -c 'while True: pass' & pids+=($!); done
sleep "$WARM"
out="$(mktemp)"
for _ in $(seq 1 "$ROUNDS"); do
  for setting in "--threads 1" "--threads 2" ""; do
    # shellcheck disable=SC2086  # $setting is two words or none
    r="$("$ISR" bench dynamics --model direct --drones 65536 --seconds 4 --json $setting | tail -1)"
    line="{\"setting\": \"${setting:-default}\", \"load_1min\": $(cut -d' ' -f1 /proc/loadavg), \"result\": $r}"
    echo "$line" | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
speed = {}
for r in runs:
    speed.setdefault(r["setting"], []).append(r["result"]["drone_steps_per_s"])
one = statistics.median(speed["--threads 1"])
print(json.dumps({
    "median_drone_steps_per_s": {k: round(statistics.median(v)) for k, v in speed.items()},
    "relative_to_one_thread": {k: round(statistics.median(v) / one, 3) for k, v in speed.items()},
    "load_1min": [r["load_1min"] for r in runs],
}))
PY
rm -f "$out"
