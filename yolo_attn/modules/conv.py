"""Convolution replacements: SPD / SPD-Conv and modulated deformable convolution (DCNv2).

``SPDConv`` and ``DCN`` take ``Conv``'s arguments (c1, c2, k, s, ...) so a YAML row swaps ``Conv`` for them without
changing its args; their output width is scaled like ``Conv``'s.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import C2f, Conv
from ultralytics.nn.modules.block import Bottleneck

from ._common import BlockArgumentError, check_int

__all__ = ("SPD", "SPDConv", "DCN", "DCNBottleneck", "C2f_DCN", "space_to_depth")


def space_to_depth(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Space-to-depth of SPD-Conv: (B, C, H, W) -> (B, C * scale^2, ceil(H / scale), ceil(W / scale)).

    Sub-maps f_{i,j} = x[..., i::scale, j::scale] are concatenated with i (row offset) varying fastest, as in the
    paper: f_00, f_10, f_01, f_11 for scale 2. H and W that are not multiples of ``scale`` are zero-padded at the
    bottom/right first, so the output size is ceil(H / scale), the size a 3x3 stride-``scale`` conv with padding 1
    gives: feature pyramids stay aligned with the rest of the network.
    """
    pad_h, pad_w = -x.shape[2] % scale, -x.shape[3] % scale
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return torch.cat([x[..., i::scale, j::scale] for j in range(scale) for i in range(scale)], 1)


_DEFORM_CONV2D = None


def _deform_conv2d():
    """``torchvision.ops.deform_conv2d``, imported on first use: only models with a DCN pay for torchvision.ops."""
    global _DEFORM_CONV2D
    if _DEFORM_CONV2D is None:
        from torchvision.ops import deform_conv2d

        _DEFORM_CONV2D = deform_conv2d
    return _DEFORM_CONV2D


class SPD(nn.Module):
    """Space-to-depth layer of SPD-Conv (Sunkara & Luo, ECML-PKDD 2022), on its own; parameter-free.

    Args:
        c1 (int): Input channels, filled in by the parser (unused).
        scale (int): Down-sampling factor (paper: 2).

    Shapes: (B, C, H, W) -> (B, C * scale^2, ceil(H / scale), ceil(W / scale)); the parser reports C * scale^2 to
    the next layer.
    """

    def __init__(self, c1: int | None = None, scale: int = 2):
        super().__init__()
        self.scale = check_int("SPD", "scale", scale, minimum=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_depth(x, self.scale)


class SPDConv(nn.Module):
    """SPD-Conv. Sunkara & Luo, "No More Strided Convolutions or Pooling: A New CNN Building Block for
    Low-Resolution Images and Small Objects", ECML-PKDD 2022.

    Replaces a strided convolution (or pooling) without discarding pixels:
        X' = SPD_s(X)           (B, C * s^2, ceil(H / s), ceil(W / s))     all pixels kept, moved into channels
        Y  = Conv_{k, stride 1}(X')                                        BN + SiLU, as ``Conv``
    Same arguments as the ``Conv`` it replaces: ``[Conv, [128, 3, 2]]`` becomes ``[SPDConv, [128, 3, 2]]``, the
    stride becoming the space-to-depth scale. Odd sizes: see ``space_to_depth``.

    Args:
        c1 (int): Input channels (from the parser).
        c2 (int): Output channels (scaled like ``Conv``).
        k (int): Kernel of the non-strided conv (default 3, the strided conv it replaces).
        s (int): Down-sampling factor, >= 2.
        act (bool | nn.Module): Activation, as in ``Conv``.

    Shapes: (B, c1, H, W) -> (B, c2, ceil(H / s), ceil(W / s)).
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 2, act: bool | nn.Module = True):
        super().__init__()
        check_int("SPDConv", "k", k)
        self.scale = check_int("SPDConv", "s (the space-to-depth scale)", s, minimum=2)
        self.conv = Conv(c1 * s * s, c2, k, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(space_to_depth(x, self.scale))


class DCN(Conv):
    """Modulated deformable convolution (DCNv2). Zhu, Hu, Lin, Dai, "Deformable ConvNets v2: More Deformable,
    Better Results", CVPR 2019. A drop-in for ultralytics ``Conv`` (same arguments, same ``conv``/``bn``/``act``
    parameters, so a Conv's weights and BN statistics load into it unchanged).

    For every output position p and kernel tap k, the sampling point and its weight are learned:
        y(p) = sum_k w_k * x(p + p_k + dp_k) * dm_k
    [dp, m] come from a k x k conv on the input (same stride, padding, dilation), 2 * K offsets and K modulation
    logits per deformable group; dm = 2 * sigmoid(m). The offset conv starts at zero, so dp = 0 and dm = 1: a new
    DCN computes exactly the plain convolution (the paper starts dm at 0.5; the factor 2 makes the start an identity
    so pretrained conv weights keep their meaning). The sampling runs on ``torchvision.ops.deform_conv2d``
    (imported when the first DCN is built); on CPU it computes bf16 inputs in fp32, which that kernel lacks. Under
    AMP the offset conv runs in fp32 (a bf16 offset of 8 pixels is off by 1/32 of a pixel).

    Args:
        c1, c2, k, s, p, g, d, act: As ``Conv``.
        deform_groups (int): Offset groups; input channels must divide by it.

    Shapes: (B, c1, H, W) -> (B, c2, H_out, W_out), H_out as for ``Conv`` with the same k, s, p, d.
    """

    def __init__(self, c1, c2, k=3, s=1, p=None, g=1, d=1, act=True, deform_groups: int = 1):
        for name, v in (("k", k), ("s", s), ("g", g), ("d", d), ("deform_groups", deform_groups)):
            check_int("DCN", name, v)
        if c1 % deform_groups or c1 % g or c2 % g:
            raise BlockArgumentError(
                f"DCN: input width {c1} and output width {c2} must divide by groups g={g}, and the input width by "
                f"deform_groups={deform_groups}"
            )
        super().__init__(c1, c2, k, s, p, g, d, act)
        _deform_conv2d()  # import torchvision.ops now, so a missing or broken torchvision fails at build time

        kh, kw = self.conv.kernel_size
        self.offset_mask = nn.Conv2d(
            c1, 3 * deform_groups * kh * kw, (kh, kw), self.conv.stride, self.conv.padding, self.conv.dilation
        )
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def _deform(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # sampling positions in the weights' dtype under AMP too
            dy_dx_m = self.offset_mask(x.to(self.offset_mask.weight.dtype))
        n = dy_dx_m.shape[1] // 3  # deform_groups * K
        # NaN offsets (from non-finite input, e.g. the uninitialised tensor Ultralytics' FLOPs probe feeds) make
        # torchvision's CPU kernel read out of bounds and crash the process; +-inf are safe (they sample zeros).
        offset = torch.nan_to_num(dy_dx_m[:, : 2 * n], nan=0.0)
        mask = 2 * dy_dx_m[:, 2 * n :].sigmoid()
        weight, dtype = self.conv.weight, x.dtype
        if x.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
            x, offset, mask, weight = x.float(), offset.float(), mask.float(), weight.float()
            bias = None if bias is None else bias.float()
        y = _deform_conv2d()(
            x, offset, weight, bias, self.conv.stride, self.conv.padding, self.conv.dilation, mask=mask
        )
        return y.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self._deform(x, None)))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """After ``model.fuse()`` folded BN into ``conv`` (weight and bias)."""
        return self.act(self._deform(x, self.conv.bias))


class DCNBottleneck(Bottleneck):
    """Ultralytics ``Bottleneck`` whose second 3x3 conv is a ``DCN``; (B, c1, H, W) -> (B, c2, H, W)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, shortcut, g, k=(3, 3), e=e)
        self.cv2 = DCN(int(c2 * e), c2, 3, 1, g=g)


class C2f_DCN(C2f):
    """``C2f`` (CSP bottleneck with two convs, YOLOv8) whose bottlenecks use DCNv2 for their second 3x3 conv, the way
    DCNv2 replaces the 3x3 convs of a backbone stage. Arguments as ``C2f``: (c1, c2, n, shortcut, g, e).

    Shapes: (B, c1, H, W) -> (B, c2, H, W).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        check_int("C2f_DCN", "n", n)
        super().__init__(c1, c2, n, shortcut, g, e)
        self.m = nn.ModuleList(DCNBottleneck(self.c, self.c, shortcut, g, e=1.0) for _ in range(n))
