#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install yolo-attn into it, non-editable, as a user gets it.
# The heavy dependencies are installed once and reused while pyproject.toml and this script are unchanged; the
# package itself is rebuilt and reinstalled on every run (a few seconds), so the environment always holds this tree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${YOLO_ATTN_VENV:-.venv}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

stamp="$VENV/.yolo-attn-deps"
want=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing dependencies ($TORCH_PINS, ultralytics, dev tools)"
    "${PIP[@]}" install -q $TORCH_PINS
    "${PIP[@]}" install -q ".[dev]" $TORCH_PINS
    echo "$want" > "$stamp"
fi
echo "[setup] installing yolo-attn from $(pwd)"
"${PIP[@]}" install -q --no-deps --no-build-isolation --force-reinstall .
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
print("[setup] ready: " + ", ".join(f"{p} {md.version(p)}" for p in ("yolo-attn", "ultralytics", "torch", "torchvision")))
PY
