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

from .modules import AFF, ASFF, CA, CBAM, DCN, MSCAM, SPD, C2f_DCN, SimAM, SPDConv, iAFF


class LayerError(ValueError):
    """A YAML row that yolo_attn cannot build; the message names the layer index, the block and what was expected."""

    def __init__(self, index, block: str, message: str):
        self.index, self.block = index, block
        super().__init__(f"yolo_attn: YAML layer {index} ({block}): {message}")


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
    BlockSpec("CA", CA, same_width, _A, "Hou, Zhou, Feng, Coordinate Attention, CVPR 2021",
              "[reduction=32, min_mid=8]", "[-1, 1, CA, []]"),
    BlockSpec("SimAM", SimAM, same_width, _A, "Yang et al., SimAM, ICML 2021",
              "[e_lambda=1e-4]", "[-1, 1, SimAM, []]"),
    BlockSpec("CBAM", CBAM, same_width, _A, "Woo et al., CBAM, ECCV 2018",
              "[reduction=16, kernel_size=7]", "[-1, 1, CBAM, []]"),
    BlockSpec("MSCAM", MSCAM, same_width, _A, "Dai et al., Attentional Feature Fusion (MS-CAM), WACV 2021",
              "[reduction=4]", "[-1, 1, MSCAM, []]"),
    BlockSpec("ASFF", ASFF, fused_width, _F, "Liu, Huang, Wang, Learning Spatial Fusion (ASFF), 2019",
              "[c2, level=0, compress=16]", "[[15, 18, 21], 1, ASFF, [256, 0]]"),
    BlockSpec("AFF", AFF, fused_width_or_equal, _F, "Dai et al., Attentional Feature Fusion, WACV 2021",
              "[c2=None, reduction=4]", "[[-1, 6], 1, AFF, [512]]"),
    BlockSpec("iAFF", iAFF, fused_width_or_equal, _F, "Dai et al., Attentional Feature Fusion (iterative), WACV 2021",
              "[c2=None, reduction=4]", "[[-1, 6], 1, iAFF, [512]]"),
    BlockSpec("SPD", SPD, space_to_depth_width, _C, "Sunkara & Luo, SPD-Conv (space-to-depth), ECML-PKDD 2022",
              "[scale=2]", "[-1, 1, SPD, []]"),
    BlockSpec("SPDConv", SPDConv, conv_width, _C, "Sunkara & Luo, SPD-Conv, ECML-PKDD 2022",
              "[c2, k=3, s=2, act=True]", "[-1, 1, SPDConv, [128, 3, 2]]"),
    BlockSpec("DCN", DCN, conv_width, _C, "Zhu et al., Deformable ConvNets v2, CVPR 2019",
              "[c2, k=3, s=1, p=None, g=1, d=1, act=True, deform_groups=1]", "[-1, 1, DCN, [256, 3, 1]]"),
    BlockSpec("C2f_DCN", C2f_DCN, conv_width_repeat, _C, "Zhu et al., Deformable ConvNets v2, CVPR 2019 (in C2f)",
              "[c2, shortcut=False, g=1, e=0.5]", "[-1, 3, C2f_DCN, [512, True]]"),
):  # fmt: skip
    register(_spec)
