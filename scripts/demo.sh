#!/usr/bin/env bash
# Installs forkscale into .venv and runs the end-to-end demo on the embedded vSphere twin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh ""
exec .venv/bin/forkscale demo "$@"
