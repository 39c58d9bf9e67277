"""``yolo-attn bench-map``: train a list of configs on a COCO-format subset, validate each, tabulate and plot.

Each config is trained with the plain ``yolo`` command in its own process (its log goes to a file, so the progress
bar over runs stays readable), then its best.pt is validated. The table has mAP50, mAP50-95, parameters, GFLOPs at
the run's imgsz and training seconds per epoch; a PNG plots mAP50-95 against parameters.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

DEFAULT_DATA = Path("..") / "shared" / "datasets" / "coco128.yaml"


def default_configs() -> list[str]:
    """Plain yolov8n and every ready yolov8n config."""
    from .patch import MODEL_YAMLS

    return ["yolov8n.yaml"] + [p.name.replace("-", "n-", 1) for p in sorted(Path(MODEL_YAMLS).glob("yolov8-*.yaml"))]


def resolve_data(data: str | None, out: Path) -> Path:
    """A data YAML Ultralytics can read from anywhere: a relative ``path:`` is made absolute against the YAML's own
    folder (as ../shared/datasets/coco128.yaml needs), in a copy written to ``out``."""
    src = Path(data) if data else DEFAULT_DATA
    if not src.is_file():
        hint = "" if data else " (the default, ../shared/datasets/coco128.yaml, is not beside this directory)"
        raise FileNotFoundError(f"no data YAML at {src}{hint}; pass --data /path/to/data.yaml")
    d = yaml.safe_load(src.read_text())
    root = Path(d.get("path") or ".")
    if not root.is_absolute() and (src.parent / root).is_dir():
        d["path"] = str((src.parent / root).resolve())
        dst = out / f"{src.stem}.resolved.yaml"
        dst.write_text(yaml.safe_dump(d, sort_keys=False))
        return dst
    return src.resolve()


def run(configs: list[str], data: str | None, epochs: int, imgsz: int, batch: int, out: Path, device: str = "cpu",
        workers: int = 0, pretrained: str | None = None, seed: int = 0) -> list[dict]:  # fmt: skip
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER, TQDM
    from ultralytics.utils.torch_utils import get_flops

    out = out.resolve()  # Ultralytics re-roots a relative project= under runs/<task>/
    out.mkdir(parents=True, exist_ok=True)
    data_yaml = resolve_data(data, out)
    yolo = shutil.which("yolo") or str(Path(sys.executable).with_name("yolo"))
    rows = []
    bar = TQDM(configs, desc="bench-map", unit="run")
    for cfg in bar:
        name = Path(cfg).stem
        bar.set_description(f"bench-map {name}")
        cmd = [yolo, "train", f"model={cfg}", f"data={data_yaml}", f"epochs={epochs}", f"imgsz={imgsz}",
               f"batch={batch}", f"device={device}", f"workers={workers}", f"seed={seed}", "deterministic=True",
               "plots=False", f"project={out / 'runs'}", f"name={name}", "exist_ok=True"]  # fmt: skip
        if pretrained:
            cmd.append(f"pretrained={pretrained}")
        log = out / "runs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        with open(log, "w") as fh:
            p = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - t
        if p.returncode != 0:
            raise RuntimeError(f"training {cfg} failed (exit {p.returncode}); see {log}")
        best = out / "runs" / name / "weights" / "best.pt"
        level = LOGGER.level
        LOGGER.setLevel("WARNING")
        try:
            model = YOLO(str(best))
            metrics = model.val(data=str(data_yaml), imgsz=imgsz, batch=batch, device=device, workers=workers,
                                plots=False, verbose=False, project=str(out / "runs"), name=f"{name}-val",
                                exist_ok=True)  # fmt: skip
            gflops = get_flops(model.model, imgsz)
        finally:
            LOGGER.setLevel(level)
        rows.append(
            {
                "config": cfg,
                "params": sum(x.numel() for x in model.model.parameters()),
                "gflops": round(gflops, 3),
                "epochs": epochs,
                "imgsz": imgsz,
                "train_s_per_epoch": round(seconds / epochs, 1),
                "mAP50": round(float(metrics.box.map50), 5),
                "mAP50-95": round(float(metrics.box.map), 5),
            }
        )
    write(rows, out, data_yaml, pretrained, device)
    return rows


def write(rows: list[dict], out: Path, data_yaml: Path, pretrained: str | None, device: str) -> None:
    with open(out / "bench_map.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    d = yaml.safe_load(data_yaml.read_text())
    r0 = rows[0]
    lines = [
        "# mAP on a COCO subset",
        "",
        f"{time.strftime('%Y-%m-%d')}; data {data_yaml.name} (train: {d.get('train')}, val: {d.get('val')}); "
        f"{r0['epochs']} epochs at imgsz {r0['imgsz']}, "
        + (f"fine-tuned from {Path(pretrained).name}" if pretrained else "from scratch")
        + f", one run each, device {device}. A few epochs on a small subset say little about a block's value: read "
        "the table as a check that every config trains and validates, not as a ranking.",
        "",
        "| config | params | GFLOPs | train s/epoch | mAP50 | mAP50-95 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['config']} | {r['params']:,} | {r['gflops']:.2f} | {r['train_s_per_epoch']:.1f} | "
              f"{r['mAP50']:.4f} | {r['mAP50-95']:.4f} |" for r in rows]  # fmt: skip
    (out / "bench_map.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        ax.scatter(r["params"] / 1e6, r["mAP50-95"], s=40)
        ax.annotate(Path(r["config"]).stem, (r["params"] / 1e6, r["mAP50-95"]), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("mAP50-95")
    ax.set_title(f"{data_yaml.stem}, {r0['epochs']} epochs at {r0['imgsz']}" + (" (fine-tuned)" if pretrained else ""))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "bench_map.png", dpi=110)
