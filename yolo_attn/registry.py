"""The registry: YAML names -> block classes and the channel rule the model parser applies to each.

A channel rule turns one YAML row into the constructor arguments and the output width reported to the next layer,
the way Ultralytics' ``parse_model`` does for its own modules:

- ``same_width``: channel-preserving block; args = [c1, *yaml_args], output width c1.
- ``conv_width``: width scaled like ``Conv``, c2 = make_divisible(min(c2, max_channels) * width, 8);
  args = [c1, c2, *rest]; repeat blocks also get the depth-scaled repeat count at args[2].
- ``fused_width``: multi-input block; ``from`` is a list, c1 = [widths of every input]; c2 scaled like ``Conv``.
- ``fused_width_or_equal``: as ``fused_width``, but c2 may be omitted when all inputs have the same width.
- ``space_to_depth_width``: output width c1 * scale^2.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Callable

from ultralytics.utils.ops import make_divisible

from . import modules as M
from .modules import sqr as _sqr


class LayerError(ValueError):
    """A YAML row that yolo_attn cannot build; the message names the layer index, the block and what was expected."""

    def __init__(self, index, block: str, message: str):
        self.index, self.block = index, block
        super().__init__(f"yolo_attn: YAML layer {index} ({block}): {message}")


class YAMLKeyError(ValueError):
    """A top-level model YAML key that yolo_attn reads (``sqr``) with a value it cannot use."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"yolo_attn: model YAML key {key!r}: {message}")


class UnknownBlockError(LayerError, KeyError):
    """Unknown YAML module name; also a KeyError, which is what Ultralytics raises for one."""

    __str__ = ValueError.__str__  # KeyError would quote the message


@dataclass
class Layer:
    """One YAML row as the parser sees it: index, 'from', repeats, block name, args, and the widths so far."""

    index: int
    f: int | list
    n: int
    name: str
    args: list
    ch: list
    width: float
    max_channels: float
    yaml_n: int = 1  # repeats as written in the YAML, before depth scaling

    def error(self, message: str) -> LayerError:
        return LayerError(self.index, self.name, message)

    def single_input(self) -> int:
        """Width of the one input named by ``from``."""
        if not isinstance(self.f, int):
            raise self.error(f"takes one input; 'from' must be a single layer index, got {self.f!r}")
        return self.ch[self.f]

    def inputs(self, count: int | None) -> list[int]:
        """Widths of the inputs named by a ``from`` list of ``count`` entries (None: two or more)."""
        f = self.f
        if not isinstance(f, (list, tuple)) or not all(isinstance(x, int) for x in f):
            raise self.error(f"fuses several inputs; 'from' must be a list of layer indices, got {f!r}")
        if (count is not None and len(f) != count) or (count is None and len(f) < 2):
            want = f"exactly {count}" if count is not None else "at least 2"
            raise self.error(f"expects {want} inputs in 'from', got {len(f)}: {list(f)}")
        return [self.ch[x] for x in f]

    def scaled(self, c2) -> int:
        """Output width scaled exactly like ``Conv``'s."""
        if isinstance(c2, bool) or not isinstance(c2, (int, float)) or c2 <= 0:
            raise self.error(f"first argument must be the output width (a positive number), got {c2!r}")
        return make_divisible(min(c2, self.max_channels) * self.width, 8)

    def single_repeat(self) -> None:
        if self.yaml_n != 1:
            raise self.error(f"repeats must be 1 for this block (it changes width or fuses inputs), got {self.yaml_n}")


ChannelRule = Callable[[Layer], "tuple[int, list, int]"]  # Layer -> (c2, constructor args, repeats)


def same_width(layer: Layer):
    c1 = layer.single_input()
    return c1, [c1, *layer.args], layer.n


def conv_width(layer: Layer):
    c1 = layer.single_input()
    layer.single_repeat()
    if not layer.args:
        raise layer.error("needs the output width as its first argument, like Conv: [c2, ...]")
    c2 = layer.scaled(layer.args[0])
    return c2, [c1, c2, *layer.args[1:]], 1


def conv_width_repeat(layer: Layer):
    c1 = layer.single_input()
    if not layer.args:
        raise layer.error("needs the output width as its first argument, like C2f: [c2, ...]")
    c2 = layer.scaled(layer.args[0])
    return c2, [c1, c2, layer.n, *layer.args[1:]], 1


def _fused(layer: Layer, count: int | None, optional_c2: bool):
    c1 = layer.inputs(count)
    layer.single_repeat()
    if layer.args and layer.args[0] is not None:
        c2 = layer.scaled(layer.args[0])
    elif not optional_c2:
        raise layer.error(f"needs the output width as its first argument: [c2, ...]; inputs have widths {c1}")
    elif len(set(c1)) == 1:
        c2 = c1[0]
    else:
        raise layer.error(
            f"inputs have different widths {c1}; give an output width [c2] (each input is projected to it by a "
            "1x1 Conv) or feed inputs of equal width"
        )
    return c2, [c1, c2, *layer.args[1:]], 1


def fused_width(layer: Layer):
    return _fused(layer, None, optional_c2=False)


def fused_width_or_equal(layer: Layer):
    return _fused(layer, 2, optional_c2=True)


def space_to_depth_width(layer: Layer):
    c1 = layer.single_input()
    layer.single_repeat()
    scale = layer.args[0] if layer.args else 2
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise layer.error(f"scale must be an integer >= 2, got {scale!r}")
    return c1 * scale * scale, [c1, *layer.args], 1


@dataclass(frozen=True)
class BlockSpec:
    """A registered block: its YAML name, class, channel rule, kind, paper and YAML argument signature."""

    name: str
    cls: type
    rule: ChannelRule
    kind: str
    paper: str
    yaml_args: str
    example: str

    def build_args(self, layer: Layer) -> tuple[int, list, int]:
        """Apply the channel rule, then check the result against the constructor's signature."""
        c2, args, n = self.rule(layer)
        try:
            inspect.signature(self.cls).bind(*args)
        except TypeError:
            got = layer.args
            raise layer.error(
                f"got YAML args {got!r}; expected {self.yaml_args} (the input width is filled in from 'from')"
            ) from None
        return c2, args, n


BLOCKS: dict[str, BlockSpec] = {}


def register(spec: BlockSpec) -> BlockSpec:
    """Add a block to the registry (names are unique)."""
    if spec.name in BLOCKS and BLOCKS[spec.name].cls is not spec.cls:
        raise ValueError(f"yolo_attn: block name {spec.name!r} is already registered to {BLOCKS[spec.name].cls}")
    BLOCKS[spec.name] = spec
    return spec


def get(name: str) -> BlockSpec | None:
    return BLOCKS.get(name)


def suggest(name: str, known: list[str]) -> list[str]:
    """Closest known names to ``name``: case-insensitive equality first, then difflib's close matches."""
    exact = [k for k in known if k.lower() == name.lower()]
    lowered = {k.lower(): k for k in known}
    close = [lowered[k] for k in difflib.get_close_matches(name.lower(), list(lowered), n=4, cutoff=0.6)]
    return list(dict.fromkeys(exact + close))[:4]


_A, _F, _C = "attention", "fusion", "conv"
for _spec in (
    # attention.py
    BlockSpec("CA", M.CA, same_width, _A, "Hou, Zhou, Feng, Coordinate Attention, CVPR 2021",
              "[reduction=32, min_mid=8]", "[-1, 1, CA, []]"),
    BlockSpec("SimAM", M.SimAM, same_width, _A, "Yang et al., SimAM, ICML 2021",
              "[e_lambda=1e-4]", "[-1, 1, SimAM, []]"),
    BlockSpec("CBAM", M.CBAM, same_width, _A, "Woo et al., CBAM, ECCV 2018",
              "[reduction=16, kernel_size=7]", "[-1, 1, CBAM, []]"),
    BlockSpec("MSCAM", M.MSCAM, same_width, _A, "Dai et al., Attentional Feature Fusion (MS-CAM), WACV 2021",
              "[reduction=4]", "[-1, 1, MSCAM, []]"),
    # channel.py
    BlockSpec("SE", M.SE, same_width, _A, "Hu, Shen, Sun, Squeeze-and-Excitation Networks, CVPR 2018",
              "[reduction=16]", "[-1, 1, SE, []]"),
    BlockSpec("ECA", M.ECA, same_width, _A, "Wang et al., ECA-Net, CVPR 2020",
              "[kernel_size=None (adaptive), gamma=2, b=1]", "[-1, 1, ECA, []]"),
    BlockSpec("GAM", M.GAM, same_width, _A, "Liu, Shao, Hoffmann, Global Attention Mechanism, arXiv 2112.05561",
              "[reduction=4]", "[-1, 1, GAM, []]"),
    BlockSpec("GCBlock", M.GCBlock, same_width, _A, "Cao et al., GCNet (global context block), ICCVW 2019 / TPAMI",
              "[reduction=16]", "[-1, 1, GCBlock, []]"),
    BlockSpec("scSE", M.scSE, same_width, _A, "Roy, Navab, Wachinger, concurrent spatial and channel SE, MICCAI 2018 / TMI",
              "[reduction=2, aggregation=max]", "[-1, 1, scSE, []]"),
    BlockSpec("BAM", M.BAM, same_width, _A, "Park, Woo, Lee, Kweon, Bottleneck Attention Module, BMVC 2018",
              "[reduction=16, dilation=4]", "[-1, 1, BAM, []]"),
    # spatial.py
    BlockSpec("TripletAttention", M.TripletAttention, same_width, _A, "Misra et al., Rotate to Attend (Triplet Attention), WACV 2021",
              "[kernel_size=7]", "[-1, 1, TripletAttention, []]"),
    BlockSpec("StripPooling", M.StripPooling, same_width, _A, "Hou et al., Strip Pooling (SPM), CVPR 2020",
              "[]", "[-1, 1, StripPooling, []]"),
    BlockSpec("LKA", M.LKA, same_width, _A, "Guo et al., Visual Attention Network (large kernel attention), CVMJ 2023",
              "[kernel_size=21, dilation=3]", "[-1, 1, LKA, []]"),
    BlockSpec("VANAttention", M.VANAttention, same_width, _A, "Guo et al., Visual Attention Network (attention unit), CVMJ 2023",
              "[kernel_size=21, dilation=3]", "[-1, 1, VANAttention, []]"),
    BlockSpec("STN", M.STN, same_width, _A, "Jaderberg et al., Spatial Transformer Networks, NeurIPS 2015",
              "[reduction=8]", "[-1, 1, STN, []]"),
    BlockSpec("ResidualAttention", M.ResidualAttention, same_width, _A, "Wang et al., Residual Attention Network, CVPR 2017",
              "[levels=2, p=1, t=2, r=1]", "[-1, 1, ResidualAttention, [2]]"),
    # selfattn.py
    BlockSpec("PAM", M.PAM, same_width, _A, "Fu et al., DANet (position attention), CVPR 2019",
              "[reduction=8]", "[-1, 1, PAM, []]"),
    BlockSpec("CAM", M.CAM, same_width, _A, "Fu et al., DANet (channel attention), CVPR 2019",
              "[]", "[-1, 1, CAM, []]"),
    BlockSpec("DABlock", M.DABlock, same_width, _A, "Fu et al., DANet (dual attention head), CVPR 2019",
              "[reduction=4]", "[-1, 1, DABlock, []]"),
    BlockSpec("PSA_p", M.PSA_p, same_width, _A, "Liu et al., Polarized Self-Attention (parallel), arXiv 2107.00782",
              "[]", "[-1, 1, PSA_p, []]"),
    BlockSpec("PSA_s", M.PSA_s, same_width, _A, "Liu et al., Polarized Self-Attention (sequential), arXiv 2107.00782",
              "[]", "[-1, 1, PSA_s, []]"),
    BlockSpec("RGA_S", M.RGA_S, same_width, _A, "Zhang et al., Relation-Aware Global Attention (spatial), CVPR 2020",
              "[size=20, s1=8, s2=8]", "[-1, 1, RGA_S, [20]]"),
    BlockSpec("RGA_C", M.RGA_C, same_width, _A, "Zhang et al., Relation-Aware Global Attention (channel), CVPR 2020",
              "[size=20, s1=8, s2=8]", "[-1, 1, RGA_C, [20]]"),
    BlockSpec("RGA", M.RGA, same_width, _A, "Zhang et al., Relation-Aware Global Attention (RGA-SC), CVPR 2020",
              "[size=20, s1=8, s2=8]", "[-1, 1, RGA, [20]]"),
    BlockSpec("FANChannelAttention", M.FANChannelAttention, same_width, _A,
              "Zhou et al., Fully Attentional Networks (channel processing), ICML 2022",
              "[num_heads=8, mlp_ratio=4.0, qkv_bias=True, eta=1.0]", "[-1, 1, FANChannelAttention, []]"),
    # fusion.py
    BlockSpec("ASFF", M.ASFF, fused_width, _F, "Liu, Huang, Wang, Learning Spatial Fusion (ASFF), 2019",
              "[c2, level=0, compress=16]", "[[15, 18, 21], 1, ASFF, [256, 0]]"),
    BlockSpec("AFF", M.AFF, fused_width_or_equal, _F, "Dai et al., Attentional Feature Fusion, WACV 2021",
              "[c2=None, reduction=4]", "[[-1, 6], 1, AFF, [512]]"),
    BlockSpec("iAFF", M.iAFF, fused_width_or_equal, _F, "Dai et al., Attentional Feature Fusion (iterative), WACV 2021",
              "[c2=None, reduction=4]", "[[-1, 6], 1, iAFF, [512]]"),
    # cascade.py
    BlockSpec("CFNetFocal", M.CFNetFocal, same_width, _C, "Zhang, Li, Li, Hu, Cascade Fusion Network (focal block), arXiv 2302.06052",
              "[expansion=4, kernel_size=7, dilation=3, layer_scale=1e-6]", "[-1, 1, CFNetFocal, []]"),
    BlockSpec("CFNetTransition", M.CFNetTransition, fused_width, _F,
              "Zhang, Li, Li, Hu, Cascade Fusion Network (transition), arXiv 2302.06052",
              "[c2]", "[[4, 6, 8], 1, CFNetTransition, [256]]"),
    # conv.py
    BlockSpec("SPD", M.SPD, space_to_depth_width, _C, "Sunkara & Luo, SPD-Conv (space-to-depth), ECML-PKDD 2022",
              "[scale=2]", "[-1, 1, SPD, []]"),
    BlockSpec("SPDConv", M.SPDConv, conv_width, _C, "Sunkara & Luo, SPD-Conv, ECML-PKDD 2022",
              "[c2, k=3, s=2, act=True]", "[-1, 1, SPDConv, [128, 3, 2]]"),
    BlockSpec("DCN", M.DCN, conv_width, _C, "Zhu et al., Deformable ConvNets v2, CVPR 2019",
              "[c2, k=3, s=1, p=None, g=1, d=1, act=True, deform_groups=1]", "[-1, 1, DCN, [256, 3, 1]]"),
    # dynconv.py
    BlockSpec("ODConv", M.ODConv, conv_width, _C, "Li, Zhou, Yao, Omni-Dimensional Dynamic Convolution, ICLR 2022",
              "[c2, k=3, s=1, p=None, g=1, d=1, act=True, kernel_num=4, reduction=16]", "[-1, 1, ODConv, [256, 3, 2]]"),
    BlockSpec("RefConv", M.RefConv, conv_width, _C, "Cai, Ding et al., RefConv (refocusing convolution), arXiv 2310.10563",
              "[c2, k=3, s=1, p=None, g=1, d=1, act=True, map_k=3]", "[-1, 1, RefConv, [256, 3, 2]]"),
    BlockSpec("SCConv", M.SCConv, conv_width, _C, "Liu et al., Self-Calibrated Convolutions, CVPR 2020",
              "[c2, k=3, s=1, p=None, g=1, d=1, act=True, pooling_r=4]", "[-1, 1, SCConv, [256, 3, 2]]"),
    BlockSpec("ACmix", M.ACmix, conv_width, _C, "Pan et al., On the Integration of Self-Attention and Convolution (ACmix), CVPR 2022",
              "[c2, k=3, s=1, p=None, g=1, d=1, act=True, k_att=7, head=4]", "[-1, 1, ACmix, [1024, 3, 2]]"),
    BlockSpec("C2f_DCN", M.C2f_DCN, conv_width_repeat, _C, "Zhu et al., Deformable ConvNets v2, CVPR 2019 (in C2f)",
              "[c2, shortcut=False, g=1, e=0.5]", "[-1, 3, C2f_DCN, [512, True]]"),
):  # fmt: skip
    register(_spec)


@dataclass(frozen=True)
class KeySpec:
    """A top-level model YAML key that switches on a training strategy (not a row of the model)."""

    key: str
    name: str
    cls: type
    kind: str
    paper: str
    values: str
    example: str


# Training strategies switched on by a top-level YAML key, read by the parser hook (patch.ParserHooks.built)
KEYS: dict[str, KeySpec] = {
    "sqr": KeySpec("sqr", "SQR", _sqr.SQRDecoder, "training",
                   "Chen et al., Selective Query Recollection, CVPR 2023 (RT-DETR decoders)",
                   f"{' | '.join(_sqr.MODES)} | false", "sqr: selective"),
}  # fmt: skip


@dataclass(frozen=True)
class Placement:
    """Where a block's ready configs put it, in roles that resolve on any Ultralytics model YAML (yamledit.ROLES).

    edit: ``insert`` (a row after each role layer, with ``args[k]`` or ``[]``), ``replace`` (each role layer becomes
    the block, as ``yolo-attn replace`` swaps it) or ``fuse`` (one row per head input between the neck and the head).
    ``suffix`` names the configs: ``yolov8-<suffix>.yaml``, ``yolo26n-<suffix>.yaml``, ``yolo11n-seg-<suffix>.yaml``.
    title, paper, where (``{layers}``: the base layers used) and why go into the config's header.
    """

    block: str
    suffix: str
    edit: str
    roles: tuple
    args: tuple
    title: str
    paper: str
    where: str
    why: str


PLACEMENTS: dict[str, Placement] = {p.suffix: p for p in (
    Placement("CA", "ca", "insert", ("backbone-p3", "backbone-p4", "backbone-p5"), (),
              "Coordinate Attention (CA)", 'Hou, Zhou, Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021',
              "one CA row after each backbone stage output the neck reads (base layers {layers}: P3/8, P4/16, P5/32), so "
              "every later layer and the neck's lateral connections see the attended maps.",
              "CA refines backbone features inside the network, as the paper inserts it into each backbone block."),
    Placement("SimAM", "simam", "insert", ("backbone-p3", "backbone-p4", "backbone-p5"), (),
              "SimAM", 'Yang, Zhang, Li, Xie, "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural '
              'Networks", ICML 2021',
              "one SimAM row after each backbone stage output the neck reads (base layers {layers}: P3/8, P4/16, P5/32).",
              "SimAM weights backbone neurons, as the paper adds it to each backbone block; it has no parameters."),
    Placement("CBAM", "cbam", "insert", ("backbone-p3", "backbone-p4", "backbone-p5"), (),
              "CBAM", 'Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018',
              "one CBAM row after each backbone stage output the neck reads (base layers {layers}: P3/8, P4/16, P5/32).",
              "CBAM (channel then spatial attention) refines backbone features, as the paper places it in each backbone "
              "block."),
    Placement("ASFF", "asff", "fuse", ("neck-outputs",), (),
              "ASFF", 'Liu, Huang, Wang, "Learning Spatial Fusion for Single-Shot Object Detection", 2019 (arXiv 1911.09516)',
              "three ASFF rows between the neck outputs (base layers {layers}) and the head, one per level; args [c2, "
              "level], level indexing the 'from' list (0 = P3/8).",
              "the paper fuses the feature pyramid's levels with learned per-pixel weights right before each head."),
    Placement("SPDConv", "spdconv", "replace", ("strided-convs",), (),
              "SPD-Conv", 'Sunkara, Luo, "No More Strided Convolutions or Pooling: A New CNN Building Block for '
              'Low-Resolution Images and Small Objects", ECML-PKDD 2022',
              "every stride-2 Conv except the stem (base layers {layers}) becomes SPDConv with the same args: "
              "space-to-depth (x4 channels, /2 size) then a stride-1 conv.",
              "the paper replaces each strided conv of the backbone and neck (keeping the stem) so no pixel is discarded, "
              "which helps small objects and low resolution."),
    Placement("AFF", "aff", "replace", ("neck-concats",), (),
              "Attentional Feature Fusion (AFF)", 'Dai, Gieseke, Oehmcke, Wu, Barnard, "Attentional Feature Fusion", WACV 2021',
              "the neck's two-input Concat rows (base layers {layers}) become AFF rows, args [c2] = the lateral input's "
              "width; an input of another width is projected to c2 by a 1x1 Conv first.",
              "the paper replaces the plain sum/concatenation where an FPN-style neck merges a top-down (or bottom-up) "
              "path with a lateral one by attention-weighted fusion."),
    Placement("iAFF", "iaff", "replace", ("neck-concats",), (),
              "iterative Attentional Feature Fusion (iAFF)", 'Dai, Gieseke, Oehmcke, Wu, Barnard, "Attentional Feature '
              'Fusion", WACV 2021',
              "the neck's two-input Concat rows (base layers {layers}) become iAFF rows, args [c2] = the lateral input's "
              "width; an input of another width is projected to c2 by a 1x1 Conv first.",
              "iAFF fuses twice (the first fusion's output drives the second attention), the paper's stronger variant."),
    Placement("C2f_DCN", "dcn", "replace", ("backbone-p3", "backbone-p4", "backbone-p5"), (),
              "deformable convolution v2 (C2f_DCN)", 'Zhu, Hu, Lin, Dai, "Deformable ConvNets v2: More Deformable, Better '
              'Results", CVPR 2019',
              "the backbone's P3, P4 and P5 stage blocks (base layers {layers}, C2f or C3k2) become C2f_DCN, whose "
              "bottlenecks' second 3x3 conv is a modulated deformable conv that starts as the plain conv.",
              "DCNv2 puts deformable convs in the 3x3 convs of the conv3-conv5 stages (strides 8-32) of the backbone."),
    Placement('SE', 'se', 'insert', ('backbone-p3', 'backbone-p4', 'backbone-p5'), (),
              'Squeeze-and-Excitation (SE)',
              'Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018',
              'one SE row after each backbone stage output the neck reads (base layers {layers}: P3/8, P4/16, P5/32).',
              "the paper recalibrates the channels of every residual block's output; the stage outputs are the YOLO "
              'blocks whose features the neck reuses.'),
    Placement('ECA', 'eca', 'insert', ('backbone-p3', 'backbone-p4', 'backbone-p5'), (),
              'Efficient Channel Attention (ECA)',
              'Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural '
              'Networks", CVPR 2020',
              'one ECA row after each backbone stage output the neck reads (base layers {layers}).',
              'the paper puts ECA where SE goes, in every residual block; here at the stage outputs. The 1D kernel size'
              ' follows the width at every scale (k = |log2(C)/2 + 1/2|_odd).'),
    Placement('GAM', 'gam', 'insert', ('backbone-p3', 'backbone-p4'), (),
              'Global Attention Mechanism (GAM)',
              'Liu, Shao, Hoffmann, "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial '
              'Interactions", arXiv 2112.05561, 2021',
              'one GAM row after the backbone P3/8 and P4/16 stage outputs (base layers {layers}).',
              'the paper puts GAM where CBAM goes in ResNet stages; its two 7x7 convs over C/4 channels cost about 25 '
              'C^2 parameters, so P5 (the widest stage, +50% parameters at n scale) is left out.'),
    Placement('GCBlock', 'gc', 'insert', ('backbone-p3', 'backbone-p4', 'backbone-p5'), (),
              'Global Context block (GC)',
              'Cao, Xu, Lin, Wei, Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond", ICCVW '
              '2019 / TPAMI 2020',
              'one GCBlock row after each backbone stage output the neck reads (base layers {layers}).',
              'the paper adds GC to every residual block of stages c3-c5 (P3-P5). A new GCBlock is the identity (its '
              "last conv starts at zero, as in the paper's code)."),
    Placement('scSE', 'scse', 'insert', ('neck-outputs',), (),
              'concurrent spatial and channel SE (scSE)',
              'Roy, Navab, Wachinger, "Concurrent Spatial and Channel Squeeze & Excitation in Fully Convolutional '
              'Networks", MICCAI 2018 / IEEE TMI 2019',
              'one scSE row on each neck output Detect reads (base layers {layers}: P3, P4, P5 outputs).',
              'the paper recalibrates the output of every encoder and decoder block of a fully convolutional network; '
              "the neck outputs are YOLO's decoder outputs. Aggregation max-out (the TMI paper's best)."),
    Placement('BAM', 'bam', 'insert', ('backbone-p2', 'backbone-p3', 'backbone-p4'), (),
              'Bottleneck Attention Module (BAM)',
              'Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018',
              'one BAM row at the end of the P2, P3 and P4 stages, before each stride-2 Conv (base layers {layers}).',
              'the paper places BAM at every bottleneck of the network, where the feature map is down-sampled.'),
    Placement('TripletAttention', 'triplet', 'insert', ('backbone-p3', 'backbone-p4', 'backbone-p5'), (),
              'Triplet Attention',
              'Misra, Nalamada, Arasanipalai, Hou, "Rotate to Attend: Convolutional Triplet Attention Module", WACV '
              '2021',
              'one TripletAttention row after each backbone stage output the neck reads (base layers {layers}).',
              'the paper adds it to every residual block; at the stage outputs it costs 300 parameters each.'),
    Placement('StripPooling', 'strip', 'insert', ('backbone-p4', 'backbone-p5'), (),
              'Strip Pooling (SPM)',
              'Hou, Zhang, Cheng, Feng, "Strip Pooling: Rethinking Spatial Pooling for Scene Parsing", CVPR 2020',
              'one StripPooling row after the backbone P4/16 and P5/32 stage outputs (base layers {layers}).',
              'the paper adds strip pooling modules to the last stages of the backbone, where long-range context along '
              'rows and columns helps elongated objects.'),
    Placement('VANAttention', 'van', 'insert', ('backbone-p3', 'backbone-p4', 'backbone-p5'), (),
              'Visual Attention Network attention unit (LKA)',
              'Guo, Lu, Liu, Cheng, Hu, "Visual Attention Network", Computational Visual Media 2023 (arXiv 2202.09741)',
              'one VANAttention row (1x1 -> GELU -> large kernel attention -> 1x1, plus shortcut) after each backbone '
              'stage output the neck reads (base layers {layers}).',
              'VAN uses the attention unit in every block of every stage; LKA (a 21x21 receptive field from a 5x5 '
              "depth-wise, a 7x7 dilation-3 depth-wise and a 1x1 conv) is the unit's core. Use LKA alone for a lighter "
              'gate.'),
    Placement('PSA_p', 'psa', 'insert', ('backbone-p3', 'backbone-p4', 'backbone-p5'), (),
              'Polarized Self-Attention, parallel (PSA_p)',
              'Liu, Liu, Fan, Huang, "Polarized Self-Attention: Towards High-quality Pixel-wise Regression", arXiv '
              '2107.00782, 2021',
              'one PSA_p row after each backbone stage output the neck reads (base layers {layers}).',
              'the paper adds PSA to the backbone blocks of pixel-wise regression networks; both layouts are offered '
              '(PSA_s: sequential, a one-word swap).'),
    Placement('DABlock', 'danet', 'insert', ('backbone-last',), (),
              'DANet dual attention (DABlock: PAM + CAM)',
              'Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019',
              'one DABlock row after the last backbone layer (base layer {layers}), at P5/32.',
              'the paper puts the dual attention head (position attention PAM and channel attention CAM, summed) on the'
              " backbone output. PAM's memory grows with (H*W)^2, which is small only at P5."),
    Placement('RGA', 'rga', 'insert', ('backbone-p4', 'backbone-p5'), ('[20]', '[20]'),
              'Relation-Aware Global Attention (RGA-SC)',
              'Zhang, Lan, Zeng, Jin, Chen, "Relation-Aware Global Attention for Person Re-identification", CVPR 2020',
              'one RGA row (spatial then channel relations) after the backbone P4/16 and P5/32 stage outputs (base '
              'layers {layers}), relations on a 20x20 grid.',
              'the paper adds RGA after the backbone stages at a fixed input size; at imgsz 640 P5 is exactly 20x20 and'
              ' P4 is pooled to it, other sizes are pooled to the grid and the attention map is resized back.'),
    Placement('ResidualAttention', 'resatt', 'insert', ('backbone-p3', 'backbone-p4', 'backbone-p5'), ('[3]', '[2]', '[1]'),
              'Residual Attention',
              'Wang, Jiang, Qian, Yang, Li, Zhang, Wang, Tang, "Residual Attention Network for Image Classification", '
              'CVPR 2017',
              'one ResidualAttention module after each backbone stage output the neck reads (base layers {layers}), '
              'with 3, 2 and 1 mask-branch down-sampling levels at P3, P4, P5.',
              'the paper puts one attention module in each stage, with more soft-mask levels at higher resolution so '
              'every mask reaches the same coarsest size.'),
    Placement('FANChannelAttention', 'fan', 'insert', ('backbone-p4', 'backbone-p5'), (),
              'Fully Attentional Networks channel processing (FAN)',
              'Zhou, Yu, Xie, Xiao, Anandkumar, Feng, Alvarez, "Understanding The Robustness in Vision Transformers", '
              'ICML 2022',
              'one FANChannelAttention row after the backbone P4/16 and P5/32 stage outputs (base layers {layers}).',
              "FAN replaces each transformer block's MLP by attentional channel processing; on a CNN it refines the "
              "deep stages' channels (its 4C hidden layer is heavy at P3)."),
    Placement('STN', 'stn', 'insert', ('backbone-p5',), (),
              'Spatial Transformer (STN)',
              'Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer Networks", NeurIPS 2015',
              'one STN row after the backbone P5/32 stage output (base layer {layers}), before the last backbone '
              'layers.',
              'the paper inserts spatial transformers between conv layers to undo distortions. In a detector any warp '
              'moves features off the box grid, so only the coarsest level is warped, and the STN starts as the '
              'identity transform.'),
    Placement('ODConv', 'odconv', 'replace', ('down-p3', 'down-p4'), (),
              'Omni-Dimensional Dynamic Convolution (ODConv 4x)',
              'Li, Zhou, Yao, "Omni-Dimensional Dynamic Convolution", ICLR 2022',
              "the backbone's stride-2 Convs into P3 and P4 (base layers {layers}) become ODConv with the same args; 4 "
              "candidate kernels (the paper's 4x), attention reduction 1/16.",
              "the paper replaces the 3x3 convs of the backbone. 4x multiplies those convs' weights by 4, so the widest"
              ' stage (P5) keeps its Conv.'),
    Placement('RefConv', 'refconv', 'replace', ('strided-convs',), (),
              'Re-parameterised Refocusing Convolution (RefConv)',
              'Cai, Ding, et al., "RefConv: Re-parameterized Refocusing Convolution for Powerful ConvNets", arXiv '
              '2310.10563, 2023',
              'every 3x3 stride-2 Conv except the stem (base layers {layers}) becomes RefConv with the same args.',
              'the paper refocuses every regular conv; in deploy form (model.fuse()) RefConv is a plain conv, so it '
              'costs nothing at inference. Best started from pretrained weights (the basis kernels stay frozen).'),
    Placement('SCConv', 'scconv', 'replace', ('down-p3', 'down-p4', 'down-p5'), (),
              'Self-Calibrated Convolution (SCConv)',
              'Liu, Hou, Cheng, Wang, Feng, "Improving Convolutional Networks with Self-Calibrated Convolutions", CVPR '
              '2020',
              "the backbone's stride-2 Convs into P3, P4 and P5 (base layers {layers}) become SCConv with the same "
              'args.',
              "the paper replaces the 3x3 convs of the backbone; SCConv has a Conv's parameter count and a larger field"
              ' of view from its down-sampled calibration branch.'),
    Placement('ACmix', 'acmix', 'replace', ('down-p5', 'neck-down-p5'), (),
              'ACmix (convolution + self-attention)',
              'Pan, Ge, Lu, Song, Chen, Huang, Huang, "On the Integration of Self-Attention and Convolution", CVPR 2022',
              'the two stride-2 Convs into P5/32, in the backbone and in the neck (base layers {layers}), become ACmix '
              'with the same args.',
              'the paper replaces 3x3 convs (and window attention) by ACmix; its 7x7-window attention path is about 6x '
              "a Conv's cost, so it is used where the maps are smallest."),
)}  # fmt: skip


def placement(suffix: str) -> Placement | None:
    return PLACEMENTS.get(suffix)
