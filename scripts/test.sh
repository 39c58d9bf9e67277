#!/usr/bin/env bash
# Set up the environment (see setup_env.sh) and run the test suite. Extra arguments go to pytest:
#   bash scripts/test.sh                # the default run (about 10 minutes on 2 cores)
#   bash scripts/test.sh --full         # every test: end-to-end runs and every sweep (CI, .ci/run)
#   bash scripts/test.sh -k attention -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
export YOLO_OFFLINE=1
# pytest, not `python -m pytest`: the tests import the installed package, not the source folder.
exec "${YOLO_ATTN_VENV:-.venv}/bin/pytest" -ra --durations=25 "$@"
