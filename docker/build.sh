#!/usr/bin/env bash
# Build the ISR workspace container (the original plan's container build script).
#   docker/build.sh [TAG]            env: PX4_MSGS_BRANCH (release/1.15), TORCH_INDEX (CPU wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-isr-workspace:humble}"
docker build -f docker/Dockerfile \
  --build-arg "PX4_MSGS_BRANCH=${PX4_MSGS_BRANCH:-release/1.15}" \
  --build-arg "TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" \
  -t "$tag" .
echo "built $tag; run: docker run --rm -it --network=host $tag"
