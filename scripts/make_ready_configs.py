"""Write the ready configs of the blocks added with issue 3 (model_yamls/yolov8-*.yaml, yolo11-*.yaml).

Each config is Ultralytics' own yolov8.yaml / yolo11.yaml edited with yolo_attn's YAML editor (the same code as
``yolo-attn insert`` / ``yolo-attn replace``), under a header saying where the block sits, why, and its paper.
The first 16 configs (CA, SimAM, CBAM, ASFF, SPDConv, AFF, iAFF, DCN) and the CFNet configs are written by hand.

    .venv/bin/python scripts/make_ready_configs.py          # (re)write the files
    .venv/bin/python scripts/make_ready_configs.py --check  # exit 1 if a file differs from what this script writes
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAMILIES = {"yolov8": "v8/yolov8.yaml", "yolo11": "11/yolo11.yaml"}
TITLES = {"yolov8": "YOLOv8", "yolo11": "YOLO11"}
# base-model layers by role, per family (Ultralytics' own indices)
P3, P4, P5 = "backbone P3/8", "backbone P4/16", "backbone P5/32"
ROLE = {
    "yolov8": {2: "backbone P2/4", 4: P3, 6: P4, 8: P5, 9: "SPPF (P5/32)"},
    "yolo11": {2: "backbone P2/4", 4: P3, 6: P4, 8: P5, 10: "C2PSA (P5/32)"},
}
STAGES = {"yolov8": [4, 6, 8], "yolo11": [4, 6, 8]}
DEEPEST = {"yolov8": [9], "yolo11": [10]}  # the last backbone layer (after SPPF / C2PSA)
STRIDED = {"yolov8": [1, 3, 5, 7, 16, 19], "yolo11": [1, 3, 5, 7, 17, 20]}  # 3x3 stride-2 Convs but the stem
NECK_P5_DOWN = {"yolov8": 19, "yolo11": 20}  # the neck's stride-2 Conv into P5


@dataclass
class Ready:
    tag: str
    block: str
    title: str
    paper: str
    where: str  # {layers} is filled in with the family's layer list
    why: str
    insert: dict | None = None  # family -> [(layer, args)] (rows added after those base layers)
    replace: dict | None = None  # family -> [layers] swapped for the block, same args


def _stages():
    return {f: [(i, "[]") for i in STAGES[f]] for f in FAMILIES}


SPECS = [
    Ready("se", "SE", "Squeeze-and-Excitation (SE)", 'Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018',
          "one SE row after each backbone stage output the neck reads (base layers {layers}: P3/8, P4/16, P5/32).",
          "the paper recalibrates the channels of every residual block's output; the stage outputs are the YOLO "
          "blocks whose features the neck reuses.", _stages()),
    Ready("eca", "ECA", "Efficient Channel Attention (ECA)",
          'Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks", '
          "CVPR 2020",
          "one ECA row after each backbone stage output the neck reads (base layers {layers}).",
          "the paper puts ECA where SE goes, in every residual block; here at the stage outputs. The 1D kernel size "
          "follows the width at every scale (k = |log2(C)/2 + 1/2|_odd).", _stages()),
    Ready("gam", "GAM", "Global Attention Mechanism (GAM)",
          'Liu, Shao, Hoffmann, "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial '
          'Interactions", arXiv 2112.05561, 2021',
          "one GAM row after the backbone P3/8 and P4/16 stage outputs (base layers {layers}).",
          "the paper puts GAM where CBAM goes in ResNet stages; its two 7x7 convs over C/4 channels cost about "
          "25 C^2 parameters, so P5 (the widest stage, +50% parameters at n scale) is left out.",
          {f: [(4, "[]"), (6, "[]")] for f in FAMILIES}),
    Ready("gc", "GCBlock", "Global Context block (GC)",
          'Cao, Xu, Lin, Wei, Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond", ICCVW 2019 '
          "/ TPAMI 2020",
          "one GCBlock row after each backbone stage output the neck reads (base layers {layers}).",
          "the paper adds GC to every residual block of stages c3-c5 (P3-P5). A new GCBlock is the identity (its last "
          "conv starts at zero, as in the paper's code).", _stages()),
    Ready("scse", "scSE", "concurrent spatial and channel SE (scSE)",
          'Roy, Navab, Wachinger, "Concurrent Spatial and Channel Squeeze & Excitation in Fully Convolutional '
          'Networks", MICCAI 2018 / IEEE TMI 2019',
          "one scSE row on each neck output Detect reads (base layers {layers}: P3, P4, P5 outputs).",
          "the paper recalibrates the output of every encoder and decoder block of a fully convolutional network; "
          "the neck outputs are YOLO's decoder outputs. Aggregation max-out (the TMI paper's best).",
          {"yolov8": [(15, "[]"), (18, "[]"), (21, "[]")], "yolo11": [(16, "[]"), (19, "[]"), (22, "[]")]}),
    Ready("bam", "BAM", "Bottleneck Attention Module (BAM)",
          'Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018',
          "one BAM row at the end of the P2, P3 and P4 stages, before each stride-2 Conv (base layers {layers}).",
          "the paper places BAM at every bottleneck of the network, where the feature map is down-sampled.",
          {f: [(2, "[]"), (4, "[]"), (6, "[]")] for f in FAMILIES}),
    Ready("triplet", "TripletAttention", "Triplet Attention",
          'Misra, Nalamada, Arasanipalai, Hou, "Rotate to Attend: Convolutional Triplet Attention Module", WACV 2021',
          "one TripletAttention row after each backbone stage output the neck reads (base layers {layers}).",
          "the paper adds it to every residual block; at the stage outputs it costs 300 parameters each.", _stages()),
    Ready("strip", "StripPooling", "Strip Pooling (SPM)",
          'Hou, Zhang, Cheng, Feng, "Strip Pooling: Rethinking Spatial Pooling for Scene Parsing", CVPR 2020',
          "one StripPooling row after the backbone P4/16 and P5/32 stage outputs (base layers {layers}).",
          "the paper adds strip pooling modules to the last stages of the backbone, where long-range context along "
          "rows and columns helps elongated objects.", {f: [(6, "[]"), (8, "[]")] for f in FAMILIES}),
    Ready("van", "VANAttention", "Visual Attention Network attention unit (LKA)",
          'Guo, Lu, Liu, Cheng, Hu, "Visual Attention Network", Computational Visual Media 2023 (arXiv 2202.09741)',
          "one VANAttention row (1x1 -> GELU -> large kernel attention -> 1x1, plus shortcut) after each backbone "
          "stage output the neck reads (base layers {layers}).",
          "VAN uses the attention unit in every block of every stage; LKA (a 21x21 receptive field from a 5x5 "
          "depth-wise, a 7x7 dilation-3 depth-wise and a 1x1 conv) is the unit's core. Use LKA alone for a lighter "
          "gate.", _stages()),
    Ready("psa", "PSA_p", "Polarized Self-Attention, parallel (PSA_p)",
          'Liu, Liu, Fan, Huang, "Polarized Self-Attention: Towards High-quality Pixel-wise Regression", '
          "arXiv 2107.00782, 2021",
          "one PSA_p row after each backbone stage output the neck reads (base layers {layers}).",
          "the paper adds PSA to the backbone blocks of pixel-wise regression networks; both layouts are offered "
          "(PSA_s: sequential, a one-word swap).", _stages()),
    Ready("danet", "DABlock", "DANet dual attention (DABlock: PAM + CAM)",
          'Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019',
          "one DABlock row after the last backbone layer (base layer {layers}), at P5/32.",
          "the paper puts the dual attention head (position attention PAM and channel attention CAM, summed) on the "
          "backbone output. PAM's memory grows with (H*W)^2, which is small only at P5.",
          {f: [(DEEPEST[f][0], "[]")] for f in FAMILIES}),
    Ready("rga", "RGA", "Relation-Aware Global Attention (RGA-SC)",
          'Zhang, Lan, Zeng, Jin, Chen, "Relation-Aware Global Attention for Person Re-identification", CVPR 2020',
          "one RGA row (spatial then channel relations) after the backbone P4/16 and P5/32 stage outputs (base "
          "layers {layers}), relations on a 20x20 grid.",
          "the paper adds RGA after the backbone stages at a fixed input size; at imgsz 640 P5 is exactly 20x20 and "
          "P4 is pooled to it, other sizes are pooled to the grid and the attention map is resized back.",
          {f: [(6, "[20]"), (8, "[20]")] for f in FAMILIES}),
    Ready("resatt", "ResidualAttention", "Residual Attention",
          'Wang, Jiang, Qian, Yang, Li, Zhang, Wang, Tang, "Residual Attention Network for Image Classification", '
          "CVPR 2017",
          "one ResidualAttention module after each backbone stage output the neck reads (base layers {layers}), with "
          "3, 2 and 1 mask-branch down-sampling levels at P3, P4, P5.",
          "the paper puts one attention module in each stage, with more soft-mask levels at higher resolution so "
          "every mask reaches the same coarsest size.",
          {f: [(4, "[3]"), (6, "[2]"), (8, "[1]")] for f in FAMILIES}),
    Ready("fan", "FANChannelAttention", "Fully Attentional Networks channel processing (FAN)",
          'Zhou, Yu, Xie, Xiao, Anandkumar, Feng, Alvarez, "Understanding The Robustness in Vision Transformers", '
          "ICML 2022",
          "one FANChannelAttention row after the backbone P4/16 and P5/32 stage outputs (base layers {layers}).",
          "FAN replaces each transformer block's MLP by attentional channel processing; on a CNN it refines the "
          "deep stages' channels (its 4C hidden layer is heavy at P3).", {f: [(6, "[]"), (8, "[]")] for f in FAMILIES}),
    Ready("stn", "STN", "Spatial Transformer (STN)",
          'Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer Networks", NeurIPS 2015',
          "one STN row after the backbone P5/32 stage output (base layer {layers}), before the last backbone layers.",
          "the paper inserts spatial transformers between conv layers to undo distortions. In a detector any warp "
          "moves features off the box grid, so only the coarsest level is warped, and the STN starts as the "
          "identity transform.", {f: [(8, "[]")] for f in FAMILIES}),
    Ready("odconv", "ODConv", "Omni-Dimensional Dynamic Convolution (ODConv 4x)",
          'Li, Zhou, Yao, "Omni-Dimensional Dynamic Convolution", ICLR 2022',
          "the backbone's stride-2 Convs into P3 and P4 (base layers {layers}) become ODConv with the same args; "
          "4 candidate kernels (the paper's 4x), attention reduction 1/16.",
          "the paper replaces the 3x3 convs of the backbone. 4x multiplies those convs' weights by 4, so the widest "
          "stage (P5) keeps its Conv.", replace={f: [3, 5] for f in FAMILIES}),
    Ready("refconv", "RefConv", "Re-parameterised Refocusing Convolution (RefConv)",
          'Cai, Ding, et al., "RefConv: Re-parameterized Refocusing Convolution for Powerful ConvNets", '
          "arXiv 2310.10563, 2023",
          "every 3x3 stride-2 Conv except the stem (base layers {layers}) becomes RefConv with the same args.",
          "the paper refocuses every regular conv; in deploy form (model.fuse()) RefConv is a plain conv, so it "
          "costs nothing at inference. Best started from pretrained weights (the basis kernels stay frozen).",
          replace=STRIDED),
    Ready("scconv", "SCConv", "Self-Calibrated Convolution (SCConv)",
          'Liu, Hou, Cheng, Wang, Feng, "Improving Convolutional Networks with Self-Calibrated Convolutions", '
          "CVPR 2020",
          "the backbone's stride-2 Convs into P3, P4 and P5 (base layers {layers}) become SCConv with the same args.",
          "the paper replaces the 3x3 convs of the backbone; SCConv has a Conv's parameter count and a larger field "
          "of view from its down-sampled calibration branch.", replace={f: [3, 5, 7] for f in FAMILIES}),
    Ready("acmix", "ACmix", "ACmix (convolution + self-attention)",
          'Pan, Ge, Lu, Song, Chen, Huang, Huang, "On the Integration of Self-Attention and Convolution", CVPR 2022',
          "the two stride-2 Convs into P5/32, in the backbone and in the neck (base layers {layers}), become ACmix "
          "with the same args.",
          "the paper replaces 3x3 convs (and window attention) by ACmix; its 7x7-window attention path is about 6x a "
          "Conv's cost, so it is used where the maps are smallest.",
          replace={f: [7, NECK_P5_DOWN[f]] for f in FAMILIES}),
]


def _base(family: str) -> str:
    import ultralytics

    return (Path(ultralytics.__file__).parent / "cfg/models" / FAMILIES[family]).read_text()


# Selective Query Recollection: Ultralytics' RT-DETR YAMLs with the `sqr:` key added (a training strategy, no new rows)
SQR_BASES = {"rtdetr-l": "RT-DETR-l", "rtdetr-x": "RT-DETR-x", "rtdetr-resnet50": "RT-DETR-ResNet50",
             "rtdetr-resnet101": "RT-DETR-ResNet101"}  # fmt: skip


def build_sqr_text(stem: str) -> str:
    import ultralytics

    base = (Path(ultralytics.__file__).parent / "cfg/models/rt-detr" / f"{stem}.yaml").read_text()
    body = base[base.index("\nnc:") + 1 :]
    body = body.replace("\n", "\nsqr: selective # query recollection in training: selective (the paper's), dense, false\n", 1)
    head = [
        f"# yolo_attn ready config: {SQR_BASES[stem]} + Selective Query Recollection (SQR)",
        f"# Use as {stem}-sqr.yaml. Made by scripts/make_ready_configs.py from Ultralytics' own {stem}.yaml: only the",
        "# `sqr:` key is added, the rows are RT-DETR's.",
        "#",
        *_wrap("What: in training, every decoder stage also takes the query sets the two stages before it produced "
               "(1, 2, 3, 5, 8, 13 sets over the 6 stages) and all 32 sets are supervised; validation, prediction and "
               "export are RT-DETR's exactly, and weights move both ways between this file and " + stem + ".yaml."),
        *_wrap("Cost: about 5x the decoder's training compute; inference unchanged."),
        *_wrap('Paper: Chen, Zhang, Hu, Huang, Zhu, Savvides, "Enhanced Training of Query-Based Object Detection via '
               'Selective Query Recollection", CVPR 2023'),
        "",
    ]
    return "\n".join(head) + "\n" + body


def build_text(spec: Ready, family: str) -> str:
    from yolo_attn import yamledit

    base = _base(family)
    doc = yamledit.ModelYaml(base, FAMILIES[family])
    if spec.insert:
        rows = spec.insert[family]
        layers = [i for i, _ in rows]
        text = base
        for i, args in sorted(rows, reverse=True):  # from the end, so earlier indices stay valid
            text, _ = yamledit.insert(yamledit.ModelYaml(text), spec.block, [i], args)
        # '# 5 SE after layer 4 (yolo-attn insert)' -> '# 5 SE on backbone P3/8'
        notes = iter(ROLE[family].get(i, f"layer {i}") for i in sorted(layers))
        text = re.sub(r"after layer \d+ \(yolo-attn insert\)", lambda m: f"on {next(notes)}", text)
    else:
        layers = spec.replace[family]
        text, _ = yamledit.replace(doc, layers, spec.block)
    body = text[text.index("\nbackbone:") + 1 :]
    body = re.sub(r"(?m)^# YOLO.*(backbone|head)\n", "", body)
    scales = doc.data["scales"]
    short = f"{family}n-{spec.tag}.yaml ... {family}x-{spec.tag}.yaml"
    head = [
        f"# yolo_attn ready config: {TITLES[family]} + {spec.title}",
        f"# Use as {short} (the letter picks the row of `scales`).",
        "# Made by scripts/make_ready_configs.py from Ultralytics' own " + FAMILIES[family].split("/")[1] + ".",
        "#",
        *_wrap("Where: " + spec.where.format(layers=", ".join(map(str, layers)))),
        *_wrap("Why: " + spec.why),
        *_wrap("Paper: " + spec.paper),
        "",
        "nc: 80 # number of classes",
        f"scales: # [depth, width, max_channels]; '{family}n-{spec.tag}.yaml' ... '{family}x-{spec.tag}.yaml' "
        "select a row",
        *(f"  {k}: [{v[0]:.2f}, {v[1]:.2f}, {v[2]}]" for k, v in scales.items()),
        "",
    ]
    return "\n".join(head) + "\n" + body


def _wrap(text: str, width: int = 118) -> list[str]:
    import textwrap

    return ["# " + line for line in textwrap.wrap(text, width - 2)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare with the files in model_yamls/")
    args = ap.parse_args(argv)
    out, stale = REPO / "model_yamls", []
    for spec in SPECS:
        for family in FAMILIES:
            path = out / f"{family}-{spec.tag}.yaml"
            text = build_text(spec, family)
            if args.check:
                if not path.is_file() or path.read_text() != text:
                    stale.append(path.name)
            else:
                path.write_text(text)
    for stem in SQR_BASES:
        path, text = out / f"{stem}-sqr.yaml", build_sqr_text(stem)
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
