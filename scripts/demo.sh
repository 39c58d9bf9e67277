#!/usr/bin/env bash
# Quick start: set up .venv (see setup_env.sh), then with the plain `yolo` command (no `import yolo_attn` anywhere)
# train a ready config briefly on the bundled 16-image COCO sample, validate it and print its mAP.
# Override with environment variables: MODEL=yolo11s-cbam.yaml EPOCHS=5 IMGSZ=320 DATA=/abs/path/data.yaml
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup_env.sh

export YOLO_OFFLINE=1  # nothing is downloaded
REPO=$(pwd)
MODEL=${MODEL:-yolov8n-ca.yaml}
EPOCHS=${EPOCHS:-3}
IMGSZ=${IMGSZ:-320}
DATA=${DATA:-$REPO/data/coco16/coco16.yaml}
OUT=$REPO/runs/demo
YOLO="$REPO/${YOLO_ATTN_VENV:-.venv}/bin/yolo"

cd "$(mktemp -d)"  # run from elsewhere: config names resolve from any directory
echo "[demo] yolo train model=$MODEL data=$DATA epochs=$EPOCHS imgsz=$IMGSZ"
"$YOLO" train model="$MODEL" data="$DATA" epochs="$EPOCHS" imgsz="$IMGSZ" batch=8 device=cpu workers=0 \
    project="$OUT" name=train exist_ok=True
echo "[demo] yolo val model=$OUT/train/weights/best.pt"
"$YOLO" val model="$OUT/train/weights/best.pt" data="$DATA" imgsz="$IMGSZ" batch=8 device=cpu \
    project="$OUT" name=val exist_ok=True 2>&1 | tee "$OUT/val.log"
awk '$1 == "all" { printf "[demo] %s after %s epochs at imgsz %s: mAP50 %s, mAP50-95 %s (%s images, %s boxes)\n", m, e, s, $6, $7, $2, $3 }' \
    m="$MODEL" e="$EPOCHS" s="$IMGSZ" "$OUT/val.log"
echo "[demo] weights and plots: $OUT (16 images from scratch show that it runs, not what a block is worth)"
