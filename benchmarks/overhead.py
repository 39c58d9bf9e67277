"""What a ready config costs on top of its plain base (yolov8n by default): one training step and one inference, side by side.

    .venv/bin/python benchmarks/overhead.py [--pairs 15] [--batch 8] [--imgsz 320] [--configs a,b] [--base yolo26n.yaml]

A training step is Ultralytics' own: model.loss on a real batch (the repository's COCO sample, letterboxed to imgsz,
real labels), backward, SGD step. Inference is the fused model (as predict and val run it) under no_grad. Each config
is timed in pairs with plain yolov8n, step by step (base, config; then config, base; ...), and its ratio is the median
of the per-pair ratios: a training step here varies by 10-20% from one step to the next (allocation, the assigner), so
only steps timed next to each other compare. The table gives the spread (interquartile range of the pair ratios) too.
Targets (issue 5): a channel-preserving attention config's training step at most 1.10x plain yolov8n's, inference at
most 1.05x. Writes results/overhead.md (base yolov8n), or results/overhead_<base>.md for another --base, whose
configs default to that family's ready configs at its scale (yolo26n.yaml: every yolo26 ready config at n).
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


def paired_ms(a, b, pairs: int) -> tuple[list[float], list[float]]:
    """Times of ``a`` and ``b`` (ms), run next to each other ``pairs`` times, alternating which goes first."""
    a(), b()  # warm-up
    ta, tb = [], []
    for i in range(pairs):
        for fn, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1e3)
    return ta, tb


def block_share(model, x, runs: int = 5) -> float:
    """Fraction of the model's inference time spent inside yolo_attn layers (forward hooks around each)."""
    spent = 0.0

    def enter(*_):
        nonlocal spent
        spent -= time.perf_counter()

    def leave(*_):
        nonlocal spent
        spent += time.perf_counter()

    ours = [m for m in model.model if type(m).__module__.startswith("yolo_attn")]
    hooks = [m.register_forward_pre_hook(enter) for m in ours] + [m.register_forward_hook(leave) for m in ours]
    with torch.no_grad():
        model(x)
        spent = 0.0
        t = time.perf_counter()
        for _ in range(runs):
            model(x)
        total = time.perf_counter() - t
    for h in hooks:
        h.remove()
    return spent / total


def quartiles(v: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0], v[0], v[0]]
    return q[0], q[2]


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
    ap.add_argument("--pairs", type=int, default=15, help="paired steps per config and kind")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--configs", help="comma-separated configs (default: every ready config of the base's family)")
    ap.add_argument("--base", default="yolov8n.yaml", help="the plain model to compare with (default yolov8n.yaml)")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import ultralytics
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG
    from ultralytics.utils.torch_utils import get_flops

    import yolo_attn

    base_name = args.base
    family, scale = base_name.removesuffix(".yaml")[:-1], base_name.removesuffix(".yaml")[-1]
    names = args.configs.split(",") if args.configs else [
        p.name.replace("-", f"{scale}-", 1) for p in sorted(yolo_attn.MODEL_YAMLS.glob(f"{family}-*.yaml"))
    ]
    names = [base_name] + names
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
                   "kind": kind_of(m) if n != base_name else "base"}  # fmt: skip

    def train_step(m, opt):
        def step():
            opt.zero_grad(set_to_none=True)
            loss, _ = m.loss(batch)
            loss.sum().backward()
            opt.step()

        return step

    def infer_step(m):
        def step():
            with torch.no_grad():
                m(x)

        return step

    opts = {n: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for n, m in train_models.items()}
    res = {n: {} for n in names}
    for n in names[1:]:
        for kind, a, b in (
            ("train", train_step(train_models[base_name], opts[base_name]), train_step(train_models[n], opts[n])),
            ("infer", infer_step(infer_models[base_name]), infer_step(infer_models[n])),
        ):
            ta, tb = paired_ms(a, b, args.pairs)
            res[n][kind] = [y / x for x, y in zip(ta, tb)]
            res[n][kind + "_ms"] = statistics.median(tb)
            res[base_name].setdefault(kind + "_ms_all", []).extend(ta)
        res[n]["share"] = block_share(infer_models[n], x)
        print(f"{n:<28} train x {statistics.median(res[n]['train']):.3f}  infer x "
              f"{statistics.median(res[n]['infer']):.3f}", flush=True)  # fmt: skip
    for kind in ("train", "infer"):
        res[base_name][kind] = [1.0]
        res[base_name][kind + "_ms"] = statistics.median(res[base_name].get(kind + "_ms_all", [float("nan")]))

    env = (f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {args.threads} threads, "
           f"torch {torch.__version__}, ultralytics {ultralytics.__version__}, batch {args.batch}, imgsz "
           f"{args.imgsz}, CPU; {args.pairs} paired steps per config and kind")  # fmt: skip
    base = info[base_name]
    lines = [
        f"# Ready {base_name.removesuffix('.yaml')} configs: overhead over plain {base_name.removesuffix('.yaml')}",
        "",
        env + ".",
        "",
        "| config | kind | params x | GFLOPs x | train step ms | train x | train x IQR | inference ms | inference x "
        "| inference x IQR | blocks' share of inference | targets |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---|---:|---|",
    ]
    for n in names:
        q = res[n]
        tr, inf = statistics.median(q["train"]), statistics.median(q["infer"])
        px, gx = info[n]["params"] / base["params"], info[n]["gflops"] / base["gflops"]
        quart = {k: quartiles(q[k]) for k in ("train", "infer")}
        iqr = {k: "{:.3f}-{:.3f}".format(*quart[k]) if n != base_name else "" for k in quart}
        if info[n]["kind"] != "attention":
            verdict = "" if n == base_name else "not a channel-preserving attention config (no target)"
        elif tr <= TRAIN_TARGET and inf <= INFER_TARGET:
            verdict = "met"
        elif gx > INFER_TARGET:
            verdict = f"missed: the blocks add {gx - 1:.0%} FLOPs (compute, not memory passes)"
        elif quart["train"][0] <= TRAIN_TARGET and quart["infer"][0] <= INFER_TARGET:
            verdict = (f"not settled: the target lies inside this run's noise (IQR); its blocks take {q['share']:.1%} "
                       "of inference")
        else:
            verdict = f"missed: its blocks take {q['share']:.1%} of inference (passes over the map, small convs)"
        share = f"{q['share']:.1%}" if n != base_name else ""
        lines.append(
            f"| {n} | {info[n]['kind']} | {px:.3f} | {gx:.3f} | {q['train_ms']:.0f} | {tr:.3f} | {iqr['train']} | "
            f"{q['infer_ms']:.1f} | {inf:.3f} | {iqr['infer']} | {share} | {verdict} |"
        )
    lines += [
        "",
        f"Targets: training step <= {TRAIN_TARGET}x and inference <= {INFER_TARGET}x plain {base_name}, for configs "
        "that insert channel-preserving attention blocks. Each ratio is the median over steps timed in pairs with the "
        "plain model (alternating which runs first); IQR is the interquartile range of those pair ratios, the noise of "
        "this machine. Blocks' share: the time inside yolo_attn layers (forward hooks) over the fused model's "
        "inference time. GFLOPs are Ultralytics' own count (thop), which does not count deformable sampling.",
    ]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ("overhead.md" if base_name == "yolov8n.yaml" else f"overhead_{base_name.removesuffix('.yaml')}.md")).write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
