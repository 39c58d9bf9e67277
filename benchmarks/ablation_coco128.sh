#!/usr/bin/env bash
# The committed ablation on ../shared/datasets/coco128 (train2017 -> val2017), CPU. Rerun to resume: finished base
# trainings and finished ablation runs are kept. Results: benchmarks/results/ablation/ (work/ holds the weights).
#  1. bases from scratch, 60 epochs at imgsz 320: yolov8n (validated every epoch) and yolov8s (the capacity control's
#     own base), SGD lr0 0.01 (Ultralytics' "auto" picks AdamW at lr 0.000119 for runs this short);
#  2. six yolov8n block configs + base + control, fine-tuned 5 epochs from those bases with identity start, 3 seeds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export YOLO_OFFLINE=1
COCO=$(cd .. && pwd)/shared/datasets/coco128
[ -d "$COCO" ] || { echo "skipped: $COCO is absent (it sits beside the repository on CI machines)"; exit 0; }
W=$PWD/benchmarks/results/ablation/work
mkdir -p "$W"
sed "s#^path:.*#path: $COCO#" "$COCO/../coco128.yaml" > "$W/coco128.yaml"
Y=.venv/bin/yolo
R="data=$W/coco128.yaml imgsz=320 epochs=60 batch=16 seed=0 deterministic=True device=cpu workers=1 plots=False optimizer=SGD lr0=0.01 project=$W exist_ok=True"
base() {  # name, extra args: train, or resume an interrupted training, or keep a finished one
    local csv="$W/base-$1/results.csv"
    if [ -f "$csv" ] && [ "$(tail -1 "$csv" | cut -d, -f1 | tr -d ' ')" = 60 ]; then return; fi
    if [ -f "$W/base-$1/weights/last.pt" ]; then $Y train resume model="$W/base-$1/weights/last.pt" > "$W/base-$1.log" 2>&1
    else OMP_NUM_THREADS=1 $Y train model="$1.yaml" $R name="base-$1" "${@:2}" > "$W/base-$1.log" 2>&1; fi
}
base yolov8n & base yolov8s val=False & wait
cp "$W/base-yolov8n/results.csv" benchmarks/results/ablation/base-yolov8n-results.csv
cp "$W/base-yolov8s/results.csv" benchmarks/results/ablation/base-yolov8s-results.csv
.venv/bin/yolo-attn ablate yolov8n-ca.yaml yolov8n-simam.yaml yolov8n-cbam.yaml yolov8n-eca.yaml yolov8n-se.yaml \
  yolov8n-aff.yaml --data "$W/coco128.yaml" --pretrained "$W/base-yolov8n/weights/last.pt" \
  --control-pretrained "$W/base-yolov8s/weights/last.pt" --identity-start --seeds 3 --epochs 5 --imgsz 320 --batch 16 \
  --workers 2 --out benchmarks/results/ablation optimizer=SGD lr0=0.002 warmup_epochs=0 workers=1
