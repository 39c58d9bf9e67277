"""Spatial / context attention blocks: Triplet Attention, Strip Pooling (SPM), LKA and the VAN attention unit, a
Spatial Transformer, and the Residual Attention module.

Every block maps (B, C, H, W) -> (B, C, H, W); the first constructor argument is the input width ``c1``, which the
YAML parser fills in from ``from`` (it is never written in the YAML). All but ``STN`` can start as the identity for
fine-tuning (``IdentityStart``: off by default); ``STN`` is the identity at start by its paper's initialisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import (
    BlockArgumentError, Conv1x1, ConvToOne, IdentityStart, PooledBatchNorm2d, acc_dtype, check_int, max_along,
)

__all__ = ("TripletAttention", "StripPooling", "LKA", "VANAttention", "STN", "ResidualAttention", "affine_grid")


# ----------------------------------------------------------------------------------------------------------------
# Triplet Attention
# ----------------------------------------------------------------------------------------------------------------
def _zpool(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Triplet's Z-pool: [max ; mean] over ``dim`` of (B, C, H, W), stacked as 2 channels: (B, 2, <the other two>)."""
    return torch.stack((max_along(x, dim), x.mean(dim)), 1)


class _ZPoolGate(nn.Module):
    """One Triplet Attention branch after its Z-pool: sigmoid(BN(conv_{k x k}(z))), 2 -> 1 channels, no conv bias.

    Shapes: z (B, 2, P, Q) -> (B, 1, P, Q) in (0, 1).
    """

    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = ConvToOne(2, kernel_size, bias=False)
        self.bn = PooledBatchNorm2d(1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(z)).sigmoid()


class TripletAttention(IdentityStart):
    """Triplet Attention. Misra, Nalamada, Arasanipalai, Hou, "Rotate to Attend: Convolutional Triplet Attention
    Module", WACV 2021.

    Three branches, each capturing the interaction of two of the dimensions (C, H, W); Z-pool(.) concatenates the max
    and the mean over the remaining ("rotated away") dimension, in that order:
        a_cw = sigmoid(BN(conv([max_H x ; mean_H x])))    on the (C, W) plane, broadcast over H   (B, C, 1, W)
        a_hc = sigmoid(BN(conv([max_W x ; mean_W x])))    on the (H, C) plane, broadcast over W   (B, C, H, 1)
        a_hw = sigmoid(BN(conv([max_C x ; mean_C x])))    on the (H, W) plane, broadcast over C   (B, 1, H, W)
        y    = x * (a_cw + a_hc + a_hw) / 3
    conv: k x k, 2 -> 1 channels, no bias. The paper rotates (permutes) the whole map so that the pooled dimension
    comes first; reducing over that dimension directly gives the same pooled maps without copying the map (the
    (H, C) branch convolves the transposed, pooled (C, H) map, so its kernel is the paper's). Branch names and
    weight layout follow the official code (cw, hc, hw). Batch-1 training on 1 x 1 maps: the BN falls back to its
    running statistics (``PooledBatchNorm2d``).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser (the block's size does not depend on it).
        kernel_size (int): Odd kernel k of the three branch convs (paper: 7).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int | None = None, kernel_size: int = 7):
        super().__init__()
        check_int("TripletAttention", "kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise BlockArgumentError(f"TripletAttention: kernel_size must be odd to keep H x W, got {kernel_size}")
        self.cw = _ZPoolGate(kernel_size)
        self.hc = _ZPoolGate(kernel_size)
        self.hw = _ZPoolGate(kernel_size)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """(a_cw + a_hc + a_hw) / 3, (B, C, H, W) in (0, 1).

        The small branch maps are laid out as (B, C, 1, W) and (B, C, H, 1) with plain strides before the broadcast
        sum: transposed views would make the sum come out in a (B, H, C, W) memory order, and every later pass over
        it (the sum, x * w) a strided one, 5x slower here.
        """
        b, c, h, w = x.shape
        a_cw = self.cw(_zpool(x, 2)).reshape(b, c, 1, w)  # (B, 1, C, W) -> (B, C, 1, W)
        a_hc = self.hc(_zpool(x, 3).transpose(2, 3).contiguous())  # (B, 2, H, C): the paper's (H, C) plane, small
        a_hc = a_hc.transpose(2, 3).reshape(b, c, h, 1)  # (B, 1, H, C) -> (B, C, H, 1), a small copy
        a_hw = self.hw(_zpool(x, 1))  # (B, 1, H, W)
        return (a_cw / 3 + a_hc / 3).add_(a_hw / 3)  # divide the small maps; one full-size buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reweighted(x, self.weights(x))


# ----------------------------------------------------------------------------------------------------------------
# Strip Pooling
# ----------------------------------------------------------------------------------------------------------------
class StripPooling(IdentityStart):
    """Strip Pooling Module (SPM). Hou, Zhang, Cheng, Feng, "Strip Pooling: Rethinking Spatial Pooling for Scene
    Parsing", CVPR 2020.

    Long, narrow pooling windows along each axis, 1D convolutions, expanded back and fused:
        y^h = BN(conv_{3x1}(mean_W x))          (B, C, H, 1)     horizontal strips, one per row
        y^v = BN(conv_{1x3}(mean_H x))          (B, C, 1, W)     vertical strips, one per column
        M   = sigmoid(conv_{1x1}(ReLU(y^h + y^v)))      y^h + y^v broadcast to (B, C, H, W)
        y   = x * M
    As the official code (``SPBlock``): no channel reduction (all convs C -> C), a ReLU after the fusion sum, a bias
    only on the 1x1 conv. Deviation: the 1D convs have no bias (the official code has one in its final version); a
    bias right before BN only shifts the BN input mean, which BN removes. Batch-1 training on a 1-row or 1-column
    map: the BNs fall back to their running statistics (``PooledBatchNorm2d``).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int):
        super().__init__()
        check_int("StripPooling", "c1", c1)
        self.conv1 = nn.Conv2d(c1, c1, (3, 1), padding=(1, 0), bias=False)  # along H, on (B, C, H, 1)
        self.bn1 = PooledBatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c1, (1, 3), padding=(0, 1), bias=False)  # along W, on (B, C, 1, W)
        self.bn2 = PooledBatchNorm2d(c1)
        self.conv3 = Conv1x1(c1, c1)
        self.act = nn.ReLU()

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """M, (B, C, H, W) in (0, 1)."""
        yh = self.bn1(self.conv1(x.mean(3, keepdim=True)))  # (B, C, H, 1)
        yv = self.bn2(self.conv2(x.mean(2, keepdim=True)))  # (B, C, 1, W)
        return self.conv3(self.act(yh + yv)).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gated(x, x * self.weights(x))


# ----------------------------------------------------------------------------------------------------------------
# Large Kernel Attention (VAN)
# ----------------------------------------------------------------------------------------------------------------
class LKA(IdentityStart):
    """Large Kernel Attention. Guo, Lu, Liu, Cheng, Hu, "Visual Attention Network", Computational Visual Media 2023
    (arXiv 2202.09741).

    A K x K convolution decomposed into a depth-wise conv, a depth-wise dilated conv and a 1x1 conv:
        Attention = Conv_{1x1}(DW-D-Conv_{ceil(K/d) x ceil(K/d), dilation d}(DW-Conv_{(2d-1) x (2d-1)}(x)))
        y         = Attention * x          (element-wise; the attention is not squashed by a sigmoid)
    With the paper's K = 21, d = 3: a 5x5 DW conv, a 7x7 DW conv with dilation 3 and a 1x1 conv, all with bias
    (receptive field 23 x 23). Attribute names follow the official code (conv0, conv_spatial, conv1). Weights use
    PyTorch's default initialisation (the official code draws normal(0, sqrt(2 / fan_out))).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        kernel_size (int): Size K of the large kernel being decomposed (paper: 21).
        dilation (int): Dilation d (paper: 3); ceil(K / d) must be odd to keep the map size.

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, kernel_size: int = 21, dilation: int = 3):
        super().__init__()
        check_int("LKA", "c1", c1)
        check_int("LKA", "kernel_size", kernel_size, minimum=3)
        check_int("LKA", "dilation", dilation)
        k_dw, k_dwd = 2 * dilation - 1, math.ceil(kernel_size / dilation)
        if k_dwd % 2 == 0:
            raise BlockArgumentError(
                f"LKA: ceil(kernel_size / dilation) = ceil({kernel_size} / {dilation}) = {k_dwd} must be odd to keep "
                f"the map size (paper: kernel_size=21, dilation=3)"
            )
        self.conv0 = nn.Conv2d(c1, c1, k_dw, padding=k_dw // 2, groups=c1)
        self.conv_spatial = nn.Conv2d(c1, c1, k_dwd, padding=dilation * (k_dwd // 2), dilation=dilation, groups=c1)
        self.conv1 = Conv1x1(c1, c1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map, (B, C, H, W), unbounded."""
        return self.conv1(self.conv_spatial(self.conv0(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gated(x, self.attention(x) * x)


class VANAttention(IdentityStart):
    """The attention unit of a VAN block. Guo, Lu, Liu, Cheng, Hu, "Visual Attention Network", Computational Visual
    Media 2023 (arXiv 2202.09741).

        y = x + Conv_{1x1}(LKA(GELU(Conv_{1x1}(x))))
    1x1 convs C -> C with bias; the shortcut is part of the unit, as in the official code (``SpatialAttention``:
    proj_1, activation, spatial_gating_unit, proj_2). The paper's block wraps it as x + ls * unit(BN(x)) and adds
    an MLP; here the unit stands alone, so a YAML puts BN / MLP around it if wanted.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        kernel_size (int): LKA's large kernel K (paper: 21).
        dilation (int): LKA's dilation d (paper: 3).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, kernel_size: int = 21, dilation: int = 3):
        super().__init__()
        self.spatial_gating_unit = LKA(c1, kernel_size, dilation)  # validates the arguments
        self.proj_1 = Conv1x1(c1, c1)
        self.activation = nn.GELU()
        self.proj_2 = Conv1x1(c1, c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return self.gated(x, y)


# ----------------------------------------------------------------------------------------------------------------
# Spatial Transformer
# ----------------------------------------------------------------------------------------------------------------
def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Sampling grid of the affine transforms ``theta`` (B, 2, 3) for an h x w output, (B, h, w, 2) as (x, y).

    Target pixel centres in normalised coordinates (align_corners=False: -1 and 1 are the outer pixel edges),
        x_t = (2 j + 1) / w - 1,   y_t = (2 i + 1) / h - 1,   (x_s, y_s) = theta @ (x_t, y_t, 1)
    the same grid as ``F.affine_grid(theta, (B, C, h, w), align_corners=False)``, built from plain ops so that ONNX
    export works (opset >= 16 for GridSample).
    """
    xs = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    base = torch.stack((gx, gy, torch.ones_like(gx)), -1).reshape(1, h * w, 3)
    return (base @ theta.transpose(1, 2)).reshape(-1, h, w, 2)


class STN(nn.Module):
    """Spatial Transformer on a feature map. Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer
    Networks", NeurIPS 2015.

    A localisation net regresses an affine transform per sample; the map is resampled on the transformed grid:
        theta = f_loc(x)                       (B, 2, 3)
        (x_s, y_s) = theta @ (x_t, y_t, 1)     for every target pixel centre (normalised to [-1, 1])
        y(x_t, y_t) = sum_nm x_nm max(0, 1 - |x_s - m|) max(0, 1 - |y_s - n|)     bilinear sampling
    f_loc (this implementation's choice; the paper sizes it per task): two 3x3 stride-2 convs (BN + SiLU,
    mid = max(8, c1 // reduction) channels), global average pooling (any H x W, down to 1 x 1), FC mid -> mid + ReLU,
    FC mid -> 6. As in the paper the last FC starts with zero weights and the identity as bias, so a new STN is the
    identity transform. Sampling: ``F.grid_sample`` bilinear, padding_mode='zeros' (points outside the map read 0,
    the paper's sampling kernel), align_corners=False (pixel centres, so the identity theta reproduces the map at
    any size, up to float rounding); the grid is built by hand (``affine_grid``). Grid and sampling run in at least
    fp32, under AMP too, and so does theta's last layer (a bf16 grid is off by up to 1/256 of the map width); the output
    has the input's dtype.

    Not an ``IdentityStart`` block: it already starts as the identity, and a zero gate on top would stop the
    gradient to theta while the gate's own gradient (y - x) is zero: neither would ever move. Batch-1 training on
    maps that the strided convs reduce to 1 x 1: the BNs fall back to their running statistics.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): Width of the localisation net, c1 // reduction (at least 8).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, reduction: int = 8):
        super().__init__()
        check_int("STN", "c1", c1)
        check_int("STN", "reduction", reduction)
        mid = max(8, c1 // reduction)
        self.loc = nn.Sequential(
            nn.Conv2d(c1, mid, 3, 2, 1, bias=False),
            PooledBatchNorm2d(mid),
            nn.SiLU(),
            nn.Conv2d(mid, mid, 3, 2, 1, bias=False),
            PooledBatchNorm2d(mid),
            nn.SiLU(),
        )
        self.fc1 = nn.Linear(mid, mid)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(mid, 6)
        nn.init.zeros_(self.fc2.weight)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """The affine transforms, (B, 2, 3), in fc2's dtype (under AMP too: a half theta shifts the grid)."""
        z = self.act(self.fc1(self.loc(x).mean((2, 3))))  # (B, mid)
        with torch.autocast(x.device.type, enabled=False):
            return self.fc2(z.to(self.fc2.weight.dtype)).reshape(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = acc_dtype(x.dtype)
        theta = self.theta(x)
        with torch.autocast(x.device.type, enabled=False):  # AMP would run the grid's product in half
            grid = affine_grid(theta.to(dtype), x.shape[2], x.shape[3])
            y = F.grid_sample(x.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return y.to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Residual Attention
# ----------------------------------------------------------------------------------------------------------------
class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck residual unit (He et al., ECCV 2016), channel-preserving, as used by the Residual
    Attention Network:
        y = x + conv_{1x1}(ReLU(BN(conv_{3x3}(ReLU(BN(conv_{1x1}(ReLU(BN(x)))))))))
    widths C -> C/4 -> C/4 -> C, convs without bias. BNs are ``PooledBatchNorm2d`` (the soft mask branch can pool
    a map down to 1 x 1).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c: int):
        super().__init__()
        mid = max(c // 4, 1)
        self.bn1 = PooledBatchNorm2d(c)
        self.conv1 = Conv1x1(c, mid, bias=False)
        self.bn2 = PooledBatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.bn3 = PooledBatchNorm2d(mid)
        self.conv3 = Conv1x1(mid, c, bias=False)
        self.act = nn.ReLU(inplace=True)  # on fresh BN outputs only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.act(self.bn1(x)))
        y = self.conv2(self.act(self.bn2(y)))
        return x + self.conv3(self.act(self.bn3(y)))


def _units(c: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(PreActBottleneck(c) for _ in range(n)))


class ResidualAttention(IdentityStart):
    """Attention module of the Residual Attention Network. Wang, Jiang, Qian, Yang, Li, Zhang, Wang, Tang, "Residual
    Attention Network for Image Classification", CVPR 2017.

        x0 = U_p(x)                                  p pre-activation bottleneck units before the split
        T  = U_t(x0)                                 trunk branch, t units
        M  = sigmoid(conv1x1(ReLU(BN(conv1x1(ReLU(BN(up(S(x0)))))))))      soft mask branch, in (0, 1)
        y  = U_p((1 + M) * T)                        attention residual learning, p units after
    Soft mask S, with L = ``levels`` max-pools (3x3, stride 2) and r units per level:
        bottom-up:  d_1 = U_r(pool(x0)),  d_l = U_r(pool(d_{l-1})),  then U_r(d_L) at the lowest resolution
        top-down:   u_l = U_r(U_1(d_l) + up(u_{l+1})) for l = L-1 .. 1, with skip units U_1; finally up to x's size
    as in the official Caffe prototxt (down units, 2r units at the bottom, one skip unit per level above it,
    mirrored up units, BN-ReLU before each 1x1 conv of the mask head, no conv bias).

    Deviations / edge cases: pooling uses padding 1, so a level is ceil(H / 2) x ceil(W / 2) (the official Caffe
    pooling, pad 0 with ceil rounding, gives the same sizes for the paper's 56/28/14 maps but fails below 3 x 3);
    a 1 x 1 map stays 1 x 1, so any number of levels works on tiny maps, the deepest ones then repeating 1 x 1
    (no clamping). Up-sampling is bilinear with align_corners=True (the corner-aligned Caffe Interp layer), to the
    exact size of the level above, so odd sizes come back exactly. BNs fall back to running statistics for batch-1
    training on 1 x 1 levels.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        levels (int): Max-pool levels of the soft mask branch. The paper (Attention-56/92, 224 px input) uses 3 at
            56 x 56, 2 at 28 x 28, 1 at 14 x 14, always reaching 7 x 7. Default 2, its 28 x 28 stage; at 640 px use
            3 at P3 (80 -> 10), 2 at P4 (40 -> 10), 1 at P5 (20 -> 10).
        p (int): Units before the split and after the fusion (paper: 1).
        t (int): Trunk branch units (paper: 2).
        r (int): Units between adjacent pooling layers in the mask branch (paper: 1).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, levels: int = 2, p: int = 1, t: int = 2, r: int = 1):
        super().__init__()
        check_int("ResidualAttention", "c1", c1)
        self.levels = check_int("ResidualAttention", "levels", levels)
        check_int("ResidualAttention", "p", p, minimum=0)
        check_int("ResidualAttention", "t", t)
        check_int("ResidualAttention", "r", r)
        self.pre = _units(c1, p)
        self.trunk = _units(c1, t)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.down = nn.ModuleList(_units(c1, r) for _ in range(levels))
        self.bottom = _units(c1, r)
        self.skip = nn.ModuleList(PreActBottleneck(c1) for _ in range(levels - 1))
        self.up = nn.ModuleList(_units(c1, r) for _ in range(levels - 1))
        self.mask_head = nn.Sequential(
            PooledBatchNorm2d(c1),
            nn.ReLU(inplace=True),
            Conv1x1(c1, c1, bias=False),
            PooledBatchNorm2d(c1),
            nn.ReLU(inplace=True),
            Conv1x1(c1, c1, bias=False),
            nn.Sigmoid(),
        )
        self.post = _units(c1, p)

    @staticmethod
    def _up(x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    def mask(self, x0: torch.Tensor) -> torch.Tensor:
        """Soft mask M(x0), (B, C, H, W) in (0, 1)."""
        feats = []
        m = x0
        for down in self.down:  # bottom-up
            m = down(self.pool(m))
            feats.append(m)
        m = self.bottom(m)
        for i in range(self.levels - 2, -1, -1):  # top-down, from the level above the bottom
            d = feats[i]
            m = self.up[i](self.skip[i](d) + self._up(m, d.shape[-2:]))
        return self.mask_head(self._up(m, x0.shape[-2:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.pre(x)
        y = self.post((1 + self.mask(x0)) * self.trunk(x0))
        return self.gated(x, y)
