#!/usr/bin/env bash
# The original plan's one script: fast training -> full-fidelity evaluation -> recording ->
# annotated videos -> HTML report, with no manual step.
#
#   scripts/run_full_pipeline.sh NAME [STEPS] [EPISODES] [extra isr pipeline flags...]
#
#   NAME      experiment name: everything lands in experiments/NAME_<YYYYmmdd_HHMMSS>/
#   STEPS     RL env-steps of the fine-tuning (default: the quick preset's 450000)
#   EPISODES  evaluation episodes per held-out world (default 1)
#
# Examples:
#   scripts/run_full_pipeline.sh demo
#   scripts/run_full_pipeline.sh demo 200000 2 --world-seeds 100000-100007
#   PRESET=standard scripts/run_full_pipeline.sh big 20000000
#   scripts/run_full_pipeline.sh "" "" "" --resume experiments/demo_20260101_120000
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 ]]; then
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
name=$1
steps=${2:-}
episodes=${3:-}
shift $(( $# < 3 ? $# : 3 ))

if [[ -x .venv/bin/isr ]]; then
  ISR=.venv/bin/isr
elif command -v isr >/dev/null 2>&1; then
  ISR=isr
else
  echo "error: no isr command: run 'make setup' first (creates .venv)" >&2
  exit 2
fi

args=()
[[ -n "$name" ]] && args+=("$name" --preset "${PRESET:-quick}")
[[ -n "$steps" ]] && args+=(--steps "$steps")
[[ -n "$episodes" ]] && args+=(--episodes "$episodes")

export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # no busy-waiting on a shared CPU
exec "$ISR" pipeline "${args[@]}" "$@"
