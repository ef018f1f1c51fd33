#!/usr/bin/env bash
# Run every benchmark of the README tables and print one JSON object per line.
#   scripts/bench_all.sh [--device cuda] [--seconds 3]     (> bench.jsonl to keep them)
set -euo pipefail
cd "$(dirname "$0")/.."
ISR=.venv/bin/isr
extra=("$@")
for n in 1 64 4096 65536; do
  $ISR bench dynamics --model direct --drones "$n" --json "${extra[@]}"
done
for n in 1 64 4096 65536; do
  $ISR bench dynamics --model quadrotor --drones "$n" --json "${extra[@]}"
done
