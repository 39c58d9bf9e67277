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
from pathlib import Path
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
    """A registered block: its YAML name, class, channel rule, kind, title, paper (the one citation of the block:
    ``yolo-attn list``, config headers) and YAML argument signature."""

    name: str
    cls: type
    rule: ChannelRule
    kind: str
    title: str
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


def did_you_mean(name: str, known: list[str]) -> str:
    """'did you mean A, B? ' for the closest known names, or '' (every error's hint is worded here)."""
    close = suggest(name, known)
    return f"did you mean {', '.join(close)}? " if close else ""


_A, _F, _C = "attention", "fusion", "conv"
for _spec in (
    # attention.py
    BlockSpec("CA", M.CA, same_width, _A,
              'Coordinate Attention (CA)',
              'Hou, Zhou, Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021',
              "[reduction=32, min_mid=8]", "[-1, 1, CA, []]"),
    BlockSpec("SimAM", M.SimAM, same_width, _A,
              'SimAM',
              'Yang, Zhang, Li, Xie, "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks", ICML 2021',
              "[e_lambda=1e-4]", "[-1, 1, SimAM, []]"),
    BlockSpec("CBAM", M.CBAM, same_width, _A,
              'CBAM',
              'Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018',
              "[reduction=16, kernel_size=7]", "[-1, 1, CBAM, []]"),
    BlockSpec("MSCAM", M.MSCAM, same_width, _A,
              'multi-scale channel attention of AFF (MS-CAM)',
              'Dai, Gieseke, Oehmcke, Wu, Barnard, "Attentional Feature Fusion", WACV 2021',
              "[reduction=4]", "[-1, 1, MSCAM, []]"),
    # channel.py
    BlockSpec("SE", M.SE, same_width, _A,
              'Squeeze-and-Excitation (SE)',
              'Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018',
              "[reduction=16]", "[-1, 1, SE, []]"),
    BlockSpec("ECA", M.ECA, same_width, _A,
              'Efficient Channel Attention (ECA)',
              'Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks", CVPR 2020',
              "[kernel_size=None (adaptive), gamma=2, b=1]", "[-1, 1, ECA, []]"),
    BlockSpec("GAM", M.GAM, same_width, _A,
              'Global Attention Mechanism (GAM)',
              'Liu, Shao, Hoffmann, "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial Interactions", arXiv 2112.05561, 2021',
              "[reduction=4]", "[-1, 1, GAM, []]"),
    BlockSpec("GCBlock", M.GCBlock, same_width, _A,
              'Global Context block (GC)',
              'Cao, Xu, Lin, Wei, Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond", ICCVW 2019 / TPAMI 2020',
              "[reduction=16]", "[-1, 1, GCBlock, []]"),
    BlockSpec("scSE", M.scSE, same_width, _A,
              'concurrent spatial and channel SE (scSE)',
              'Roy, Navab, Wachinger, "Concurrent Spatial and Channel Squeeze & Excitation in Fully Convolutional Networks", MICCAI 2018 / IEEE TMI 2019',
              "[reduction=2, aggregation=max]", "[-1, 1, scSE, []]"),
    BlockSpec("BAM", M.BAM, same_width, _A,
              'Bottleneck Attention Module (BAM)',
              'Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018',
              "[reduction=16, dilation=4]", "[-1, 1, BAM, []]"),
    # spatial.py
    BlockSpec("TripletAttention", M.TripletAttention, same_width, _A,
              'Triplet Attention',
              'Misra, Nalamada, Arasanipalai, Hou, "Rotate to Attend: Convolutional Triplet Attention Module", WACV 2021',
              "[kernel_size=7]", "[-1, 1, TripletAttention, []]"),
    BlockSpec("StripPooling", M.StripPooling, same_width, _A,
              'Strip Pooling (SPM)',
              'Hou, Zhang, Cheng, Feng, "Strip Pooling: Rethinking Spatial Pooling for Scene Parsing", CVPR 2020',
              "[]", "[-1, 1, StripPooling, []]"),
    BlockSpec("LKA", M.LKA, same_width, _A,
              'large kernel attention of VAN (LKA)',
              'Guo, Lu, Liu, Cheng, Hu, "Visual Attention Network", Computational Visual Media 2023 (arXiv 2202.09741)',
              "[kernel_size=21, dilation=3]", "[-1, 1, LKA, []]"),
    BlockSpec("VANAttention", M.VANAttention, same_width, _A,
              'Visual Attention Network attention unit (LKA)',
              'Guo, Lu, Liu, Cheng, Hu, "Visual Attention Network", Computational Visual Media 2023 (arXiv 2202.09741)',
              "[kernel_size=21, dilation=3]", "[-1, 1, VANAttention, []]"),
    BlockSpec("STN", M.STN, same_width, _A,
              'Spatial Transformer (STN)',
              'Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer Networks", NeurIPS 2015',
              "[reduction=8]", "[-1, 1, STN, []]"),
    BlockSpec("ResidualAttention", M.ResidualAttention, same_width, _A,
              'Residual Attention',
              'Wang, Jiang, Qian, Yang, Li, Zhang, Wang, Tang, "Residual Attention Network for Image Classification", CVPR 2017',
              "[levels=2, p=1, t=2, r=1]", "[-1, 1, ResidualAttention, [2]]"),
    # selfattn.py
    BlockSpec("PAM", M.PAM, same_width, _A,
              'DANet position attention module (PAM)',
              'Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019',
              "[reduction=8]", "[-1, 1, PAM, []]"),
    BlockSpec("CAM", M.CAM, same_width, _A,
              'DANet channel attention module (CAM)',
              'Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019',
              "[]", "[-1, 1, CAM, []]"),
    BlockSpec("DABlock", M.DABlock, same_width, _A,
              'DANet dual attention (DABlock: PAM + CAM)',
              'Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019',
              "[reduction=4]", "[-1, 1, DABlock, []]"),
    BlockSpec("PSA_p", M.PSA_p, same_width, _A,
              'Polarized Self-Attention, parallel (PSA_p)',
              'Liu, Liu, Fan, Huang, "Polarized Self-Attention: Towards High-quality Pixel-wise Regression", arXiv 2107.00782, 2021',
              "[]", "[-1, 1, PSA_p, []]"),
    BlockSpec("PSA_s", M.PSA_s, same_width, _A,
              'Polarized Self-Attention, sequential (PSA_s)',
              'Liu, Liu, Fan, Huang, "Polarized Self-Attention: Towards High-quality Pixel-wise Regression", arXiv 2107.00782, 2021',
              "[]", "[-1, 1, PSA_s, []]"),
    BlockSpec("RGA_S", M.RGA_S, same_width, _A,
              'Relation-Aware Global Attention, spatial (RGA-S)',
              'Zhang, Lan, Zeng, Jin, Chen, "Relation-Aware Global Attention for Person Re-identification", CVPR 2020',
              "[size=20, s1=8, s2=8]", "[-1, 1, RGA_S, [20]]"),
    BlockSpec("RGA_C", M.RGA_C, same_width, _A,
              'Relation-Aware Global Attention, channel (RGA-C)',
              'Zhang, Lan, Zeng, Jin, Chen, "Relation-Aware Global Attention for Person Re-identification", CVPR 2020',
              "[size=20, s1=8, s2=8]", "[-1, 1, RGA_C, [20]]"),
    BlockSpec("RGA", M.RGA, same_width, _A,
              'Relation-Aware Global Attention (RGA-SC)',
              'Zhang, Lan, Zeng, Jin, Chen, "Relation-Aware Global Attention for Person Re-identification", CVPR 2020',
              "[size=20, s1=8, s2=8]", "[-1, 1, RGA, [20]]"),
    BlockSpec("FANChannelAttention", M.FANChannelAttention, same_width, _A,
              'Fully Attentional Networks channel processing (FAN)',
              'Zhou, Yu, Xie, Xiao, Anandkumar, Feng, Alvarez, "Understanding The Robustness in Vision Transformers", ICML 2022',
              "[num_heads=8, mlp_ratio=4.0, qkv_bias=True, eta=1.0]", "[-1, 1, FANChannelAttention, []]"),
    # fusion.py
    BlockSpec("ASFF", M.ASFF, fused_width, _F,
              'ASFF',
              'Liu, Huang, Wang, "Learning Spatial Fusion for Single-Shot Object Detection", 2019 (arXiv 1911.09516)',
              "[c2, level=0, compress=16]", "[[15, 18, 21], 1, ASFF, [256, 0]]"),
    BlockSpec("AFF", M.AFF, fused_width_or_equal, _F,
              'Attentional Feature Fusion (AFF)',
              'Dai, Gieseke, Oehmcke, Wu, Barnard, "Attentional Feature Fusion", WACV 2021',
              "[c2=None, reduction=4]", "[[-1, 6], 1, AFF, [512]]"),
    BlockSpec("iAFF", M.iAFF, fused_width_or_equal, _F,
              'iterative Attentional Feature Fusion (iAFF)',
              'Dai, Gieseke, Oehmcke, Wu, Barnard, "Attentional Feature Fusion", WACV 2021',
              "[c2=None, reduction=4]", "[[-1, 6], 1, iAFF, [512]]"),
    # cascade.py
    BlockSpec("CFNetFocal", M.CFNetFocal, same_width, _C,
              'Cascade Fusion Network focal block (CFNet)',
              'Zhang, Li, Li, Hu, "CFNet: Cascade Fusion Network for Dense Prediction", arXiv 2302.06052, 2023',
              "[expansion=4, kernel_size=7, dilation=3, layer_scale=1e-6]", "[-1, 1, CFNetFocal, []]"),
    BlockSpec("CFNetTransition", M.CFNetTransition, fused_width, _F,
              'Cascade Fusion Network transition (CFNet)',
              'Zhang, Li, Li, Hu, "CFNet: Cascade Fusion Network for Dense Prediction", arXiv 2302.06052, 2023',
              "[c2]", "[[4, 6, 8], 1, CFNetTransition, [256]]"),
    # conv.py
    BlockSpec("SPD", M.SPD, space_to_depth_width, _C,
              'space-to-depth of SPD-Conv (SPD)',
              'Sunkara, Luo, "No More Strided Convolutions or Pooling: A New CNN Building Block for Low-Resolution Images and Small Objects", ECML-PKDD 2022',
              "[scale=2]", "[-1, 1, SPD, []]"),
    BlockSpec("SPDConv", M.SPDConv, conv_width, _C,
              'SPD-Conv',
              'Sunkara, Luo, "No More Strided Convolutions or Pooling: A New CNN Building Block for Low-Resolution Images and Small Objects", ECML-PKDD 2022',
              "[c2, k=3, s=2, act=True]", "[-1, 1, SPDConv, [128, 3, 2]]"),
    BlockSpec("DCN", M.DCN, conv_width, _C,
              'modulated deformable convolution v2 (DCN)',
              'Zhu, Hu, Lin, Dai, "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019',
              "[c2, k=3, s=1, p=None, g=1, d=1, act=True, deform_groups=1]", "[-1, 1, DCN, [256, 3, 1]]"),
    # dynconv.py
    BlockSpec("ODConv", M.ODConv, conv_width, _C,
              'Omni-Dimensional Dynamic Convolution (ODConv 4x)',
              'Li, Zhou, Yao, "Omni-Dimensional Dynamic Convolution", ICLR 2022',
              "[c2, k=3, s=1, p=None, g=1, d=1, act=True, kernel_num=4, reduction=16]", "[-1, 1, ODConv, [256, 3, 2]]"),
    BlockSpec("RefConv", M.RefConv, conv_width, _C,
              'Re-parameterised Refocusing Convolution (RefConv)',
              'Cai, Ding, et al., "RefConv: Re-parameterized Refocusing Convolution for Powerful ConvNets", arXiv 2310.10563, 2023',
              "[c2, k=3, s=1, p=None, g=1, d=1, act=True, map_k=3]", "[-1, 1, RefConv, [256, 3, 2]]"),
    BlockSpec("SCConv", M.SCConv, conv_width, _C,
              'Self-Calibrated Convolution (SCConv)',
              'Liu, Hou, Cheng, Wang, Feng, "Improving Convolutional Networks with Self-Calibrated Convolutions", CVPR 2020',
              "[c2, k=3, s=1, p=None, g=1, d=1, act=True, pooling_r=4]", "[-1, 1, SCConv, [256, 3, 2]]"),
    BlockSpec("ACmix", M.ACmix, conv_width, _C,
              'ACmix (convolution + self-attention)',
              'Pan, Ge, Lu, Song, Chen, Huang, Huang, "On the Integration of Self-Attention and Convolution", CVPR 2022',
              "[c2, k=3, s=1, p=None, g=1, d=1, act=True, k_att=7, head=4]", "[-1, 1, ACmix, [1024, 3, 2]]"),
    BlockSpec("C2f_DCN", M.C2f_DCN, conv_width_repeat, _C,
              'deformable convolution v2 (C2f_DCN)',
              'Zhu, Hu, Lin, Dai, "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019',
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
    """Where a block's ready configs and composed names put it (``placements.yaml``, keyed by suffix): ``edit``
    insert / replace / fuse at ``roles`` (``yamledit.ROLES``, resolved on any Ultralytics model YAML), with ``args[k]``
    for the k-th inserted row; ``where`` (``{layers}``: the base layers used) and ``why`` go into config headers."""

    suffix: str
    block: str
    edit: str
    roles: tuple
    args: tuple
    where: str
    why: str

    @property
    def spec(self) -> BlockSpec:
        return BLOCKS[self.block]

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def paper(self) -> str:
        return self.spec.paper


def _load_placements() -> dict[str, Placement]:
    import yaml

    table = yaml.safe_load(Path(__file__).with_name("placements.yaml").read_text(encoding="utf-8"))
    out = {}
    for suffix, p in table.items():
        if p["block"] not in BLOCKS or p["edit"] not in ("insert", "replace", "fuse"):
            raise ValueError(f"yolo_attn: placements.yaml: {suffix}: unknown block {p['block']!r} or edit {p['edit']!r}")
        out[suffix] = Placement(suffix, p["block"], p["edit"], tuple(p["roles"]), tuple(p.get("args", ())),
                                p["where"], p["why"])  # fmt: skip
    return out


PLACEMENTS: dict[str, Placement] = _load_placements()


def placement(suffix: str) -> Placement | None:
    return PLACEMENTS.get(suffix)
