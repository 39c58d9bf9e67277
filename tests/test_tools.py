"""`yolo-attn viz`, `yolo-attn bench-map` and the block benchmark script, run as a user runs them."""

from __future__ import annotations

import csv
import re
import sys

import cv2
import pytest

from conftest import BIN, REPO, SHARED_COCO, run


def cli(*args, cwd, check=True):
    return run([BIN / "yolo-attn", *map(str, args)], cwd, check=check)


@pytest.mark.parametrize("config, blocks", [("yolov8n-cbam.yaml", ["CBAM"] * 3), ("yolo11n-asff.yaml", ["ASFF"] * 3),
                                            ("yolov8n-iaff.yaml", ["iAFF"] * 4), ("yolov8n-simam.yaml", ["SimAM"] * 3)])  # fmt: skip
def test_viz_writes_a_map_per_attention_block_and_a_grid(config, blocks, val_images, tmp_path):
    out = tmp_path / "viz"
    p = cli("viz", config, val_images[0], "--imgsz", 160, "--out", out, cwd=tmp_path)
    assert f"wrote {len(blocks)} attention maps" in p.stdout
    pngs = sorted(out.glob("layer*.png"))
    assert [x.stem.split("_")[1] for x in pngs] == blocks
    for x in pngs:
        img = cv2.imread(str(x))
        assert img.shape == (160, 160, 3) and img.std() > 1  # an overlay, not a blank
    grid = cv2.imread(str(out / "grid.png"))
    cols = min(3, len(blocks))
    assert grid.shape[1] == 320 * cols and grid.shape[0] == 320 * -(-len(blocks) // cols)


def test_viz_errors(val_images, tmp_path):
    p = cli("viz", "yolov8n-spdconv.yaml", val_images[0], "--imgsz", 64, "--out", tmp_path, cwd=tmp_path, check=False)
    assert p.returncode == 2 and "has no attention block to visualise" in p.stderr
    p = cli("viz", "yolov8n-ca.yaml", "missing.jpg", cwd=tmp_path, check=False)
    assert p.returncode == 2 and "no image 'missing.jpg'" in p.stderr


@pytest.mark.slow
def test_bench_map_tabulates_and_plots(sample_data, base_checkpoints, tmp_path):
    out = tmp_path / "bm"  # given relative to the working directory, as a user would
    cli("bench-map", "--configs", "yolov8n.yaml,yolov8n-simam.yaml", "--data", sample_data, "--epochs", 1,
        "--imgsz", 64, "--batch", 8, "--pretrained", base_checkpoints["yolov8n"], "--out", "bm", cwd=tmp_path)  # fmt: skip
    rows = list(csv.DictReader(open(out / "bench_map.csv")))
    assert [r["config"] for r in rows] == ["yolov8n.yaml", "yolov8n-simam.yaml"]
    assert rows[0]["params"] == rows[1]["params"] == "3157200"  # SimAM adds no parameters
    assert all(0 <= float(r["mAP50-95"]) <= float(r["mAP50"]) <= 1 and float(r["train_s_per_epoch"]) > 0 for r in rows)
    md = (out / "bench_map.md").read_text()
    assert "1 epochs at imgsz 64, fine-tuned from best.pt" in md and "| yolov8n-simam.yaml | 3,157,200 |" in md
    assert cv2.imread(str(out / "bench_map.png")) is not None
    assert "structural transfer placed 355/355" in (out / "runs" / "yolov8n-simam.log").read_text()


def test_bench_map_default_data_missing_is_one_line(tmp_path):
    p = cli("bench-map", "--configs", "yolov8n.yaml", cwd=tmp_path, check=False)
    assert p.returncode == 2
    assert p.stderr.strip() == ("yolo-attn: error: no data YAML at ../shared/datasets/coco128.yaml (the default, "
                                "../shared/datasets/coco128.yaml, is not beside this directory); pass --data "
                                "/path/to/data.yaml")  # fmt: skip


@pytest.mark.extended
def test_bench_map_on_the_shared_coco128(tmp_path):
    if not SHARED_COCO.is_dir():
        pytest.skip(f"extended run skipped: {SHARED_COCO} is absent (it sits beside the repository on CI machines)")
    cli("bench-map", "--configs", "yolov8n-ca.yaml", "--epochs", 1, "--imgsz", 64, "--batch", 16,
        "--out", tmp_path / "bm", cwd=REPO)  # fmt: skip
    (row,) = list(csv.DictReader(open(tmp_path / "bm" / "bench_map.csv")))
    assert row["config"] == "yolov8n-ca.yaml"


@pytest.mark.slow
def test_block_benchmark_script_runs(tmp_path):
    run([sys.executable, REPO / "benchmarks" / "blocks.py", "--quick", "--repeats", 1, "--out", tmp_path,
         "--configs", "yolov8n-cbam.yaml,yolov8n-cfnet.yaml"], tmp_path, timeout=900)  # fmt: skip
    text = (tmp_path / "blocks.md").read_text()
    from yolo_attn.registry import BLOCKS

    for name in BLOCKS:
        assert f"| {name} | 1x32x16x16 |" in text
    assert "ultralytics.nn.modules.CBAM" in text and "| yolov8n-cbam.yaml |" in text and "| yolov8n-cfnet.yaml |" in text
    assert "## Passes over the map: inference at 1x32x16x16, CPU," in text and "| SimAM |" in text and "| 6x |" in text
    fp32 = text.split("## Passes over the map: inference at 1x32x16x16, CPU, as")[1].split("## ")[0]
    arith = {ln.split("|")[1].strip(): ln.split("|")[6] for ln in fp32.splitlines() if ln.startswith("| ")}
    assert re.fullmatch(r" (\d+\.\d|<0\.1)x ", arith["AFF"]), arith  # arithmetic floor: FLOPs at the GEMM rate
    assert arith["SimAM"] == " 0 "  # parameter-free: no arithmetic to count
    amp = text.split("## Passes over the map: inference at 1x32x16x16, CPU, bfloat16 autocast")[1].split("## ")[0]
    assert "| SimAM |" in amp and "| NO |" not in amp  # the autocast path GPU runs take, every output finite
    assert cv2.imread(str(tmp_path / "blocks.png")) is not None


def test_overhead_benchmark_script_runs(tmp_path):
    run([sys.executable, REPO / "benchmarks" / "overhead.py", "--configs", "yolov8n-se.yaml,yolov8n-dcn.yaml",
         "--pairs", 2, "--batch", 2, "--imgsz", 96, "--out", tmp_path], tmp_path)  # fmt: skip
    text = (tmp_path / "overhead.md").read_text()
    assert "| yolov8n.yaml | base | 1.000 | 1.000 |" in text
    assert "| yolov8n-se.yaml | attention |" in text
    assert "| yolov8n-dcn.yaml | other |" in text and "no target" in text
