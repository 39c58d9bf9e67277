"""What Selective Query Recollection costs on RT-DETR-l, and a short run with and without it.

    .venv/bin/python benchmarks/sqr.py cost   [--pairs 6] [--batch 4] [--imgsz 320]
    .venv/bin/python benchmarks/sqr.py curves [--epochs 30] [--imgsz 160] [--data data/coco16/coco16.yaml]

cost: rtdetr-l.yaml and rtdetr-l-sqr.yaml with the same weights. A training step is Ultralytics' own (model.loss on
a real COCO batch with its labels, backward, SGD step), timed in pairs, alternating which model goes first, and the
ratio is the median of the per-pair ratios (overhead.py's method). Inference is the fused eval model under no_grad,
timed the same way (expected 1.0: SQR does not touch inference). Peak memory of a training step: each model runs
its steps in a process of its own, and the table gives how far the peak resident memory during the steps rises
above what the process holds between steps, after one warm-up step (CPU, the kernel's VmHWM reset through
/proc/self/clear_refs; on a GPU torch.cuda.max_memory_allocated would be the measure). Writes results/sqr.md (the cost part).

curves: `yolo train` of both configs on the COCO sample, same recipe and seed, one after the other (a finished run is
kept: rerunning resumes the missing one, or an interrupted one through Ultralytics' resume=True). The losses plotted
are Ultralytics' three main RT-DETR losses (GIoU, class, L1), which come from the last decoder stage's plain chain in
both models, so the curves compare. Writes results/sqr_loss.png and the curves part of results/sqr.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from overhead import paired_ms, quartiles, real_batch  # noqa: E402

CONFIGS = ("rtdetr-l.yaml", "rtdetr-l-sqr.yaml")


def build(name: str, state=None):
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import RTDETRDetectionModel
    from ultralytics.utils import DEFAULT_CFG

    torch.manual_seed(0)
    m = RTDETRDetectionModel(name, nc=80, verbose=False)
    if state is not None:
        m.load_state_dict(state)
    m.nc, m.args = 80, get_cfg(DEFAULT_CFG)
    return m


def train_step(m, batch):
    opt = torch.optim.SGD(m.parameters(), lr=1e-5, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = m.loss(batch)
        loss.backward()
        opt.step()

    return step


def infer_step(m, x):
    def step():
        with torch.no_grad():
            m(x)

    return step


MEMORY = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import sqr

def status(key):  # kB, from /proc/self/status
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":"))

torch.set_num_threads(int(sys.argv[6]))
m = sqr.build(sys.argv[2])
b = sqr.real_batch(int(sys.argv[3]), int(sys.argv[4]))
step = sqr.train_step(m.train(), b)
step()  # the optimizer state and the allocator's pools exist from here on
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS")
for _ in range(int(sys.argv[5])):
    step()
print(json.dumps({"before": before, "peak": status("VmHWM")}))
"""


def peak_memory(name: str, batch: int, imgsz: int, steps: int, threads: int) -> dict:
    """In a process of its own: how far a training step raises the resident memory (MiB) above what the process
    holds between steps (model, gradients, optimizer state, after one warm-up step)."""
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    cmd = [sys.executable, "-c", MEMORY, str(HERE), name, str(batch), str(imgsz), str(steps), str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"before_mib": r["before"] / 1024, "peak_mib": r["peak"] / 1024, "growth_mib": (r["peak"] - r["before"]) / 1024}


def cost(args) -> list[str]:
    import ultralytics
    from ultralytics.utils.torch_utils import get_flops

    torch.set_num_threads(args.threads)
    batch = real_batch(args.batch, args.imgsz)
    plain = build(CONFIGS[0])
    sqr = build(CONFIGS[1], plain.state_dict())
    fused = {n: build(n, plain.state_dict()).eval().fuse(verbose=False) for n in CONFIGS}
    gflops = {n: get_flops(m, args.imgsz) for n, m in fused.items()}
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in ((CONFIGS[0], plain), (CONFIGS[1], sqr))}
    ta, tb = paired_ms(train_step(plain.train(), batch), train_step(sqr.train(), batch), args.pairs)
    ia, ib = paired_ms(infer_step(fused[CONFIGS[0]], batch["img"]), infer_step(fused[CONFIGS[1]], batch["img"]), args.pairs * 2)
    train_x = [b / a for a, b in zip(ta, tb)]
    infer_x = [b / a for a, b in zip(ia, ib)]
    mem = {n: peak_memory(n, args.batch, args.imgsz, 2, args.threads) for n in CONFIGS}
    mem_x = mem[CONFIGS[1]]["growth_mib"] / mem[CONFIGS[0]]["growth_mib"]
    env = (f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {args.threads} threads, torch "
           f"{torch.__version__}, ultralytics {ultralytics.__version__}, batch {args.batch}, imgsz {args.imgsz}, CPU, "
           f"{args.pairs} paired training steps and {args.pairs * 2} paired inferences")  # fmt: skip
    tq, iq = quartiles(train_x), quartiles(infer_x)
    lines = [
        "## Cost: RT-DETR-l with and without SQR (selective), same weights",
        "",
        env + ".",
        "",
        "| | rtdetr-l.yaml | rtdetr-l-sqr.yaml | ratio (IQR of pair ratios) |",
        "|---|---:|---:|---|",
        f"| parameters | {params[CONFIGS[0]]:,} | {params[CONFIGS[1]]:,} | {params[CONFIGS[1]] / params[CONFIGS[0]]:.3f} |",
        f"| GFLOPs (inference, imgsz {args.imgsz}) | {gflops[CONFIGS[0]]:.1f} | {gflops[CONFIGS[1]]:.1f} | "
        f"{gflops[CONFIGS[1]] / gflops[CONFIGS[0]]:.3f} |",
        f"| training step ms (median) | {statistics.median(ta):.0f} | {statistics.median(tb):.0f} | "
        f"{statistics.median(train_x):.2f} ({tq[0]:.2f}-{tq[1]:.2f}) |",
        f"| inference ms (median) | {statistics.median(ia):.1f} | {statistics.median(ib):.1f} | "
        f"{statistics.median(infer_x):.3f} ({iq[0]:.3f}-{iq[1]:.3f}) |",
        f"| training step peak memory growth MiB | {mem[CONFIGS[0]]['growth_mib']:.0f} | "
        f"{mem[CONFIGS[1]]['growth_mib']:.0f} | {mem_x:.2f} |",
        "",
        "The training step includes Ultralytics' Hungarian matching (scipy, on the CPU), run once per supervised set: "
        "7 times for plain RT-DETR (the encoder's and 6 stages), 33 times with SQR; denoising queries need none.",
    ]
    (Path(args.out) / "sqr_cost.json").write_text(json.dumps(
        {"env": env, "train_ms": [ta, tb], "infer_ms": [ia, ib], "memory": mem, "gflops": gflops, "params": params}))
    return lines


def curves(args) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    work = Path(args.out) / "sqr_runs"
    work.mkdir(parents=True, exist_ok=True)
    yolo = Path(sys.executable).with_name("yolo")
    data = Path(args.data).resolve()
    rows = {}
    for cfg in CONFIGS:
        name = cfg.removesuffix(".yaml")
        run = work / name
        results = run / "results.csv"
        done = results.is_file() and len(list(csv.DictReader(results.open()))) >= args.epochs
        if not done:
            last = run / "weights" / "last.pt"
            cmd = [str(yolo), "train", f"model={last}", "resume=True"] if last.is_file() else [
                str(yolo), "train", f"model={cfg}", f"data={data}", f"epochs={args.epochs}", f"imgsz={args.imgsz}",
                f"batch={args.batch}", "device=cpu", "workers=0", "seed=0", "deterministic=True", "optimizer=AdamW",
                "lr0=0.0001", "warmup_epochs=0", "plots=False", f"project={work}", f"name={name}", "exist_ok=True"]  # fmt: skip
            t = time.time()
            subprocess.run(cmd, check=True, cwd=work, env={**os.environ, "YOLO_OFFLINE": "1"})
            (run / "wall_s.txt").write_text(f"{time.time() - t:.0f}\n")
        rows[cfg] = [{k.strip(): float(v) for k, v in r.items()} for r in csv.DictReader(results.open())]
    keys = [("train/giou_loss", "train GIoU loss"), ("train/cls_loss", "train class loss"),
            ("train/l1_loss", "train L1 loss"), ("metrics/mAP50(B)", "val mAP50")]  # fmt: skip
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, (k, title) in zip(axes, keys):
        for cfg, style in zip(CONFIGS, ("-", "--")):
            ax.plot([r["epoch"] for r in rows[cfg]], [r[k] for r in rows[cfg]], style, label=cfg.removesuffix(".yaml"))
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(Path(args.out) / "sqr_loss.png", dpi=110)
    wall = {c: (work / c.removesuffix(".yaml") / "wall_s.txt") for c in CONFIGS}
    lines = [
        f"## Short run on the COCO sample ({data.name}), {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}",
        "",
        "Same recipe and seed for both (AdamW lr0 1e-4, no warm-up, from scratch). Losses are Ultralytics' three main "
        "RT-DETR losses, from the last stage's plain chain in both models. Plot: sqr_loss.png.",
        "",
        "| config | wall s | " + " | ".join(t for _, t in keys) + " (first -> last epoch) |",
        "|---|---:|" + "---|" * len(keys),
    ]
    for cfg in CONFIGS:
        r = rows[cfg]
        w = wall[cfg].read_text().strip() if wall[cfg].is_file() else "?"
        lines.append(f"| {cfg} | {w} | " + " | ".join(f"{r[0][k]:.3f} -> {r[-1][k]:.3f}" for k, _ in keys) + " |")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["cost", "curves"])
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--imgsz", type=int, default=None, help="default: 320 for cost, 160 for curves")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--data", default=str(REPO / "data" / "coco16" / "coco16.yaml"))
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    args.imgsz = args.imgsz or (320 if args.what == "cost" else 160)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    lines = cost(args) if args.what == "cost" else curves(args)
    md = Path(args.out) / "sqr.md"
    parts = {}
    if md.is_file():  # keep the other part
        text = md.read_text()
        for chunk in text.split("\n## ")[1:]:
            parts["cost" if chunk.startswith("Cost") else "curves"] = "## " + chunk.rstrip("\n")
    parts[args.what] = "\n".join(lines)
    body = "\n\n".join(parts[k] for k in ("cost", "curves") if k in parts)
    md.write_text("# Selective Query Recollection on RT-DETR-l\n\n" + body + "\n")
    print(md.read_text())


if __name__ == "__main__":
    main()
