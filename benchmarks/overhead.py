"""What a ready config costs on top of plain yolov8n: one training step and one inference, side by side.

    .venv/bin/python benchmarks/overhead.py [--rounds 3] [--steps 5] [--batch 8] [--imgsz 320] [--configs a,b]

A training step is Ultralytics' own: model.loss on a real batch (the repository's COCO sample, letterboxed to imgsz,
real labels), backward, SGD step. Inference is the fused model (as predict and val run it) under no_grad. Every
config is timed in interleaved rounds with plain yolov8n (each round: every model once), and each ratio is taken to
yolov8n in the same round, then the median over rounds: these machines are noisy. Targets (issue 5): a channel-
preserving attention config's training step at most 1.10x plain yolov8n's, inference at most 1.05x. Writes
results/overhead.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "data" / "coco16"
TRAIN_TARGET, INFER_TARGET = 1.10, 1.05


def real_batch(batch: int, imgsz: int) -> dict:
    """``batch`` COCO images (stretched to imgsz) and their labels, in the layout Ultralytics' loss expects."""
    import cv2

    images = sorted((SAMPLE / "images" / "train2017").glob("*.jpg"))[:batch]
    imgs, idx, cls, boxes = [], [], [], []
    for i, path in enumerate(images):
        img = cv2.resize(cv2.imread(str(path)), (imgsz, imgsz))[..., ::-1]
        imgs.append(torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255)
        label = SAMPLE / "labels" / "train2017" / (path.stem + ".txt")
        rows = np.loadtxt(label, ndmin=2) if label.is_file() else np.zeros((0, 5))
        idx += [i] * len(rows)
        cls += rows[:, :1].tolist()
        boxes += rows[:, 1:5].tolist()
    return {
        "img": torch.stack(imgs),
        "batch_idx": torch.tensor(idx, dtype=torch.float32),
        "cls": torch.tensor(cls, dtype=torch.float32).view(-1, 1),
        "bboxes": torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
    }


def median_ms(fn, steps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def kind_of(model) -> str:
    """'attention' when every yolo_attn layer of the model is a channel-preserving block the config inserted."""
    from yolo_attn import registry

    ours = [type(m).__name__ for m in model.model if type(m).__module__.startswith("yolo_attn")]
    specs = [registry.get(n) for n in ours]
    if ours and all(s is not None and s.rule is registry.same_width and s.kind == "attention" for s in specs):
        return "attention"
    return "other"


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--configs", help="comma-separated yolov8n configs (default: every yolov8 ready config)")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import ultralytics
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG
    from ultralytics.utils.torch_utils import get_flops

    import yolo_attn

    names = args.configs.split(",") if args.configs else [
        p.name.replace("-", "n-", 1) for p in sorted(yolo_attn.MODEL_YAMLS.glob("yolov8-*.yaml"))
    ]
    names = ["yolov8n.yaml"] + names
    batch = real_batch(args.batch, args.imgsz)
    x = batch["img"]
    hyp = get_cfg(DEFAULT_CFG)
    train_models, infer_models, info = {}, {}, {}
    for n in names:
        torch.manual_seed(0)
        m = DetectionModel(n, nc=80, verbose=False)
        m.args = hyp
        infer = DetectionModel(n, nc=80, verbose=False).eval().fuse(verbose=False)
        train_models[n], infer_models[n] = m.train(), infer
        info[n] = {"params": sum(p.numel() for p in m.parameters()), "gflops": get_flops(infer, args.imgsz),
                   "kind": kind_of(m) if n != "yolov8n.yaml" else "base"}  # fmt: skip

    def train_step(m, opt):
        def step():
            opt.zero_grad(set_to_none=True)
            loss, _ = m.loss(batch)
            loss.sum().backward()
            opt.step()

        return step

    opts = {n: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for n, m in train_models.items()}
    ratios = {n: {"train": [], "infer": [], "train_ms": [], "infer_ms": []} for n in names}
    for r in range(args.rounds):
        base = {}
        for n in names:
            tr = median_ms(train_step(train_models[n], opts[n]), args.steps)
            with torch.no_grad():
                inf = median_ms(lambda: infer_models[n](x), args.steps)
            if n == "yolov8n.yaml":
                base = {"train": tr, "infer": inf}
            ratios[n]["train_ms"].append(tr)
            ratios[n]["infer_ms"].append(inf)
            ratios[n]["train"].append(tr / base["train"])
            ratios[n]["infer"].append(inf / base["infer"])
            print(f"round {r + 1}/{args.rounds} {n:<28} train {tr:8.1f} ms  infer {inf:7.1f} ms", flush=True)

    env = (f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {args.threads} threads, "
           f"torch {torch.__version__}, ultralytics {ultralytics.__version__}, batch {args.batch}, imgsz "
           f"{args.imgsz}, CPU; {args.rounds} interleaved rounds, median of {args.steps} per model and round")  # fmt: skip
    base = info["yolov8n.yaml"]
    lines = [
        "# Ready yolov8n configs: overhead over plain yolov8n",
        "",
        env + ".",
        "",
        "| config | kind | params x | GFLOPs x | train step ms | train x | inference ms | inference x | targets |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for n in names:
        q = ratios[n]
        tr, inf = statistics.median(q["train"]), statistics.median(q["infer"])
        px, gx = info[n]["params"] / base["params"], info[n]["gflops"] / base["gflops"]
        if info[n]["kind"] != "attention":
            verdict = "" if n == "yolov8n.yaml" else "not a channel-preserving attention config (no target)"
        elif tr <= TRAIN_TARGET and inf <= INFER_TARGET:
            verdict = "met"
        elif gx > INFER_TARGET:
            verdict = f"missed: the blocks add {gx - 1:.0%} FLOPs (compute, not memory passes)"
        else:
            verdict = "missed: memory passes over full-resolution maps (see passes.md)"
        lines.append(
            f"| {n} | {info[n]['kind']} | {px:.3f} | {gx:.3f} | {statistics.median(q['train_ms']):.0f} | {tr:.3f} | "
            f"{statistics.median(q['infer_ms']):.1f} | {inf:.3f} | {verdict} |"
        )
    lines += [
        "",
        f"Targets: training step <= {TRAIN_TARGET}x and inference <= {INFER_TARGET}x plain yolov8n, for configs that "
        "insert channel-preserving attention blocks. Ratios are per round against yolov8n timed in the same round, "
        "median over rounds. GFLOPs are Ultralytics' own count (thop), which does not count deformable sampling.",
    ]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overhead.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
