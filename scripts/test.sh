#!/usr/bin/env bash
# Set up the environment (see setup_env.sh) and run the test suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -k attention -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh
export YOLO_OFFLINE=1
# pytest, not `python -m pytest`: the tests import the installed package, not the source folder.
exec "${YOLO_ATTN_VENV:-.venv}/bin/pytest" -ra "$@"
