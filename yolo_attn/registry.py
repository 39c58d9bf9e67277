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
