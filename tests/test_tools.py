"""`yolo-attn viz` and the block benchmark script, run as a user runs them."""

from __future__ import annotations

import re
import sys

import cv2
import pytest

from conftest import REPO, run, yolo_attn


cli = yolo_attn  # in this process, through cli.main


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
