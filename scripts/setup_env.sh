#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install yolo-attn into it, non-editable, as a user gets it.
# The heavy dependencies are installed once and reused while pyproject.toml and this script are unchanged; the
# package itself is rebuilt and reinstalled on every run (a few seconds), so the environment always holds this tree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${YOLO_ATTN_VENV:-.venv}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_PINS=${YOLO_ATTN_TORCH:-"torch==2.14.1 torchvision==0.29.1"}
# Another Ultralytics release than the newest the metadata allows (the compatibility run: scripts/compat.sh)
UL_PIN=${YOLO_ATTN_ULTRALYTICS:+ultralytics==$YOLO_ATTN_ULTRALYTICS}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

stamp="$VENV/.yolo-attn-deps"
want=$( (cat pyproject.toml scripts/setup_env.sh; echo "$TORCH_PINS $UL_PIN") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] installing dependencies ($TORCH_PINS, ${UL_PIN:-ultralytics}, dev tools)"
    "${PIP[@]}" install -q $TORCH_PINS
    "${PIP[@]}" install -q ".[dev]" $TORCH_PINS $UL_PIN
    echo "$want" > "$stamp"
fi
echo "[setup] installing yolo-attn from $(pwd)"
"${PIP[@]}" install -q --no-deps --no-build-isolation --force-reinstall .
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
print("[setup] ready: " + ", ".join(f"{p} {md.version(p)}" for p in ("yolo-attn", "ultralytics", "torch", "torchvision")))
PY
