#!/usr/bin/env bash
# Starts the local Slurm and SGE used by the engine tests; a failure of one does not stop the other.
cd "$(dirname "$0")"
rc=0
bash start_slurm.sh || { echo "slurm not started" >&2; rc=1; }
bash start_sge.sh || { echo "sge not started" >&2; rc=1; }
exit $rc
