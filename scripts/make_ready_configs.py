"""Write the generated ready configs in model_yamls/: a thin caller of yolo_attn.compose.ready_text.

Each config is Ultralytics' own yolov8.yaml / yolo11.yaml / yolo26.yaml with a block placed at the roles of its
registry placement (yolo_attn.registry.PLACEMENTS) by yolo_attn's YAML editor (the code of ``yolo-attn insert`` /
``replace`` and of composed names), under a header saying where the block sits, why, and its paper. YOLO26 gets one
file per placement; the YOLOv8 / YOLO11 files of CA, SimAM, CBAM, ASFF, SPDConv, AFF, iAFF, DCN and CFNet are written
by hand. The RT-DETR SQR configs are Ultralytics' RT-DETR YAMLs with the `sqr:` key.

    .venv/bin/python scripts/make_ready_configs.py          # (re)write the files
    .venv/bin/python scripts/make_ready_configs.py --check  # exit 1 if a file differs from what this script writes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAMILIES = {"yolov8": "v8/yolov8.yaml", "yolo11": "11/yolo11.yaml", "yolo26": "26/yolo26.yaml"}
TITLES = {"yolov8": "YOLOv8", "yolo11": "YOLO11", "yolo26": "YOLO26"}
# The YOLOv8 / YOLO11 configs of these blocks were written by hand before placements were package data (their
# headers say more); YOLO26 gets every placement from here.
HAND_WRITTEN = {"ca", "simam", "cbam", "asff", "spdconv", "aff", "iaff", "dcn"}


def targets() -> list[tuple[str, str]]:
    """(family, suffix) of every generated file."""
    from yolo_attn.registry import PLACEMENTS

    return [(f, s) for f in FAMILIES for s in PLACEMENTS if f == "yolo26" or s not in HAND_WRITTEN]


def _base(family: str) -> str:
    import ultralytics

    return (Path(ultralytics.__file__).parent / "cfg/models" / FAMILIES[family]).read_text()


def build_text(suffix: str, family: str) -> str:
    from yolo_attn.compose import ready_text
    from yolo_attn.registry import PLACEMENTS

    return ready_text(PLACEMENTS[suffix], _base(family), FAMILIES[family], family, TITLES[family])


# Selective Query Recollection: Ultralytics' RT-DETR YAMLs with the `sqr:` key added (a training strategy, no new rows)
SQR_BASES = {"rtdetr-l": "RT-DETR-l", "rtdetr-x": "RT-DETR-x", "rtdetr-resnet50": "RT-DETR-ResNet50",
             "rtdetr-resnet101": "RT-DETR-ResNet101"}  # fmt: skip


def build_sqr_text(stem: str) -> str:
    import ultralytics

    from yolo_attn.compose import comment_lines

    base = (Path(ultralytics.__file__).parent / "cfg/models/rt-detr" / f"{stem}.yaml").read_text()
    body = base[base.index("\nnc:") + 1 :]
    body = body.replace("\n", "\nsqr: selective # query recollection in training: selective (the paper's), dense, false\n", 1)
    head = [
        f"# yolo_attn ready config: {SQR_BASES[stem]} + Selective Query Recollection (SQR)",
        f"# Use as {stem}-sqr.yaml. Made by scripts/make_ready_configs.py from Ultralytics' own {stem}.yaml: only the",
        "# `sqr:` key is added, the rows are RT-DETR's.",
        "#",
        *comment_lines("What: in training, every decoder stage also takes the query sets the two stages before it "
                       "produced (1, 2, 3, 5, 8, 13 sets over the 6 stages) and all 32 sets are supervised; validation, "
                       "prediction and export are RT-DETR's exactly, and weights move both ways between this file and "
                       + stem + ".yaml."),
        *comment_lines("Cost: about 5x the decoder's training compute; inference unchanged."),
        *comment_lines('Paper: Chen, Zhang, Hu, Huang, Zhu, Savvides, "Enhanced Training of Query-Based Object '
                       'Detection via Selective Query Recollection", CVPR 2023'),
        "",
    ]
    return "\n".join(head) + "\n" + body


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare with the files in model_yamls/")
    args = ap.parse_args(argv)
    out, stale = REPO / "model_yamls", []
    files = [(out / f"{f}-{s}.yaml", lambda s=s, f=f: build_text(s, f)) for f, s in targets()]
    files += [(out / f"{stem}-sqr.yaml", lambda stem=stem: build_sqr_text(stem)) for stem in SQR_BASES]
    for path, make in files:
        text = make()
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run scripts/make_ready_configs.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
