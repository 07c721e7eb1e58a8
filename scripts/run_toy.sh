#!/usr/bin/env bash
# Sets up the machine and runs the embedded default experiment (config/toy.py) end to end with the manager.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/sis manager --run config/toy.py
cat output/toy/report/results.md
