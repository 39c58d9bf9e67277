"""Block and model benchmarks, one command; writes benchmarks/results/blocks.md and blocks.png.

    .venv/bin/python benchmarks/blocks.py [--repeats 15] [--threads 2] [--out benchmarks/results]

Per registered block, at typical YOLO feature shapes (1x128x80x80, 1x256x40x40, 1x512x20x20): parameters, FLOPs
(torch's FlopCounterMode: convolutions and matrix products), forward and forward+backward latency (median of
--repeats after warm-up, threads pinned), memory (bytes autograd saves for backward on CPU; peak allocated on CUDA),
and the latency as a ratio to the one-pass floor (``x * 2`` on the same tensor) measured in the same run. Where
another maintained implementation of a block is installed (Ultralytics' CBAM; timm's CBAM/SE/ECA/GC if timm is), it
is timed side by side on the same input. Per ready yolov8n config: parameters, GFLOPs at 640 (Ultralytics' counter),
CPU inference latency, each as a ratio to plain yolov8n measured in the same run (interleaved). With a CUDA GPU the
blocks are also measured there, and the pass ratios at 8x256x40x40 in fp32 and under fp16 and bf16 autocast (with a
check that every output is finite); --quick runs the autocast path on CPU in bf16.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("YOLO_OFFLINE", "1")

SHAPES = [(1, 128, 80, 80), (1, 256, 40, 40), (1, 512, 20, 20)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, device, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def make(name: str, shape, device):
    """The block and its input for a (1, C, H, W) shape. Fusion blocks get a pyramid (ASFF, CFNetTransition: C at H,
    H/2, H/4) or two maps of that shape (AFF, iAFF); conv replacements map C -> C with stride 1."""
    from yolo_attn.registry import BLOCKS

    spec = BLOCKS[name]
    b, c, h, w = shape
    x = torch.randn(shape, device=device)
    rule = spec.rule.__name__
    if rule == "fused_width":  # ASFF, CFNetTransition: a pyramid C at H, H/2, H/4, fused at H
        m = spec.cls([c, c, c], c, 0) if name == "ASFF" else spec.cls([c, c, c], c)
        x = [x, torch.randn(b, c, h // 2, w // 2, device=device), torch.randn(b, c, h // 4, w // 4, device=device)]
    elif rule == "fused_width_or_equal":
        m, x = spec.cls([c, c], c), [x, torch.randn(shape, device=device)]
    elif rule == "concat_width":  # BiFPN_Concat: two maps of that shape, weighted and concatenated
        m, x = spec.cls([c, c]), [x, torch.randn(shape, device=device)]
    elif rule == "conv_width_repeat":
        m = spec.cls(c, c, 1)
    elif rule == "conv_width":
        m = spec.cls(c, c)
    else:
        m = spec.cls(c)
    return m.to(device), x


def flops(m, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(x)
    return counter.get_total_flops()


def memory_mb(m, x, device) -> float:
    """CUDA: peak allocated during forward+backward. CPU: bytes autograd saves for backward."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        m(x).sum().backward()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t):
        y = m(x)
    y.sum().backward()
    return sum(saved) / 2**20


def bench_blocks(device, repeats: int) -> list[dict]:
    from yolo_attn.registry import BLOCKS

    rows = []
    for name in BLOCKS:
        for shape in SHAPES:
            torch.manual_seed(0)
            m, x = make(name, shape, device)
            xs = x if isinstance(x, list) else [x]
            floor = median_ms(lambda: xs[0] * 2, device, repeats)
            m.eval()
            with torch.no_grad():
                fwd = median_ms(lambda: m(x), device, repeats)
            m.train()

            def step():
                m.zero_grad(set_to_none=True)
                m(x).sum().backward()

            params = sum(p.numel() for p in m.parameters())
            for t in xs:
                t.requires_grad_(params == 0)  # parameter-free blocks: let backward reach the input
            bwd = median_ms(step, device, max(3, repeats // 2))
            rows.append(
                {
                    "block": name,
                    "shape": "x".join(map(str, shape)),
                    "params": params,
                    "gflops": flops(m.eval(), x) / 1e9,
                    "fwd_ms": fwd,
                    "fwd_bwd_ms": bwd,
                    "floor_ms": floor,
                    "memory_mb": memory_mb(m.train(), x, device),
                }
            )
            print(f"  {device.type} {name:<8} {rows[-1]['shape']:<12} fwd {fwd:8.2f} ms  fwd+bwd {bwd:8.2f} ms", flush=True)
    return rows


PASS_SHAPE = (8, 256, 40, 40)
PASS_TARGETS = {"SimAM": 6, "SE": 6, "ECA": 6, "CA": 12, "CBAM": 12, "GCBlock": 12, "AFF": 12}  # x floor, issue 5


def gemm_gflops(device, repeats: int) -> float:
    """Throughput of fp32 matrix products on this device, measured now: a batched (8, 256, 256) @ (8, 256, 1600)
    product, the size of a point-wise conv over an 8x256x40x40 map (what AFF's MS-CAM runs twice)."""
    a, b = torch.randn(8, 256, 256, device=device), torch.randn(8, 256, 1600, device=device)
    return 2 * 8 * 256 * 256 * 1600 / median_ms(lambda: torch.bmm(a, b), device, repeats) / 1e6


def pass_ratios(device, repeats: int, rounds: int = 3, shape=PASS_SHAPE, dtype=None, compiled=False) -> list[dict]:
    """Inference latency / floor at 8x256x40x40 for every channel-preserving attention block and AFF, in interleaved
    rounds (each round times the floor next to each block); the median ratio over rounds is reported. With ``dtype``
    (fp16/bf16) the inputs are in that type and block and floor run under autocast, as in AMP training; each row
    also says whether the output was finite. Each row also gives the block's arithmetic floor: its convolution and
    matrix-product FLOPs at the matrix-product throughput measured in the same round, over the floor (fp32 only).
    With ``compiled``, the blocks with a target are also timed compiled (torch.compile, inductor)."""
    from yolo_attn.registry import BLOCKS, same_width

    names = [n for n, s in BLOCKS.items() if (s.rule is same_width and s.kind == "attention") or n in PASS_TARGETS]
    made = {n: make(n, shape, device) for n in names}
    if dtype is not None:
        made = {n: (m, [t.to(dtype) for t in x] if isinstance(x, list) else x.to(dtype)) for n, (m, x) in made.items()}
    fl = {n: flops(m.eval(), x) for n, (m, x) in made.items()} if dtype is None else {}
    fast = {n: torch.compile(made[n][0]) for n in names if n in PASS_TARGETS} if compiled else {}
    ratios, times, arith, comp = ({n: [] for n in names} for _ in range(4))
    amp = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.no_grad(), amp:
        finite = {n: bool(torch.isfinite(m.eval()(x)).all()) for n, (m, x) in made.items()}
        for _ in range(rounds):
            rate = gemm_gflops(device, repeats) if fl else None
            for n, (m, x) in made.items():
                xs = x if isinstance(x, list) else [x]
                floor = median_ms(lambda: xs[0] * 2, device, repeats)
                t = median_ms(lambda: m(x), device, repeats)
                tc = median_ms(lambda: fast[n](x), device, repeats) if n in fast else None
                floor = min(floor, median_ms(lambda: xs[0] * 2, device, repeats))
                ratios[n].append(t / floor)
                times[n].append(t)
                if rate:
                    arith[n].append(fl[n] / rate / 1e6 / floor)
                if tc is not None:
                    comp[n].append(tc / floor)
    where = device.type.upper() + ("" if dtype is None else f", {str(dtype).split('.')[-1]} autocast")
    med = lambda v: statistics.median(v) if v else None  # noqa: E731
    return [{"block": n, "shape": "x".join(map(str, shape)), "ms": statistics.median(times[n]), "where": where,
             "ratio": statistics.median(ratios[n]), "target": PASS_TARGETS.get(n), "finite": finite[n],
             "rounds": rounds, "arith": med(arith[n]), "compiled": med(comp[n])} for n in names]  # fmt: skip


def others(device, repeats: int) -> list[dict]:
    """Other maintained implementations of the same blocks, timed side by side with ours on the same input."""
    from ultralytics.nn.modules.conv import CBAM as UltralyticsCBAM

    from yolo_attn.modules import CBAM

    pairs = [("CBAM", "ultralytics.nn.modules.CBAM (no MLP, no max-pool)", CBAM, lambda c: UltralyticsCBAM(c, 7))]
    try:
        import timm.layers as tl

        from yolo_attn.registry import BLOCKS

        pairs.append(("CBAM", "timm.layers.CbamModule", CBAM, lambda c: tl.CbamModule(c)))
        for ours, theirs in (("SE", "SEModule"), ("ECA", "EcaModule"), ("GCBlock", "GlobalContext")):
            if ours in BLOCKS:
                pairs.append((ours, f"timm.layers.{theirs}", BLOCKS[ours].cls, getattr(tl, theirs)))
    except ImportError:
        pass
    rows = []
    for name, label, ours_cls, make_theirs in pairs:
        for shape in SHAPES:
            x = torch.randn(shape, device=device)
            a, b = ours_cls(shape[1]).to(device).eval(), make_theirs(shape[1]).to(device).eval()
            with torch.no_grad():
                ta, tb = [], []
                for _ in range(3):  # interleaved rounds: drift hits both alike
                    ta.append(median_ms(lambda: a(x), device, repeats))
                    tb.append(median_ms(lambda: b(x), device, repeats))
            rows.append({"block": name, "other": label, "shape": "x".join(map(str, shape)),
                         "ours_ms": min(ta), "other_ms": min(tb)})  # fmt: skip
    return rows


def bench_models(repeats: int, imgsz: int = 640, configs: list[str] | None = None) -> list[dict]:
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import get_flops

    import yolo_attn

    names = configs or [p.name.replace("-", "n-", 1) for p in sorted(yolo_attn.MODEL_YAMLS.glob("yolov8-*.yaml"))]
    names = ["yolov8n.yaml"] + names
    models = {n: DetectionModel(n, verbose=False).eval().fuse(verbose=False) for n in names}
    x = torch.rand(1, 3, imgsz, imgsz)
    times = {n: [] for n in names}
    with torch.no_grad():
        for _ in range(3):  # interleaved rounds
            for n, m in models.items():
                times[n].append(median_ms(lambda: m(x), x.device, max(3, repeats // 3)))
    rows = []
    for n, m in models.items():
        rows.append({"config": n, "params": sum(p.numel() for p in m.parameters()),
                     "gflops": get_flops(m, imgsz), "ms": min(times[n])})  # fmt: skip
    base = rows[0]
    for r in rows:
        r.update(params_x=r["params"] / base["params"], gflops_x=r["gflops"] / base["gflops"], ms_x=r["ms"] / base["ms"])
    return rows


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = list(dict.fromkeys(r["block"] for r in rows))
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(shapes)
    for k, shape in enumerate(shapes):
        vals = [next(r["fwd_ms"] / r["floor_ms"] for r in rows if r["block"] == b and r["shape"] == shape) for b in blocks]
        ax.bar([i + k * width for i in range(len(blocks))], vals, width, label=shape)
    ax.set_xticks([i + width * (len(shapes) - 1) / 2 for i in range(len(blocks))], blocks)
    ax.set_yscale("log")
    ax.set_ylabel("forward latency / (x * 2) floor")
    ax.set_title("yolo_attn blocks, CPU forward latency as a multiple of one read+write pass (lower is better)")
    ax.legend(title="input shape")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(env: str, block_rows, other_rows, model_rows, gpu_rows, imgsz: int = 640, pass_rows=()) -> str:
    out = ["# yolo_attn benchmarks", "", env, ""]
    ratio = lambda v: "" if v is None else "0" if v == 0 else "<0.1x" if v < 0.1 else f"{v:.1f}x"  # noqa: E731
    for where in dict.fromkeys(r["where"] for r in pass_rows):  # one table per device and precision, in order
        rows = [r for r in pass_rows if r["where"] == where]
        out += [f"## Passes over the map: inference at {rows[0]['shape']}, {where}, as a ratio to one pass (`x * 2`)",
                "", "| block | ms | x floor | target | | arithmetic floor | compiled | finite |",
                "|---|---:|---:|---:|---|---:|---:|---|"]  # fmt: skip
        for r in rows:
            t = r["target"]
            verdict = "" if t is None else ("met" if r["ratio"] <= t else "missed")
            out.append(f"| {r['block']} | {r['ms']:.2f} | {r['ratio']:.1f}x | {f'{t}x' if t else ''} | {verdict} | "
                       f"{ratio(r['arith'])} | {ratio(r['compiled'])} | {'yes' if r['finite'] else 'NO'} |")  # fmt: skip
        out += ["", f"Median over {rows[0]['rounds']} interleaved rounds of the block's time over the floor's, both "
                "measured next to each other (under autocast both take inputs in the half type). Targets from issue 5 "
                "(SimAM, SE, ECA within 6x; CA, CBAM, GC, AFF within 12x). Arithmetic floor: the block's convolution "
                "and matrix-product FLOPs (torch FlopCounterMode) at the fp32 matrix-product throughput measured in the "
                "same round (a batched 8x256x256 @ 8x256x1600 product), over the floor: what the block's arithmetic "
                "alone costs, before any pass over memory. Compiled: the same block under torch.compile (inductor), "
                "with --compiled.", ""]  # fmt: skip
    for title, rows in (("Blocks, CPU", block_rows), ("Blocks, CUDA", gpu_rows)):
        if not rows:
            continue
        out += [f"## {title}", "", "| block | input | params | GFLOPs | fwd ms | fwd+bwd ms | fwd / floor | memory MB |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        out += [f"| {r['block']} | {r['shape']} | {r['params']:,} | {r['gflops']:.3f} | {r['fwd_ms']:.2f} | "
                f"{r['fwd_bwd_ms']:.2f} | {r['fwd_ms'] / r['floor_ms']:.1f}x | {r['memory_mb']:.1f} |" for r in rows]
        out += ["", "floor: `x * 2` on the block's (first) input, same run. Memory on CPU: bytes autograd saves for "
                "backward; on CUDA: peak allocated during forward+backward. GFLOPs count convolutions and matrix "
                "products (torch FlopCounterMode); DCN's deformable sampling is counted as its convolution.", ""]  # fmt: skip
    if other_rows:
        out += ["## Other implementations, same input, CPU", "", "| block | other | input | ours ms | other ms | ours / other |",
                "|---|---|---|---:|---:|---:|"]  # fmt: skip
        out += [f"| {r['block']} | {r['other']} | {r['shape']} | {r['ours_ms']:.3f} | {r['other_ms']:.3f} | "
                f"{r['ours_ms'] / r['other_ms']:.2f} |" for r in other_rows]
        out += ["", "Ultralytics' CBAM is not the paper's (no shared MLP, no max-pooled descriptors): it does less work.", ""]
    out += [f"## Ready yolov8n configs, CPU, imgsz {imgsz}, batch 1, fused", "",
            "| config | params | x yolov8n | GFLOPs | x yolov8n | latency ms | x yolov8n |", "|---|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {r['config']} | {r['params']:,} | {r['params_x']:.3f} | {r['gflops']:.2f} | {r['gflops_x']:.3f} | "
            f"{r['ms']:.1f} | {r['ms_x']:.2f} |" for r in model_rows]  # fmt: skip
    out += ["", "Ratios are measured side by side in one run (interleaved rounds, best round's median). Ultralytics' "
            "GFLOPs counter does not see torchvision's deform_conv2d, so the DCN row's GFLOPs are too low.", ""]
    return "\n".join(out)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", default=str(Path(__file__).with_name("results")))
    ap.add_argument("--quick", action="store_true", help="one small shape, models at imgsz 160 (a smoke run)")
    ap.add_argument("--passes-only", action="store_true", help="only the pass-count table (results/passes.md)")
    ap.add_argument("--compiled", action="store_true", help="pass table: also time the blocks with targets compiled")
    ap.add_argument("--configs", help="comma-separated yolov8n configs to time (default: every yolov8 ready config)")
    args = ap.parse_args(argv)
    global SHAPES
    if args.quick:
        SHAPES = [(1, 32, 16, 16)]
    torch.set_num_threads(args.threads)
    import ultralytics

    import yolo_attn  # noqa: F401

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = (f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {args.threads} threads, "
           f"torch {torch.__version__}, ultralytics {ultralytics.__version__}, Python {sys.version.split()[0]}, "
           f"median of {args.repeats} after warm-up.")  # fmt: skip
    cpu = torch.device("cpu")
    if args.quick:  # the CPU fp32 table, and the autocast path the GPU tables take, on a tiny shape
        pass_rows = pass_ratios(cpu, args.repeats, 1, (1, 32, 16, 16), compiled=args.compiled)
        pass_rows += pass_ratios(cpu, args.repeats, 1, (1, 32, 16, 16), torch.bfloat16)
    else:
        pass_rows = pass_ratios(cpu, args.repeats, compiled=args.compiled)
    if torch.cuda.is_available() and not args.quick:
        for dtype in (None, torch.float16, torch.bfloat16):
            pass_rows += pass_ratios(torch.device("cuda"), args.repeats, 3, PASS_SHAPE, dtype)
    if args.passes_only:
        text = markdown(env, [], [], [], [], 640, pass_rows).split("## Ready yolov8n")[0]
        (out / "passes.md").write_text(text)
        print(text)
        return text
    block_rows = bench_blocks(cpu, args.repeats)
    other_rows = others(cpu, args.repeats)
    configs = args.configs.split(",") if args.configs else None
    model_rows = bench_models(args.repeats, 160 if args.quick else 640, configs)
    gpu_rows = bench_blocks(torch.device("cuda"), args.repeats) if torch.cuda.is_available() else []
    text = markdown(env, block_rows, other_rows, model_rows, gpu_rows, 160 if args.quick else 640, pass_rows)
    (out / "blocks.md").write_text(text)
    chart(block_rows, out / "blocks.png")
    print(text)
    return text


if __name__ == "__main__":
    main()
