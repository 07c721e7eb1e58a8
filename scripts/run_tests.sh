#!/usr/bin/env bash
# Sets up the machine (including the local Slurm and SGE daemons the engine tests use) and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
if [ -x .ci/cluster/start_all.sh ]; then bash .ci/cluster/start_all.sh || echo "cluster daemons not started: their tests will skip"; fi
.venv/bin/python -m pytest tests -q -p no:cacheprovider --timeout=900 "$@"
