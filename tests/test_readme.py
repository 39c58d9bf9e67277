"""The README's block table lists every registered block, and its parameter counts are what the configs build."""

from __future__ import annotations

import re

from conftest import REPO

from yolo_attn.registry import BLOCKS


def _table_rows():
    text = (REPO / "README.md").read_text()
    section = text.split("## Blocks", 1)[1].split("###", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_every_registered_block_is_in_the_table():
    names = {re.match(r"\| `([^`]+)`", row).group(1) for row in _table_rows()}
    assert names == set(BLOCKS)


def test_parameter_counts_in_the_table_match_the_configs():
    from ultralytics.nn.tasks import DetectionModel

    def params(name):
        return sum(p.numel() for p in DetectionModel(name, verbose=False).parameters())

    base = params("yolov8n.yaml")
    assert f"({base:,})" in (REPO / "README.md").read_text()
    checked = 0
    for row in _table_rows():
        m = re.search(r"([+-][\d,]+)(?: \([^)]*\))?, `(yolov8n-[a-z0-9]+\.yaml)`", row)
        if m:
            assert params(m.group(2)) - base == int(m.group(1).replace(",", "")), row
            checked += 1
    assert checked == len(list((REPO / "model_yamls").glob("yolov8-*.yaml")))  # every YOLOv8 ready config
