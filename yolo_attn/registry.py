"""The registry: YAML names -> blocks, their arguments (as data), channel rules, community aliases and placements.

A block's YAML arguments are a table of ``Arg``s: name, kind, default and valid range. A row's positional arguments
fill the table in order; a trailing mapping (``[-1, 1, CBAM, [{reduction: 8}]]``) gives them by name. How a row
of another dialect is read (``[-1, 1, CBAM, [1024]]``) is ``yolo_attn.dialects``'s job; it reads through these tables.

A channel rule turns the row's values into the constructor arguments and the output width reported to the next
layer, the way Ultralytics' ``parse_model`` does for its own modules:

- ``same_width``: channel-preserving block; args = [c1, *values], output width c1.
- ``upsample_width``: an upsampler (DySample, CARAFE): args = [c1, *values], output width c1, H x W times the scale.
- ``conv_width``: width scaled like ``Conv``, c2 = make_divisible(min(c2, max_channels) * width, 8);
  args = [c1, c2, *rest]; ``conv_width_repeat`` also passes the depth-scaled repeat count at args[2].
- ``fused_width``: multi-input block; ``from`` is a list, c1 = [widths of every input]; c2 scaled like ``Conv``.
- ``fused_width_or_equal``: as ``fused_width``, but c2 may be omitted when both inputs have the same width.
- ``concat_width``: a weighted Concat of two or more inputs, output width the sum of theirs (BiFPN_Concat).
- ``space_to_depth_width``: output width c1 * scale^2.
- ``composite``: ``C2f_<Block>`` / ``C3k2_<Block>``, the host's own rule with the block inside (modules/composite).
"""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ultralytics.utils.ops import make_divisible

from . import modules as M
from .modules import composite as _composite
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


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------
class _Marker:
    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


REQUIRED = _Marker("required")
SAME = _Marker("same")  # a width that defaults to the input's (ACmix written without c2 keeps the width)
MAX_RATIO = 64  # a reduction ratio above this is not a reduction (community rows put widths, 128-2048, there)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Arg:
    """One YAML argument of a block: its name, kind, default and valid range.

    Kinds: ``int`` (lo..hi), ``ratio`` (a reduction: 1..64, leaving at least one of the block's channels),
    ``kernel`` (odd, 1..hi; ``None`` allowed where the default is None), ``number`` (a real in the interval, ends
    open or closed), ``flag`` (true/false), ``choice`` (one of ``choices``), ``width`` (a channel count >= 8;
    ``None`` or ``SAME`` where that is the default), ``padding`` (None or an int >= 0).
    """

    name: str
    kind: str
    default: object = REQUIRED
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()
    closed: tuple = (True, True)  # numbers: is lo, is hi part of the interval
    label: str = ""  # how messages name it, when not its name
    note: str = ""  # shown after the default in the signature, e.g. "adaptive"

    def problem(self, v, c: int | None = None) -> str | None:
        """Why ``v`` is not a valid value for a block whose channels are ``c`` (None: unknown), or None."""
        name = self.label or self.name
        if v is self.default and v in (None, SAME):
            return None
        if self.kind in ("int", "ratio"):
            if not _is_int(v) or (self.lo is not None and v < self.lo):
                return f"{name} must be an integer >= {self.lo if self.lo is not None else 1}, got {v!r}"
            if self.hi is not None and v > self.hi:
                return f"{name} must be at most {self.hi:g}, got {v!r}"
            if self.kind == "ratio" and c is not None and c // v < 1:
                return f"{name} must leave at least one of the {c} channels (at most {c}), got {v!r}"
        elif self.kind == "kernel":
            if not _is_int(v) or v < (self.lo or 1):
                return f"{name} must be an odd integer >= {int(self.lo or 1)}, got {v!r}"
            if v % 2 == 0:
                return f"{name} must be odd to keep H x W, got {v!r}"
            if self.hi is not None and v > self.hi:
                return f"{name} must be at most {self.hi:g}, got {v!r}"
        elif self.kind == "number":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            lo_ok = self.lo is None or (ok and (v >= self.lo if self.closed[0] else v > self.lo))
            hi_ok = self.hi is None or (ok and (v <= self.hi if self.closed[1] else v < self.hi))
            if not (ok and lo_ok and hi_ok):
                return f"{name} must be a number in {self.interval()}, got {v!r}"
        elif self.kind == "flag":
            if not isinstance(v, bool):
                return f"{name} must be true or false, got {v!r}"
        elif self.kind == "choice":
            if v not in self.choices:
                return f"{name} must be one of {', '.join(map(str, self.choices))}, got {v!r}"
        elif self.kind == "width":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 8:
                return f"{name} must be a width (a channel count >= 8), got {v!r}"
        elif self.kind == "padding":
            if v is not None and (not _is_int(v) or v < 0):
                return f"{name} must be null (same padding) or an integer >= 0, got {v!r}"
        elif self.kind == "kernels":
            if not isinstance(v, (list, tuple)) or not v or not all(_is_int(k) and k >= 1 and k % 2 for k in v):
                return f"{name} must be a list of odd kernel sizes, e.g. [3, 5], got {v!r}"
        return None

    def interval(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{'[' if self.closed[0] and self.lo is not None else '('}{lo}, {hi}{']' if self.closed[1] and self.hi is not None else ')'}"

    def spelled(self) -> str:
        """'reduction=16', 'c2', 'kernel_size=None (adaptive)': as the signature shows it."""
        if self.default is REQUIRED:
            return self.name
        default = "1e-4" if self.default == 1e-4 else list(self.default) if isinstance(self.default, tuple) else (
            self.default)  # fmt: skip
        return f"{self.name}={default}" + (f" ({self.note})" if self.note else "")


def ratio(name: str = "reduction", default: int = 16) -> Arg:
    return Arg(name, "ratio", default, 1, MAX_RATIO)


def kernel(name: str = "kernel_size", default: int | None = 7, hi: int = 31, lo: int = 1, note: str = "") -> Arg:
    return Arg(name, "kernel", default, lo, hi, note=note)


def count(name: str, default: int = 1, lo: int = 1, hi: int | None = None, label: str = "") -> Arg:
    return Arg(name, "int", default, lo, hi, label=label)


def number(name: str, default: float, lo: float | None = None, hi: float | None = None,
           closed: tuple = (False, False)) -> Arg:  # fmt: skip
    return Arg(name, "number", default, lo, hi, closed=closed)


def flag(name: str, default: bool) -> Arg:
    return Arg(name, "flag", default)


def choice(name: str, default, *options) -> Arg:
    return Arg(name, "choice", default, choices=options)


def width(name: str = "c2", default=REQUIRED) -> Arg:
    return Arg(name, "width", default)


def conv_args(*extra: Arg, k: int = 3, s: int = 1, c2=REQUIRED) -> tuple[Arg, ...]:
    """The arguments of an Ultralytics ``Conv`` a block replaces, [c2, k, s, p, g, d, act], then its own."""
    return (width("c2", c2), count("k", k), count("s", s), Arg("p", "padding", None), count("g"), count("d"),
            flag("act", True), *extra)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Rows and channel rules
# ----------------------------------------------------------------------------------------------------------------
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
    scale: str | None = None  # the model's scale letter, when it has one

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

    def input_width(self) -> int | None:
        """The width a block's reductions apply to: its input's (the narrowest of several), None if unknown."""
        fs = [self.f] if isinstance(self.f, int) else self.f if isinstance(self.f, (list, tuple)) else []
        widths = [self.ch[x] for x in fs if isinstance(x, int) and -len(self.ch) <= x < len(self.ch)]
        return min(widths) if widths else None

    def scaled(self, c2) -> int:
        """Output width scaled exactly like ``Conv``'s."""
        if isinstance(c2, bool) or not isinstance(c2, (int, float)) or c2 <= 0:
            raise self.error(f"first argument must be the output width (a positive number), got {c2!r}")
        return make_divisible(min(c2, self.max_channels) * self.width, 8)

    def single_repeat(self) -> None:
        if self.yaml_n != 1:
            raise self.error(f"repeats must be 1 for this block (it changes width or fuses inputs), got {self.yaml_n}")


ChannelRule = Callable[[Layer, dict], "tuple[int, list, int]"]  # (Layer, values) -> (c2, constructor args, repeats)


def _rest(values: dict, *skip: str) -> list:
    return [v for k, v in values.items() if k not in skip]


def same_width(layer: Layer, values: dict):
    c1 = layer.single_input()
    return c1, [c1, *values.values()], layer.n


def upsample_width(layer: Layer, values: dict):
    """An upsampler (DySample, CARAFE): the width is kept, H x W grow by the scale. Not a channel-preserving block in
    the sense of ``insert`` and composites, which need H x W kept too."""
    c1 = layer.single_input()
    layer.single_repeat()
    return c1, [c1, *values.values()], 1


def conv_width(layer: Layer, values: dict):
    c1 = layer.single_input()
    layer.single_repeat()
    c2 = c1 if values["c2"] is SAME else layer.scaled(values["c2"])
    return c2, [c1, c2, *_rest(values, "c2")], 1


def conv_width_repeat(layer: Layer, values: dict):
    c1 = layer.single_input()
    c2 = layer.scaled(values["c2"])
    return c2, [c1, c2, layer.n, *_rest(values, "c2")], 1


def _fused(layer: Layer, values: dict, count: int | None):
    c1 = layer.inputs(count)
    layer.single_repeat()
    if values["c2"] is not None:
        c2 = layer.scaled(values["c2"])
    elif len(set(c1)) == 1:
        c2 = c1[0]
    else:
        raise layer.error(
            f"inputs have different widths {c1}; give an output width [c2] (each input is projected to it by a "
            "1x1 Conv) or feed inputs of equal width"
        )
    return c2, [c1, c2, *_rest(values, "c2")], 1


def fused_width(layer: Layer, values: dict):
    return _fused(layer, values, None)


def fused_width_or_equal(layer: Layer, values: dict):
    return _fused(layer, values, 2)


def concat_width(layer: Layer, values: dict):
    """A weighted Concat (BiFPN_Concat): two or more inputs, output width the sum of theirs; with ``mode: sum`` the
    inputs are added and must share one width."""
    c1 = layer.inputs(None)
    layer.single_repeat()
    if values.get("mode") == "sum":
        if len(set(c1)) != 1:
            raise layer.error(f"mode sum adds its inputs, which have different widths {c1}; use the default mode "
                              "(a weighted Concat) or feed inputs of equal width")  # fmt: skip
        return c1[0], [c1, *values.values()], 1
    return sum(c1), [c1, *values.values()], 1


def space_to_depth_width(layer: Layer, values: dict):
    c1 = layer.single_input()
    layer.single_repeat()
    return c1 * values["scale"] ** 2, [c1, values["scale"]], 1


# ----------------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockSpec:
    """A registered block: its YAML name, class, channel rule, kind, title, paper (the one citation of the block:
    ``yolo-attn list``, config headers), argument table and an example row."""

    name: str
    cls: type
    rule: ChannelRule
    kind: str
    title: str
    paper: str
    args: tuple[Arg, ...]
    example: str
    inner: str | None = None  # composites: the block inside their bottlenecks
    block_args: tuple[Arg, ...] = ()  # composites: the inner block's table (the row's trailing mapping)

    @property
    def yaml_args(self) -> str:
        return "[" + ", ".join(a.spelled() for a in self.args) + "]"

    @property
    def preserves_width(self) -> bool:
        return self.rule is same_width

    def defaults(self) -> dict:
        return {a.name: a.default for a in self.args}


BLOCKS: dict[str, BlockSpec] = {}


def register(spec: BlockSpec) -> BlockSpec:
    """Add a block to the registry (names are unique)."""
    if spec.name in BLOCKS and BLOCKS[spec.name].cls is not spec.cls:
        raise ValueError(f"yolo_attn: block name {spec.name!r} is already registered to {BLOCKS[spec.name].cls}")
    BLOCKS[spec.name] = spec
    return spec


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


_AFF = 'Dai, Gieseke, Oehmcke, Wu, Barnard, "Attentional Feature Fusion", WACV 2021'
_VAN = 'Guo, Lu, Liu, Cheng, Hu, "Visual Attention Network", Computational Visual Media 2023 (arXiv 2202.09741)'
_DANET = 'Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019'
_PSA = ('Liu, Liu, Fan, Huang, "Polarized Self-Attention: Towards High-quality Pixel-wise Regression", arXiv '
        '2107.00782, 2021')  # fmt: skip
_RGA = 'Zhang, Lan, Zeng, Jin, Chen, "Relation-Aware Global Attention for Person Re-identification", CVPR 2020'
_CFNET = 'Zhang, Li, Li, Hu, "CFNet: Cascade Fusion Network for Dense Prediction", arXiv 2302.06052, 2023'
_SPD = ('Sunkara, Luo, "No More Strided Convolutions or Pooling: A New CNN Building Block for Low-Resolution Images '
        'and Small Objects", ECML-PKDD 2022')  # fmt: skip
_DCN = 'Zhu, Hu, Lin, Dai, "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019'
_RGA_ARGS = (count("size", 20, lo=2), ratio("s1", 8), ratio("s2", 8))

_A, _F, _C = "attention", "fusion", "conv"
for _spec in (
    # attention.py
    BlockSpec("CA", M.CA, same_width, _A, "Coordinate Attention (CA)",
              'Hou, Zhou, Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021',
              (ratio("reduction", 32), count("min_mid", 8)), "[-1, 1, CA, []]"),
    BlockSpec("SimAM", M.SimAM, same_width, _A, "SimAM",
              'Yang, Zhang, Li, Xie, "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural '
              'Networks", ICML 2021',
              (number("e_lambda", 1e-4, 0, 1),), "[-1, 1, SimAM, []]"),
    BlockSpec("CBAM", M.CBAM, same_width, _A, "CBAM",
              'Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018',
              (ratio(), kernel()), "[-1, 1, CBAM, []]"),
    BlockSpec("MSCAM", M.MSCAM, same_width, _A, "multi-scale channel attention of AFF (MS-CAM)", _AFF,
              (ratio("reduction", 4),), "[-1, 1, MSCAM, []]"),
    # channel.py
    BlockSpec("SE", M.SE, same_width, _A, "Squeeze-and-Excitation (SE)",
              'Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018', (ratio(),), "[-1, 1, SE, []]"),
    BlockSpec("ECA", M.ECA, same_width, _A, "Efficient Channel Attention (ECA)",
              'Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural '
              'Networks", CVPR 2020',
              (kernel("kernel_size", None, note="adaptive"), number("gamma", 2, 0), number("b", 1)), "[-1, 1, ECA, []]"),
    BlockSpec("GAM", M.GAM, same_width, _A, "Global Attention Mechanism (GAM)",
              'Liu, Shao, Hoffmann, "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial '
              'Interactions", arXiv 2112.05561, 2021',
              (ratio("reduction", 4),), "[-1, 1, GAM, []]"),
    BlockSpec("GCBlock", M.GCBlock, same_width, _A, "Global Context block (GC)",
              'Cao, Xu, Lin, Wei, Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond", ICCVW '
              '2019 / TPAMI 2020',
              (ratio(),), "[-1, 1, GCBlock, []]"),
    BlockSpec("scSE", M.scSE, same_width, _A, "concurrent spatial and channel SE (scSE)",
              'Roy, Navab, Wachinger, "Concurrent Spatial and Channel Squeeze & Excitation in Fully Convolutional '
              'Networks", MICCAI 2018 / IEEE TMI 2019',
              (ratio("reduction", 2), choice("aggregation", "max", *M.scSE.AGGREGATIONS)), "[-1, 1, scSE, []]"),
    BlockSpec("BAM", M.BAM, same_width, _A, "Bottleneck Attention Module (BAM)",
              'Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018',
              (ratio(), count("dilation", 4)), "[-1, 1, BAM, []]"),
    # spatial.py
    BlockSpec("TripletAttention", M.TripletAttention, same_width, _A, "Triplet Attention",
              'Misra, Nalamada, Arasanipalai, Hou, "Rotate to Attend: Convolutional Triplet Attention Module", WACV 2021',
              (kernel(),), "[-1, 1, TripletAttention, []]"),
    BlockSpec("StripPooling", M.StripPooling, same_width, _A, "Strip Pooling (SPM)",
              'Hou, Zhang, Cheng, Feng, "Strip Pooling: Rethinking Spatial Pooling for Scene Parsing", CVPR 2020',
              (), "[-1, 1, StripPooling, []]"),
    BlockSpec("LKA", M.LKA, same_width, _A, "large kernel attention of VAN (LKA)", _VAN,
              (count("kernel_size", 21, lo=3, hi=99), count("dilation", 3)), "[-1, 1, LKA, []]"),
    BlockSpec("VANAttention", M.VANAttention, same_width, _A, "Visual Attention Network attention unit (LKA)", _VAN,
              (count("kernel_size", 21, lo=3, hi=99), count("dilation", 3)), "[-1, 1, VANAttention, []]"),
    BlockSpec("STN", M.STN, same_width, _A, "Spatial Transformer (STN)",
              'Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer Networks", NeurIPS 2015',
              (ratio("reduction", 8),), "[-1, 1, STN, []]"),
    BlockSpec("ResidualAttention", M.ResidualAttention, same_width, _A, "Residual Attention",
              'Wang, Jiang, Qian, Yang, Li, Zhang, Wang, Tang, "Residual Attention Network for Image Classification", '
              'CVPR 2017',
              (count("levels", 2, hi=6), count("p", 1, lo=0, hi=8), count("t", 2, hi=8), count("r", 1, hi=8)),
              "[-1, 1, ResidualAttention, [2]]"),
    # selfattn.py
    BlockSpec("PAM", M.PAM, same_width, _A, "DANet position attention module (PAM)", _DANET,
              (ratio("reduction", 8),), "[-1, 1, PAM, []]"),
    BlockSpec("CAM", M.CAM, same_width, _A, "DANet channel attention module (CAM)", _DANET, (), "[-1, 1, CAM, []]"),
    BlockSpec("DABlock", M.DABlock, same_width, _A, "DANet dual attention (DABlock: PAM + CAM)", _DANET,
              (ratio("reduction", 4),), "[-1, 1, DABlock, []]"),
    BlockSpec("PSA_p", M.PSA_p, same_width, _A, "Polarized Self-Attention, parallel (PSA_p)", _PSA, (),
              "[-1, 1, PSA_p, []]"),
    BlockSpec("PSA_s", M.PSA_s, same_width, _A, "Polarized Self-Attention, sequential (PSA_s)", _PSA, (),
              "[-1, 1, PSA_s, []]"),
    BlockSpec("RGA_S", M.RGA_S, same_width, _A, "Relation-Aware Global Attention, spatial (RGA-S)", _RGA, _RGA_ARGS,
              "[-1, 1, RGA_S, [20]]"),
    BlockSpec("RGA_C", M.RGA_C, same_width, _A, "Relation-Aware Global Attention, channel (RGA-C)", _RGA, _RGA_ARGS,
              "[-1, 1, RGA_C, [20]]"),
    BlockSpec("RGA", M.RGA, same_width, _A, "Relation-Aware Global Attention (RGA-SC)", _RGA, _RGA_ARGS,
              "[-1, 1, RGA, [20]]"),
    BlockSpec("FANChannelAttention", M.FANChannelAttention, same_width, _A,
              "Fully Attentional Networks channel processing (FAN)",
              'Zhou, Yu, Xie, Xiao, Anandkumar, Feng, Alvarez, "Understanding The Robustness in Vision Transformers", '
              'ICML 2022',
              (count("num_heads", 8, hi=64), number("mlp_ratio", 4.0, 0), flag("qkv_bias", True), number("eta", 1.0)),
              "[-1, 1, FANChannelAttention, []]"),
    # fusion.py
    BlockSpec("ASFF", M.ASFF, fused_width, _F, "ASFF",
              'Liu, Huang, Wang, "Learning Spatial Fusion for Single-Shot Object Detection", 2019 (arXiv 1911.09516)',
              (width(), count("level", 0, lo=0), ratio("compress", 16)), "[[15, 18, 21], 1, ASFF, [256, 0]]"),
    BlockSpec("AFF", M.AFF, fused_width_or_equal, _F, "Attentional Feature Fusion (AFF)", _AFF,
              (width("c2", None), ratio("reduction", 4)), "[[-1, 6], 1, AFF, [512]]"),
    BlockSpec("iAFF", M.iAFF, fused_width_or_equal, _F, "iterative Attentional Feature Fusion (iAFF)", _AFF,
              (width("c2", None), ratio("reduction", 4)), "[[-1, 6], 1, iAFF, [512]]"),
    # cascade.py
    BlockSpec("CFNetFocal", M.CFNetFocal, same_width, _C, "Cascade Fusion Network focal block (CFNet)", _CFNET,
              (count("expansion", 4, hi=16), kernel("kernel_size", 7), count("dilation", 3),
               number("layer_scale", 1e-6, 0, closed=(True, False))),
              "[-1, 1, CFNetFocal, []]"),
    BlockSpec("CFNetTransition", M.CFNetTransition, fused_width, _F, "Cascade Fusion Network transition (CFNet)",
              _CFNET, (width(),), "[[4, 6, 8], 1, CFNetTransition, [256]]"),
    # conv.py
    BlockSpec("SPD", M.SPD, space_to_depth_width, _C, "space-to-depth of SPD-Conv (SPD)", _SPD,
              (count("scale", 2, lo=2),), "[-1, 1, SPD, []]"),
    BlockSpec("SPDConv", M.SPDConv, conv_width, _C, "SPD-Conv", _SPD,
              (width(), count("k", 3), count("s", 2, lo=2, label="s (the space-to-depth scale)"), flag("act", True)),
              "[-1, 1, SPDConv, [128, 3, 2]]"),
    BlockSpec("DCN", M.DCN, conv_width, _C, "modulated deformable convolution v2 (DCN)", _DCN,
              conv_args(count("deform_groups", 1)), "[-1, 1, DCN, [256, 3, 1]]"),
    # dynconv.py
    BlockSpec("ODConv", M.ODConv, conv_width, _C, "Omni-Dimensional Dynamic Convolution (ODConv 4x)",
              'Li, Zhou, Yao, "Omni-Dimensional Dynamic Convolution", ICLR 2022',
              conv_args(count("kernel_num", 4, hi=16), ratio()), "[-1, 1, ODConv, [256, 3, 2]]"),
    BlockSpec("RefConv", M.RefConv, conv_width, _C, "Re-parameterised Refocusing Convolution (RefConv)",
              'Cai, Ding, et al., "RefConv: Re-parameterized Refocusing Convolution for Powerful ConvNets", arXiv '
              '2310.10563, 2023',
              conv_args(count("map_k", 3)), "[-1, 1, RefConv, [256, 3, 2]]"),
    BlockSpec("SCConv", M.SCConv, conv_width, _C, "Self-Calibrated Convolution (SCConv)",
              'Liu, Hou, Cheng, Wang, Feng, "Improving Convolutional Networks with Self-Calibrated Convolutions", CVPR '
              '2020',
              conv_args(count("pooling_r", 4)), "[-1, 1, SCConv, [256, 3, 2]]"),
    BlockSpec("ACmix", M.ACmix, conv_width, _C, "ACmix (convolution + self-attention)",
              'Pan, Ge, Lu, Song, Chen, Huang, Huang, "On the Integration of Self-Attention and Convolution", CVPR 2022',
              conv_args(kernel("k_att", 7), count("head", 4), c2=SAME), "[-1, 1, ACmix, [1024, 3, 2]]"),
    BlockSpec("C2f_DCN", M.C2f_DCN, conv_width_repeat, _C, "deformable convolution v2 (C2f_DCN)", _DCN,
              (width(), flag("shortcut", False), count("g"), number("e", 0.5, 0, 1, closed=(False, True))),
              "[-1, 3, C2f_DCN, [512, True]]"),
):  # fmt: skip
    register(_spec)

# The community's most used blocks of 2023-2026
_FASTER = 'Chen, Kao, He, Zhuo, Wen, Lee, Chan, "Run, Don\'t Walk: Chasing Higher FLOPS for Faster Neural Networks", CVPR 2023'
_STAR = 'Ma, Dai, Bai, Chen, Fu, "Rewrite the Stars", CVPR 2024'
_RFA = ('Zhang, Liu, Yang, Song, Ye, Li, Song, "RFAConv: Innovating Spatial Attention and Standard Convolutional '
        'Operation", arXiv 2304.03198, 2023')  # fmt: skip
_GS = ('Li et al., "Slim-neck by GSConv: a lightweight-design for real-time detector '
       'architectures", Journal of Real-Time Image Processing 2024')  # fmt: skip
_U = "upsample"
_C2F_ARGS = (width(), flag("shortcut", False), count("g"), number("e", 0.5, 0, 1, closed=(False, True)))
for _spec in (
    # grouped.py
    BlockSpec("EMA", M.EMA, same_width, _A, "Efficient Multi-scale Attention (EMA)",
              'Ouyang et al., "Efficient Multi-Scale Attention Module with '
              'Cross-Spatial Learning", ICASSP 2023',
              (Arg("factor", "ratio", 32, 1, MAX_RATIO, label="factor (channel groups)"),), "[-1, 1, EMA, []]"),
    BlockSpec("ShuffleAttention", M.ShuffleAttention, same_width, _A, "Shuffle Attention (SA-Net)",
              'Zhang, Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", ICASSP 2021',
              (Arg("groups", "ratio", 64, 1, 128),), "[-1, 1, ShuffleAttention, []]"),
    BlockSpec("SKAttention", M.SKAttention, same_width, _A, "Selective Kernel attention (SKNet)",
              'Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019',
              (Arg("kernels", "kernels", (1, 3, 5, 7)), ratio(), count("groups"), count("L", 32),
               choice("variant", "port", *M.SKAttention.VARIANTS)), "[-1, 1, SKAttention, []]"),
    # local.py
    BlockSpec("ELA", M.ELA, same_width, _A, "Efficient Local Attention (ELA)",
              'Xu, Wan, "ELA: Efficient Local Attention for Deep Convolutional Neural Networks", arXiv 2403.01123, 2024',
              (kernel("kernel_size", 7), count("group_channels"), count("num_groups", 16)), "[-1, 1, ELA, []]"),
    BlockSpec("MLCA", M.MLCA, same_width, _A, "Mixed Local Channel Attention (MLCA)",
              'Wan et al., "Mixed local channel attention for object detection", Engineering '
              'Applications of Artificial Intelligence 2023',
              (count("local_size", 5, hi=64), number("gamma", 2, 0), number("b", 1),
               number("local_weight", 0.5, 0, 1, closed=(True, True))), "[-1, 1, MLCA, []]"),
    BlockSpec("CPCA", M.CPCA, same_width, _A, "Channel Prior Convolutional Attention (CPCA)",
              'Huang, Chen, Zou, Lu, Chen, "Channel prior convolutional attention for medical image '
              'segmentation", Computers in Biology and Medicine 2024',
              (ratio("reduction", 4),), "[-1, 1, CPCA, []]"),
    # largekernel.py
    BlockSpec("LSKA", M.LSKA, same_width, _A, "Large Separable Kernel Attention (LSKA)",
              'Lau, Po, Rehman, "Large Separable Kernel Attention: Rethinking the Large Kernel Attention Design in '
              'CNN", Expert Systems with Applications 2024',
              (choice("kernel_size", 7, *M.LSKA_KERNELS),), "[-1, 1, LSKA, []]"),
    BlockSpec("LSKBlock", M.LSKBlock, same_width, _A, "Large Selective Kernel module (LSKNet)",
              'Li, Hou, Wang, Gao, Xu, Yang, Li, "Large Selective Kernel Network for Remote Sensing Object '
              'Detection", ICCV 2023',
              (), "[-1, 1, LSKBlock, []]"),
    BlockSpec("WTConv", M.WTConv, same_width, _C, "Wavelet Convolution (WTConv)",
              'Finder, Amoyal, Treister, Freifeld, "Wavelet Convolutions for Large Receptive Fields", ECCV 2024',
              (kernel("kernel_size", 5), count("stride", 1, hi=1, label="stride (1: WTConv keeps H x W here)"),
               count("wt_levels", 1, hi=5), flag("bias", True)), "[-1, 1, WTConv, []]"),
    # reconstruct.py
    BlockSpec("ScConv", M.ScConv, same_width, _C, "Spatial and Channel Reconstruction Convolution (ScConv, CVPR 2023)",
              'Li, Zhang, Huang, "SCConv: Spatial and Channel Reconstruction Convolution for Feature Redundancy", '
              'CVPR 2023',
              (count("group_num", 4), number("gate_threshold", 0.5, 0, 1), number("alpha", 0.5, 0, 1),
               count("squeeze_ratio", 2), count("group_size", 2), kernel("group_kernel_size", 3)),
              "[-1, 1, ScConv, []]"),
    # mobile.py
    BlockSpec("PConv", M.PConv, same_width, _C, "Partial Convolution (FasterNet PConv)", _FASTER,
              (count("n_div", 4, lo=1, hi=64),), "[-1, 1, PConv, []]"),
    BlockSpec("FasterBlock", M.FasterBlock, same_width, _C, "FasterNet block (PConv + MLP)", _FASTER,
              (count("n_div", 4, lo=1, hi=64), number("mlp_ratio", 2.0, 0), choice("act", "relu", "relu", "gelu", "silu"),
               number("layer_scale", 0.0, 0, closed=(True, False))), "[-1, 1, FasterBlock, []]"),
    BlockSpec("C2f_Faster", M.C2f_Faster, conv_width_repeat, _C, "C2f with FasterNet blocks (C2f_Faster)", _FASTER,
              _C2F_ARGS, "[-1, 3, C2f_Faster, [256]]"),
    BlockSpec("StarBlock", M.StarBlock, same_width, _C, "Star block (StarNet)", _STAR,
              (count("mlp_ratio", 3, hi=16),), "[-1, 1, StarBlock, []]"),
    BlockSpec("C2f_Star", M.C2f_Star, conv_width_repeat, _C, "C2f with star blocks (C2f_Star)", _STAR, _C2F_ARGS,
              "[-1, 3, C2f_Star, [256]]"),
    BlockSpec("iRMB", M.iRMB, same_width, _A, "inverted Residual Mobile Block (iRMB, EMO)",
              'Zhang, Li, Li, Liu, Xue, Zhang, Jiang, Huang, Wang, Wang, "Rethinking Mobile Block for Efficient '
              'Attention-based Models", ICCV 2023',
              (number("exp_ratio", 1.0, 0, 16, closed=(False, True)), kernel("dw_ks", 3), number("se_ratio", 0.0, 0, 1, closed=(True, False)),
               count("dim_head", 32), count("window_size", 7), flag("attn_s", True), flag("qkv_bias", False),
               flag("attn_pre", False), choice("act", "relu", "relu", "gelu", "silu"),
               choice("window_layout", "local", "local", "grid")), "[-1, 1, iRMB, []]"),
    # slimneck.py
    BlockSpec("GSConv", M.GSConv, conv_width, _C, "GSConv (Slim-neck)", _GS,
              (width(), count("k", 1), count("s", 1), count("g"), flag("act", True)), "[-1, 1, GSConv, [256, 3, 2]]"),
    BlockSpec("VoVGSCSP", M.VoVGSCSP, conv_width_repeat, _C, "VoV-GSCSP (Slim-neck)", _GS,
              (width(), flag("shortcut", True), count("g"), number("e", 0.5, 0, 1, closed=(False, True))),
              "[-1, 3, VoVGSCSP, [256]]"),
    # rfa.py
    BlockSpec("RFAConv", M.RFAConv, conv_width, _C, "Receptive-Field Attention convolution (RFAConv)", _RFA,
              conv_args(), "[-1, 1, RFAConv, [256, 3, 2]]"),
    BlockSpec("RFCBAMConv", M.RFCBAMConv, conv_width, _C, "RFA convolution with CBAM attention (RFCBAMConv)", _RFA,
              conv_args(ratio()), "[-1, 1, RFCBAMConv, [256, 3, 2]]"),
    BlockSpec("RFCAConv", M.RFCAConv, conv_width, _C, "RFA convolution with coordinate attention (RFCAConv)", _RFA,
              conv_args(count("reduction", 32, hi=MAX_RATIO)), "[-1, 1, RFCAConv, [256, 3, 2]]"),
    # upsample.py
    BlockSpec("DySample", M.DySample, upsample_width, _U, "DySample (learning to upsample by learning to sample)",
              'Liu, Lu, Fu, Cao, "Learning to Upsample by Learning to Sample", ICCV 2023',
              (count("scale", 2, lo=2, hi=8), choice("style", "lp", "lp", "pl"), count("groups", 4),
               flag("dyscope", False)), "[-1, 1, DySample, []]"),
    BlockSpec("CARAFE", M.CARAFE, upsample_width, _U, "CARAFE (content-aware reassembly of features)",
              'Wang, Chen, Xu, Liu, Loy, Lin, "CARAFE: Content-Aware ReAssembly of FEatures", ICCV 2019',
              (count("scale", 2, lo=2, hi=8), kernel("up_kernel", 5, hi=11), kernel("encoder_kernel", 3, hi=11),
               count("compressed", 64), count("groups")), "[-1, 1, CARAFE, []]"),
    # fusion.py
    BlockSpec("BiFPN_Concat", M.BiFPN_Concat, concat_width, _F, "BiFPN fast normalised weighted fusion",
              'Tan, Pang, Le, "EfficientDet: Scalable and Efficient Object Detection", CVPR 2020',
              (choice("mode", "concat", "concat", "sum"), number("eps", 1e-4, 0, 1)),
              "[[-1, 6], 1, BiFPN_Concat, []]"),
):  # fmt: skip
    register(_spec)


# ----------------------------------------------------------------------------------------------------------------
# Composites: C2f_<Block>, C3k2_<Block> for every channel-preserving block
# ----------------------------------------------------------------------------------------------------------------
def _host_args(host: type) -> tuple[Arg, ...]:
    """The YAML arguments of an Ultralytics host after (c1, c2, n), read off the installed class: [c2, ...]."""
    out = [width()]
    for p in list(inspect.signature(host.__init__).parameters.values())[4:]:
        d = p.default
        kind = flag(p.name, d) if isinstance(d, bool) else number(p.name, d, 0, 1, (False, True)) if isinstance(
            d, float) else count(p.name, d)  # fmt: skip
        out.append(kind)
    return tuple(out)


COMPOSITE_HOSTS = {"C2f": (_composite.C2fWith, _composite.C2f), "C3k2": (_composite.C3k2With, _composite.C3k2)}
_COMPOSITE = re.compile(r"^(?P<host>C2f|C3k2)_(?P<block>\w+)$")


def composite(layer: Layer, values: dict):
    """The host's own rule (C2f / C3k2 are Ultralytics repeat modules): [c1, c2 scaled, n, *host args]; C3k2 uses
    C3k blocks at scales m, l and x, as Ultralytics' parser sets it."""
    c1 = layer.single_input()
    c2 = layer.scaled(values["c2"])
    host = [v for k, v in values.items() if k not in ("c2", "block_args")]
    if "c3k" in values and layer.scale in ("m", "l", "x"):
        host[list(values).index("c3k") - 1] = True
    spec = lookup(layer.name)[0]
    return c2, [BLOCKS[spec.inner].cls, values.get("block_args") or {}, c1, c2, layer.n, *host], 1


_composites: dict[str, BlockSpec] = {}


def composite_spec(host: str, inner: BlockSpec) -> BlockSpec:
    """The spec of ``<host>_<inner>`` (made once per process)."""
    name = f"{host}_{inner.name}"
    if name not in _composites:
        cls = COMPOSITE_HOSTS[host][0]
        _composites[name] = BlockSpec(
            name, cls, composite, inner.kind, f"{host} with {inner.title} in its bottlenecks", inner.paper,
            _host_args(COMPOSITE_HOSTS[host][1]), f"[-1, 3, {name}, [256, True]]", inner=inner.name,
            block_args=inner.args,
        )  # fmt: skip
    return _composites[name]


# ----------------------------------------------------------------------------------------------------------------
# Community aliases
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Alias:
    """A community name for one of our blocks. ``signature``: its class's positional arguments after the input
    width, as our argument names ('@width': a width, checked against the input and dropped; '@drop:<what>': an
    argument that does not change the block), when it differs from ours. ``preset``: values the name means (BiFPN
    is the weighted sum, BiFPN_Concat2 the weighted Concat). ``seen``: where the name was read."""

    name: str
    block: str
    seen: str
    signature: tuple[str, ...] | None = None
    preset: dict | None = None  # values the name itself fixes (BiFPN: the weighted sum), before the row's own


ALIASES: dict[str, Alias] = {a.name: a for a in (
    Alias("CoordAtt", "CA", "CoordAtt(inp, reduction=32): kendyle2702, PRS-YOLOv8, beiweidedagongren, Nidhogg3"),
    Alias("CoordAttention", "CA", "CoordAttention(inp, reduction=32): community copies of the official code"),
    Alias("CABlock", "CA", "CABlock(in_chans, out_chans, reduction=32): syz247179876/CV-Tree"),
    Alias("SEAttention", "SE", "SEAttention(channel=512, reduction=16): External-Attention copies in 4 forks"),
    Alias("SEBlock", "SE", "SEBlock(in_chans, out_chans, reduction=16, attention_mode='conv'): CV-Tree",
          ("reduction", "@drop:attention_mode")),
    Alias("SELayer", "SE", "SELayer(channel, reduction=16): community copies of the official code"),
    Alias("ECAAttention", "ECA", "ECAAttention(kernel_size=3): External-Attention copies (INVINCIBLE2297)"),
    Alias("EfficientChannelAttention", "ECA", "EfficientChannelAttention(c, b=1, gamma=2): EEML-YOLO's parser set",
          ("b", "gamma")),
    Alias("GAM_Attention", "GAM", "GAM_Attention(in_channels, rate=4): CV community copies"),
    Alias("CBAMBlock", "CBAM", "CBAMBlock(channel=512, reduction=16, kernel_size=49): External-Attention"),
    Alias("BAMBlock", "BAM", "BAMBlock(channel=512, reduction=16, dia_val=2): External-Attention (xh92117)"),
    Alias("simam_module", "SimAM", "simam_module(channels=None, e_lambda=1e-4): the official SimAM code"),
    Alias("GlobalContext", "GCBlock", "GlobalContext(c): community GCNet copies"),
    Alias("ContextBlock", "GCBlock", "ContextBlock(inplanes, ratio): mmcv's GCNet block name"),
    Alias("PolarizedSelfAttention", "PSA_p", "PolarizedSelfAttention(channel): community copies (parallel layout)"),
    Alias("ParallelPolarizedSelfAttention", "PSA_p", "ParallelPolarizedSelfAttention(channel=512): External-Attention"),
    Alias("SequentialPolarizedSelfAttention", "PSA_s", "SequentialPolarizedSelfAttention(channel=512): External-"
          "Attention"),
    Alias("SPBlock", "StripPooling", "SPBlock(inplanes, outplanes): the strip pooling module's name in SPNet"),
    Alias("DCNv2", "DCN", "DCNv2(c1, c2, k, s, ...): deformable conv copies in YOLO forks"),
    Alias("DeformableConv2d", "DCN", "DeformableConv2d(in, out, kernel_size, stride, ...): community copies"),
    Alias("C2f_DCNv2", "C2f_DCN", "C2f_DCNv2(c1, c2, n, shortcut, g, e): YOLO-DPC"),
    Alias("ODConv2d", "ODConv", "ODConv2d(in_planes, out_planes, kernel_size, stride, ...): YOLO-DPC"),
    Alias("space_to_depth", "SPD", "space_to_depth(dimension=1): scuzyq, truongan-2704 (the SPD-Conv repo's name)",
          ("@drop:dimension",)),
    Alias("EMA_attention", "EMA", "EMA_attention(channels, c2, factor=32): beiweidedagongren, scuzyq/improved-v8",
          ("@width", "factor")),
    Alias("sa_layer", "ShuffleAttention", "sa_layer(channel, groups=64): the official SA-Net code"),
    Alias("LSKblock", "LSKBlock", "LSKblock(dim): the official LSKNet code, SLA-YOLO"),
    Alias("WTConv2d", "WTConv", "WTConv2d(in_channels, out_channels, kernel_size=5, stride=1, bias=True, wt_levels=1): "
          "the official WTConv code", ("@width", "kernel_size", "stride", "bias", "wt_levels")),
    Alias("Partial_conv3", "PConv", "Partial_conv3(dim, n_div, forward): the official FasterNet code",
          ("n_div", "@drop:forward")),
    Alias("C2f_FasterBlock", "C2f_Faster", "C2f_FasterBlock(c1, c2, n, shortcut, g, e): YOLO-DPC (FasterNet blocks "
          "in place of the bottlenecks)"),
    Alias("VoVGSCSPC", "VoVGSCSP", "VoVGSCSPC(c1, c2, n, shortcut, g, e): Slim-neck's copies (its extra GS "
          "bottleneck is never called: the same forward), DLW-YOLO"),
    Alias("Dy_Sample", "DySample", "Dy_Sample(in_channels, scale=2, style='lp', groups=4): YOLO-DPC"),
    Alias("BiFPN_Concat2", "BiFPN_Concat", "BiFPN_Concat2(dimension=1): beiweidedagongren (two inputs)",
          ("@drop:dimension",)),
    Alias("BiFPN_Concat3", "BiFPN_Concat", "BiFPN_Concat3(dimension=1): scuzyq/improved-v8 (three inputs)",
          ("@drop:dimension",)),
    Alias("BiFPN", "BiFPN_Concat", "BiFPN(length): truongan-2704/yolov8-bifpn-v2 (a weighted sum: inputs of one "
          "width, output that width)", (), {"mode": "sum"}),
)}  # fmt: skip

# An Ultralytics class with one of our names but another signature: the reading its forks' rows have
ULTRALYTICS_SIGNATURES = {"CBAM": ("kernel_size",)}  # ultralytics.nn.modules.conv.CBAM(c1, kernel_size=7)


def lookup(name: str) -> tuple[BlockSpec, Alias | None] | None:
    """(the block a YAML name means, the alias it was written as or None), or None for a name that is not ours.
    ``C2f_<X>`` / ``C3k2_<X>``: the composite of a channel-preserving block X (our name or an alias)."""
    if name in BLOCKS:
        return BLOCKS[name], None
    if name in ALIASES:
        a = ALIASES[name]
        return BLOCKS[a.block], a
    m = _COMPOSITE.match(name)
    if m:
        inner = lookup(m.group("block"))
        if inner is not None and inner[0].preserves_width:
            return composite_spec(m.group("host"), inner[0]), inner[1]
    return None


def composite_problem(name: str) -> str | None:
    """Why ``C2f_<X>`` / ``C3k2_<X>`` is not a composite when X is one of our names, else None."""
    m = _COMPOSITE.match(name)
    inner = lookup(m.group("block")) if m else None
    if inner is None or inner[0].preserves_width:
        return None
    changes = "changes H x W (an upsampler)" if inner[0].rule is upsample_width else "changes widths"
    return (f"{m.group('host')}_<Block> composites put a channel-preserving block after each bottleneck's second conv, "
            f"and {m.group('block')} ({inner[0].title}) {changes}; use {inner[0].name} rows"
            + (", or C2f_DCN for deformable bottlenecks" if inner[0].name == "DCN" else "")
            + "".join(f"; {m.group('host')}_{b.name} is {b.title}" for b in case_twins(inner[0].name) if b.preserves_width))  # fmt: skip


# Where community composites put a block when it is not after the bottleneck's second conv (read in the corpus'
# forks: tests/data/community_rows.yaml); a composite of these logs which model it builds. Convolution blocks
# (PConv, ScConv, WTConv, ...) go in place of that conv in the forks that use them.
FORK_PLACEMENTS = {"ShuffleAttention": "on cv1's output before the split", "iRMB": "in place of each bottleneck"}


def placed_elsewhere_in_forks(inner: BlockSpec) -> str | None:
    if inner.name in FORK_PLACEMENTS:
        return FORK_PLACEMENTS[inner.name]
    return "in place of that conv" if inner.kind == "conv" else None


def case_twins(name: str) -> list[BlockSpec]:
    """Blocks whose names differ from ``name`` only in case (ScConv for SCConv)."""
    return [b for n, b in BLOCKS.items() if n != name and n.lower() == name.lower()]


def get(name: str) -> BlockSpec | None:
    found = lookup(name)
    return found[0] if found else None


def aliases_of(block: str) -> list[str]:
    return [a.name for a in ALIASES.values() if a.block == block]


def known_names() -> list[str]:
    """Every YAML name yolo_attn answers to (blocks and aliases; composites are C2f_/C3k2_ + a channel-preserving one)."""
    return [*BLOCKS, *ALIASES]


def block_classes() -> tuple[type, ...]:
    """Every module class a YAML row of ours builds (the composites' two classes included)."""
    return (*{s.cls for s in BLOCKS.values()}, *(h[0] for h in COMPOSITE_HOSTS.values()))


# ----------------------------------------------------------------------------------------------------------------
# Training strategies switched on by a top-level YAML key, read by the parser hook (patch.ParserHooks.built)
# ----------------------------------------------------------------------------------------------------------------
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


KEYS: dict[str, KeySpec] = {
    "sqr": KeySpec("sqr", "SQR", _sqr.SQRDecoder, "training",
                   "Chen et al., Selective Query Recollection, CVPR 2023 (RT-DETR decoders)",
                   f"{' | '.join(_sqr.MODES)} | false", "sqr: selective"),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Placements (placements.yaml)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One edit of a placement: ``edit`` the layers at ``roles`` (``yamledit.ROLES``) with ``block``: ``insert`` (a row
    after each, ``args[k]`` for the k-th), ``replace`` (each becomes the block, as ``yolo-attn replace`` swaps it),
    ``composite`` (each C2f / C3k2 becomes ``<host>_<block>``), ``fuse`` (one row per head input between the neck
    and the head) or ``weighted-fusion`` (the neck's Concat rows, with BiFPN's same-level edges)."""

    block: str
    edit: str
    roles: tuple
    args: tuple = ()


EDITS = ("insert", "replace", "composite", "fuse", "weighted-fusion")


@dataclass(frozen=True)
class Placement:
    """Where a block's ready configs and composed names put it (``placements.yaml``, keyed by suffix): one or more
    ``steps``; ``where`` (``{layers}``: the base layers used) and ``why`` go into config headers."""

    suffix: str
    block: str  # the block the suffix names (its title and paper head the configs)
    steps: tuple[Step, ...]
    where: str
    why: str

    @property
    def edit(self) -> str:
        return self.steps[0].edit

    @property
    def roles(self) -> tuple:
        return tuple(r for s in self.steps for r in s.roles)

    @property
    def args(self) -> tuple:
        return self.steps[0].args

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
        steps = tuple(Step(s["block"], s["edit"], tuple(s["roles"]), tuple(s.get("args", ()))) for s in
                      p.get("steps", [p]))  # fmt: skip
        for s in steps:
            if s.block not in BLOCKS or s.edit not in EDITS:
                raise ValueError(f"yolo_attn: placements.yaml: {suffix}: unknown block {s.block!r} or edit {s.edit!r}")
        out[suffix] = Placement(suffix, p.get("block", steps[0].block), steps, p["where"], p["why"])
    return out


PLACEMENTS: dict[str, Placement] = _load_placements()


def placement(suffix: str) -> Placement | None:
    return PLACEMENTS.get(suffix)
