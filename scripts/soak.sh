#!/usr/bin/env bash
# Kill -9 soak of `isr train` (not run by CI): start a tiny training run, kill it with SIGKILL at a
# random moment, resume it, repeat; at the end the run must finish, its step count must equal the
# configured budget, and no temporary file of an atomic write may be left behind.
#
#   scripts/soak.sh [KILLS] [OUT_DIR]        (defaults: 8 kills, a fresh temporary directory)
#
# Needs the workspace's virtualenv (`make setup`). Prints one line per kill and a JSON summary.
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS="${1:-8}"
OUT="${2:-$(mktemp -d /tmp/isr_soak.XXXXXX)}"
ISR="${ISR:-.venv/bin/isr}"
[[ "$KILLS" =~ ^[0-9]+$ ]] || { echo "error: KILLS must be a non-negative integer, got '$KILLS'" >&2; exit 2; }
[[ -x "$ISR" ]] || { echo "error: $ISR not found; run make setup (or set ISR=path/to/isr)" >&2; exit 2; }
mkdir -p "$OUT"
STEPS=98304
SETS=(--set env.num_worlds=4 --set env.drones_per_world=4 --set data.num_worlds=4
      --set bc.epochs=3 --set rl.ppo.total_timesteps=$STEPS --set rl.ppo.num_steps=32
      --set rl.checkpoint_every_iterations=1 --set rl.eval_every_iterations=0
      --set rl.val_num_worlds=2 --set eval.num_worlds=2 --set eval.baselines=false)
log="$OUT/soak.log"
: >"$log"

"$ISR" train --preset quick --name soak --output-dir "$OUT" --no-progress "${SETS[@]}" >>"$log" 2>&1 &
pid=$!
exp=""
for i in $(seq 1 "$KILLS"); do
  sleep "$(awk -v s="$RANDOM" 'BEGIN{srand(s); printf "%.1f", 1 + 7 * rand()}')"
  [[ -z "$exp" ]] && exp="$(ls -d "$OUT"/soak_* 2>/dev/null | head -1 || true)"
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "kill $i: SIGKILL during ${exp:+stage }$(ls -t "$exp/logs" 2>/dev/null | head -1 | sed 's/\.log$//')${exp:+ }$(tail -c 200 "$exp/logs/$(ls -t "$exp/logs" 2>/dev/null | head -1)" 2>/dev/null | tr '\r' '\n' | tail -1 | cut -c1-80)"
  else
    wait "$pid" 2>/dev/null || true
    echo "kill $i: the run had already finished"
    break
  fi
  if [[ -n "$exp" ]]; then
    "$ISR" train --resume "$exp" --no-progress >>"$log" 2>&1 &
  else  # killed before the experiment directory existed: start again
    "$ISR" train --preset quick --name soak --output-dir "$OUT" --no-progress "${SETS[@]}" >>"$log" 2>&1 &
  fi
  pid=$!
done
wait "$pid" || { echo "error: the last resume failed; see $log" >&2; exit 1; }
[[ -n "$exp" ]] || exp="$(ls -d "$OUT"/soak_* | head -1)"
leftovers="$(find "$exp" -name '*.tmp' | wc -l)"
python3 - "$exp" "$STEPS" "$leftovers" <<'EOF'
import json, pathlib, sys
exp, budget, leftovers = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
summary = json.loads((exp / "SUMMARY.json").read_text())
steps = summary["training"]["rl_env_steps"]
print(json.dumps({"experiment": str(exp), "rl_steps": steps, "budget": budget,
                  "temporary_files_left": leftovers}))
ok = leftovers == 0 and steps >= budget
sys.exit(0 if ok else 1)
EOF
