"""Grouped / multi-branch attention: EMA, Shuffle Attention (SA-Net), Selective Kernel attention (SKNet).

Every block maps (B, C, H, W) -> (B, C, H, W); the first constructor argument is the input width ``c1``, which the
YAML parser fills in from ``from`` (it is never written in the YAML). Each can start as the identity for fine-tuning
(``IdentityStart``: off by default).

Group counts adapt to the width: YOLO's widths run from 16 to 1280 channels over the scales, and a YAML's arguments
are written once for all of them, so a group count is an upper bound. The block uses the largest count not above it
that splits the width as the block needs (``fitting_groups``); at the widths the papers use, that is the count given.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import (
    BlockArgumentError, IdentityStart, PooledBatchNorm2d, acc_dtype, check_int, no_autograd, plain_eager,
)

__all__ = ("EMA", "ShuffleAttention", "SKAttention", "fitting_groups", "pooled_mean")


def pooled_mean(t: torch.Tensor, dims: int | tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    """Mean of t over ``dims``, accumulated in fp32 for half t, as a sum divided by the count: the same values as
    ``mean``, but its backward broadcasts the gradient as a view where mean's writes a full-size copy (5-8% of a
    pooled gate's training step on CPU)."""
    dims = (dims,) if isinstance(dims, int) else dims
    n = 1
    for d in dims:
        n = n * t.shape[d]
    return t.sum(dims, keepdim=keepdim, dtype=acc_dtype(t.dtype)) / n


def fitting_groups(c: int, at_most: int, per_group: int = 1) -> int:
    """The largest group count g <= ``at_most`` with ``c`` divisible by ``per_group * g`` (0 when there is none)."""
    for g in range(min(at_most, c // per_group), 0, -1):
        if c % (per_group * g) == 0:
            return g
    return 0


# ----------------------------------------------------------------------------------------------------------------
# EMA
# ----------------------------------------------------------------------------------------------------------------
class EMA(IdentityStart):
    """Efficient Multi-scale Attention. Ouyang et al., "Efficient Multi-Scale Attention Module with Cross-Spatial
    Learning", ICASSP 2023.

    The channels are split into G groups of c = C / G (the batch folds them: X_g of shape (B G, c, H, W)); every
    group goes through the same weights:
        a^h = sigmoid(F1(mean_W X_g)),  a^w = sigmoid(F1(mean_H X_g))      F1: 1x1 conv c -> c, shared by both strips
        X1  = GN(X_g * a^h * a^w)            GroupNorm with one group per channel (c groups), affine gamma, beta
        X2  = F3(X_g)                        F3: 3x3 conv c -> c (zero padding 1)
        A   = softmax_c(GAP(X1))^T X2 + softmax_c(GAP(X2))^T X1        cross-spatial learning, (B G, 1, H, W)
        Y_g = X_g * sigmoid(A)
    Computed in an equivalent, cheaper form (same values to float rounding): GAP(X1) is exactly GN's bias beta
    (a normalised channel has mean 0), so the first product is one 3x3 conv c -> 1 with the kernel
    sum_c softmax(beta)_c F3[c]; GAP(X2) follows from the linearity of F3 (the map's mean, its border rows and columns
    and its corners); and softmax(GAP(X2))^T X1 = sum_c k_c (X_g a^h a^w)_c + const with k_c = p_c gamma_c / sigma_c,
    so neither X1 nor X2 is materialised. Sums and softmaxes run in fp32 for half inputs.

    Groups: G = ``factor`` when it divides C (the official code asserts it), else the largest divisor of C below
    ``factor`` (``fitting_groups``): factor 32 gives 16 groups of 1 channel at C = 16 and 24 groups of 2 at C = 48,
    where the official code cannot be built. With one channel per group both softmaxes are 1 and the block is
    sigmoid(F3 x + GN(x a^h a^w)) per channel.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        factor (int): Number of groups G, an upper bound (paper and official code: 32).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, factor: int = 32):
        super().__init__()
        check_int("EMA", "c1", c1)
        check_int("EMA", "factor", factor)
        self.groups = fitting_groups(c1, factor)
        c = c1 // self.groups
        self.conv1x1 = nn.Conv2d(c, c, 1)  # F1, on the concatenated H and W strips
        self.conv3x3 = nn.Conv2d(c, c, 3, padding=1)  # F3
        self.norm = nn.GroupNorm(c, c)  # its affine parameters; applied in closed form in forward

    def _conv3x3_means(self, gx: torch.Tensor, xh: torch.Tensor, xw: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
        """GAP(F3(X_g)), (BG, c), without the convolution: kernel tap (i, j) reads the map shifted by (i - 1, j - 1)
        with zero fill, whose mean is the map's mean less the one row and one column it loses (plus their corner).
        xh, xw: the row means (BG, c, H) and column means (BG, c, W)."""
        h, w = gx.shape[2], gx.shape[3]
        weight = self.conv3x3.weight.to(dt)  # (c, c, 3, 3)
        mean = xh.mean(2)  # (BG, c)
        rows = torch.stack((xh[..., -1], xh[..., 0]), -1) / h  # taps i = 0, 2 lose the last, first row: (BG, c, 2)
        cols = torch.stack((xw[..., -1], xw[..., 0]), -1) / w  # taps j = 0, 2 lose the last, first column
        edge = torch.cat((gx[:, :, -1:], gx[:, :, :1]), 2)  # (BG, c, 2, W): last row, first row
        corners = torch.cat((edge[..., -1:], edge[..., :1]), 3).to(dt) / (h * w)  # (BG, c, 2, 2), same order
        feats = torch.cat((mean, -rows.flatten(1), -cols.flatten(1), corners.flatten(1)), 1)  # (BG, 9 c)
        taps = torch.cat(
            (
                weight.sum((2, 3)),  # every tap reads the whole map's mean
                weight[:, :, ::2].sum(3).flatten(1),  # rows 0, 2 lose a row
                weight[:, :, :, ::2].sum(2).flatten(1),  # columns 0, 2 lose a column
                weight[:, :, ::2, ::2].flatten(1),  # the four corner taps add back their corner
            ),
            1,
        )  # (c, 9 c), in the order of feats
        return (feats.unsqueeze(1) * taps).sum(2) + self.conv3x3.bias.to(dt)  # (BG, c), fp32 sums

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        g, dt = self.groups, acc_dtype(x.dtype)
        n, c = b * g, ch // g
        x = x.contiguous()
        gx = x.view(n, c, h, w)  # X_g, (BG, c, H, W)
        xh, xw = pooled_mean(gx, 3), pooled_mean(gx, 2)  # directional pooling: (BG, c, H), (BG, c, W)
        f1 = self.conv1x1
        strips = torch.cat((xh, xw), 2)  # (BG, c, H + W)
        if torch.jit.is_tracing():  # export: the module itself (ONNX needs convolution kernels of known shape)
            strips = f1(strips.unsqueeze(-1).to(f1.weight.dtype)).squeeze(-1)
        else:
            strips = F.conv1d(strips, f1.weight.to(dt).view(c, c, 1), f1.bias.to(dt))
        ah, aw = strips.to(dt).sigmoid().split((h, w), 2)  # fp32 gates: X_g a^h a^w is fp32 for half inputs
        if no_autograd(gx) and no_autograd(ah):
            z = torch.mul(gx, ah.unsqueeze(-1)).mul_(aw.unsqueeze(2))
        else:
            z = gx * ah.unsqueeze(-1) * aw.unsqueeze(2)  # (BG, c, H, W), the input of GN
        zv = z.view(n, c, h * w)
        mu, var = _mean_var(zv, -1)  # GN statistics, (BG, c)
        gamma, beta = self.norm.weight.to(dt), self.norm.bias.to(dt)
        p = self._conv3x3_means(gx, xh, xw, dt).softmax(1)  # softmax_c(GAP(X2)), (BG, c)
        k = p * gamma * torch.rsqrt(var + self.norm.eps)  # weights of z's channels in softmax(GAP(X2))^T X1
        pi = beta.softmax(0)  # softmax_c(GAP(X1)) = softmax(beta), the same for every group and image
        const = (p * beta).sum(1) - (k * mu).sum(1) + (pi * self.conv3x3.bias.to(dt)).sum()  # (BG,)
        const, k = const.view(n, 1, 1).to(zv.dtype), k.unsqueeze(1).to(zv.dtype)
        if torch.jit.is_tracing():  # export: F3 itself (ONNX needs convolution kernels of known shape)
            d = F.conv2d(gx, self.conv3x3.weight, None, padding=1).view(n, c, h * w).to(zv.dtype)
            a = torch.baddbmm(const, pi.to(zv.dtype).expand(n, 1, c), d)
            return self.gated(x, (gx * torch.baddbmm(a, k, zv).sigmoid().view(n, 1, h, w).to(x.dtype)).view(x.shape))
        # softmax(beta)^T X2 less its bias: a depth-wise conv of x with sum_c softmax(beta)_c F3[c] repeated per
        # group (oneDNN is 8-12x slower on a c -> 1 conv of (BG, c, H, W)), then summed over each group's c channels
        kernel = (pi.view(-1, 1, 1, 1) * self.conv3x3.weight.to(dt)).sum(0).unsqueeze(1)  # (c, 1, 3, 3)
        d = F.conv2d(x, kernel.to(x.dtype).repeat(g, 1, 1, 1), padding=1, groups=ch).view(n, c, h * w).to(zv.dtype)
        inplace = no_autograd(d) and no_autograd(k)
        if c == 1:
            a = d.add_(const) if inplace else d + const
        else:
            a = torch.baddbmm(const, d.new_ones(1, 1, c).expand(n, 1, c), d).to(zv.dtype)  # (BG, 1, HW)
        if inplace:  # a is ours: accumulate and squash in place
            a = a.baddbmm_(k, zv).sigmoid_()
        else:
            a = torch.baddbmm(a, k, zv).to(zv.dtype).sigmoid()
        y = gx * a.view(n, 1, h, w).to(x.dtype)
        return self.gated(x, y.view(b, ch, h, w))


def _mean_var(t: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of t over ``dim``, in fp32 for half t, as E[t^2] - E[t]^2 from two vectorised
    reductions (torch.var_mean's Welford pass is 30-50x slower on CPU). Cancellation costs about |mean|^2 / var
    float epsilons of the variance: negligible for feature maps."""
    dt = acc_dtype(t.dtype)
    mean = pooled_mean(t, dim)
    msq = torch.linalg.vector_norm(t, dim=dim, dtype=dt).square() / t.shape[dim]
    return mean, (msq - mean.square()).clamp(min=0)


# ----------------------------------------------------------------------------------------------------------------
# Shuffle Attention
# ----------------------------------------------------------------------------------------------------------------
class ShuffleAttention(IdentityStart):
    """Shuffle Attention. Zhang, Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", ICASSP 2021.

    The channels are split into G groups, each group into two halves of c = C / (2G) channels, the batch folded:
        channel half:  X_k1 * sigmoid(W1 * GAP(X_k1) + b1)                 W1, b1: (c,), shared by all groups
        spatial half:  X_k2 * sigmoid(W2 * GN(X_k2) + b2)                  GN: one group per channel, affine (c,)
    then the halves are concatenated back in place and the channels shuffled with 2 groups (channel i of the first
    half of the concatenated map goes to output channel 2 i, of the second half to 2 i + 1). Every channel's weight
    depends on that channel alone. Initialised as the official code: W1 = W2 = 0, b1 = b2 = 1 (a constant gate
    sigmoid(1) at start); GN starts at weight 1, bias 0.

    Computed without a separate concatenation and shuffle: for an even G the halves' products are written straight
    into their shuffled places (one stack in training; in inference two products with ``out=``, GN folded into the
    gate's affine map). In training W2 GN(.) + b2 is one GroupNorm with the affine map (W2 gamma, W2 beta + b2).
    Statistics in fp32 for half inputs.

    Groups: G = ``groups`` when C is divisible by 2 G (the official code's constraint), else the largest count below
    it that is (``fitting_groups``): the default 64 (paper and official ``sa_layer``) gives 8, 16, 32, 64 groups at
    C = 16, 32, 64, >= 128, where the official code needs C divisible by 128. The External-Attention port that
    YOLO forks copy as ``ShuffleAttention(channel, reduction=16, G=8)`` is the same block with groups = 8 (its
    ``reduction`` is unused).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser (even).
        groups (int): Number of groups G, an upper bound (paper and official code: 64).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, groups: int = 64):
        super().__init__()
        check_int("ShuffleAttention", "c1", c1)
        check_int("ShuffleAttention", "groups", groups)
        if c1 % 2:
            raise BlockArgumentError(f"ShuffleAttention: the width must be even (two halves per group), got {c1}")
        self.groups = fitting_groups(c1, groups, per_group=2)
        c = c1 // (2 * self.groups)
        self.channel_weight = nn.Parameter(torch.zeros(c))  # W1
        self.channel_bias = nn.Parameter(torch.ones(c))  # b1
        self.spatial_weight = nn.Parameter(torch.zeros(c))  # W2
        self.spatial_bias = nn.Parameter(torch.ones(c))  # b2
        self.norm = nn.GroupNorm(c, c)  # GN's affine parameters and eps; applied together with W2, b2 in forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        g, c, dt = self.groups, self.channel_weight.numel(), acc_dtype(x.dtype)  # c: a constant when traced
        if g % 2 == 0 and dt == x.dtype and x.is_contiguous() and plain_eager(x, self.spatial_weight):
            return self.gated(x, self._inference(x))
        xv = x.reshape(b, g, 2, c, h * w)
        x0, x1 = xv.unbind(2)  # (B, G, c, HW); unbind's backward is one stack, two selects' are full fills
        mu0 = pooled_mean(x0, -1, keepdim=True)
        gate0 = (self.channel_weight.to(dt).view(-1, 1) * mu0 + self.channel_bias.to(dt).view(-1, 1)).sigmoid()
        y0 = x0 * gate0.to(x.dtype)
        # W2 GN(X_k2) + b2 as one GroupNorm with the affine map (W2 gamma, W2 beta + b2): one op, forward and backward
        sw = self.spatial_weight
        gn = torch.group_norm(x1.reshape(b * g, c, h * w), c, sw * self.norm.weight,
                              sw * self.norm.bias + self.spatial_bias, self.norm.eps)  # fmt: skip
        y1 = x1 * gn.view(b, g, c, h * w).sigmoid().to(x.dtype)
        if g % 2:  # the concatenated map, then the shuffle
            y = torch.stack((y0, y1), 2)  # (B, G, 2, c, HW): the halves back in place
            return self.gated(x, y.view(b, 2, ch // 2, h * w).transpose(1, 2).reshape(b, ch, h, w))
        # G even: output channel 2 k + s holds concatenated channel s C/2 + k, and the first C/2 concatenated channels
        # are groups 0 .. G/2 - 1, so the output is (B, G/2, half, c, s, HW): one stack writes it
        y0, y1 = (t.view(b, 2, g // 2, c, h * w).permute(0, 2, 3, 1, 4) for t in (y0, y1))  # (B, G/2, c, s, HW)
        return self.gated(x, torch.stack((y0, y1), 2).view(b, ch, h, w))

    def _inference(self, x: torch.Tensor) -> torch.Tensor:
        """Plain eager inference, G even: each half's product written once, straight into its shuffled place, with GN
        folded into the gate's affine map: sigmoid(W2 GN(X_k2) + b2) = sigmoid(alpha X_k2 + beta) per channel.

        x viewed in output order is (B, G/2, half, c, s, HW) (see forward)."""
        b, ch, h, w = x.shape
        g, c = self.groups // 2, self.channel_weight.numel()
        x0, x1 = x.view(b, 2, g, 2, c, h * w).permute(0, 2, 3, 4, 1, 5).unbind(2)  # (B, G/2, c, 2, HW) views
        shape = (-1, 1, 1)
        gate0 = (self.channel_weight.view(shape) * x0.mean(-1, keepdim=True) + self.channel_bias.view(shape)).sigmoid_()
        mu1, var = _mean_var(x1, -1)
        sw = self.spatial_weight.view(shape)
        alpha = sw * self.norm.weight.view(shape) * torch.rsqrt(var.unsqueeze(-1) + self.norm.eps)
        beta = sw * self.norm.bias.view(shape) + self.spatial_bias.view(shape) - alpha * mu1.unsqueeze(-1)
        out = x.new_empty(b, g, 2, c, 2, h * w)
        torch.mul(x0, gate0, out=out[:, :, 0])
        torch.mul(x1, torch.addcmul(beta, alpha, x1).sigmoid_(), out=out[:, :, 1])
        return out.view(b, ch, h, w)


# ----------------------------------------------------------------------------------------------------------------
# Selective Kernel attention
# ----------------------------------------------------------------------------------------------------------------
class _SKBranch(nn.Module):
    """One SK path: conv (k x k, or the paper's dilated 3 x 3) -> BN -> ReLU. In eval mode BN is folded into the
    conv's weights when the weights are smaller than the map (then the conv's output is the branch before ReLU)."""

    def __init__(self, c: int, k: int, groups: int, paper: bool):
        super().__init__()
        if paper and k > 1:  # a k x k receptive field as a 3 x 3 kernel with dilation (k - 1) / 2
            d = (k - 1) // 2
            self.conv = nn.Conv2d(c, c, 3, padding=d, dilation=d, groups=groups, bias=False)
        else:
            self.conv = nn.Conv2d(c, c, k, padding=k // 2, groups=groups, bias=not paper)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.conv, self.bn
        if not self.training and conv.weight.numel() < x.numel():
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            weight = conv.weight * scale.view(-1, 1, 1, 1)
            y = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), 1, conv.padding, conv.dilation, conv.groups)
        else:
            y = bn(conv(x))
        return y.relu_() if no_autograd(y) else y.relu()


class SKAttention(IdentityStart):
    """Selective Kernel attention. Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019.

    M paths with different receptive fields are fused by a softmax attention across the paths, per channel:
        U_m = ReLU(BN(conv_m(x)))                               split, m = 1..M
        s   = GAP(sum_m U_m),   z = fc(s)                        fuse: C -> d, d = max(C / r, L)
        a_m = softmax_m(fc_m(z))                                 select: d -> C per path, softmax over the M paths
        y   = sum_m a_m * U_m

    Two layouts (``variant``):
      "port" (default): the External-Attention-pytorch ``SKAttention(channel, kernels=[1, 3, 5, 7], reduction=16,
        group=1, L=32)``, the source of the name ``SKAttention`` in YOLO YAMLs (the forks that use it copy that class):
        plain k x k convs with bias, fc a linear layer with bias and no BN or ReLU, one linear head with bias per
        path. Heavy: about 84 C^2 weights at the default kernels.
      "paper": the authors' (Caffe) SKNet unit: each k x k path is a 3 x 3 conv with dilation (k - 1) / 2, no bias,
        fc is a bias-free 1x1 conv -> BN -> ReLU, the heads have no bias. The paper's SK[M=2, G=32, r=16] unit is
        ``SKAttention(c1, kernels=(3, 5), groups=32, variant="paper")``.
    The sum U is never materialised: GAP(sum_m U_m) = sum_m GAP(U_m). In eval mode each path's BN is folded into its
    conv when that is cheaper than a BN pass over the map. Softmax in fp32.

    Groups: the convs' group count is ``groups`` when it divides C, else the largest divisor of C below it.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        kernels (sequence of int): Odd kernel sizes, one path each (port: 1, 3, 5, 7).
        reduction (int): Ratio r of the fuse layer (16).
        groups (int): Groups of the path convs, an upper bound (port: 1; paper: 32).
        L (int): Minimum width d of the fuse layer (32).
        variant (str): "port" or "paper".

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    VARIANTS = ("port", "paper")

    def __init__(
        self,
        c1: int,
        kernels: Sequence[int] = (1, 3, 5, 7),
        reduction: int = 16,
        groups: int = 1,
        L: int = 32,
        variant: str = "port",
    ):
        super().__init__()
        check_int("SKAttention", "c1", c1)
        check_int("SKAttention", "reduction", reduction)
        check_int("SKAttention", "groups", groups)
        check_int("SKAttention", "L", L)
        if variant not in self.VARIANTS:
            raise BlockArgumentError(f"SKAttention: variant must be one of {self.VARIANTS}, got {variant!r}")
        if isinstance(kernels, (str, bytes)) or not isinstance(kernels, Sequence) or not kernels:
            raise BlockArgumentError(f"SKAttention: kernels must be a non-empty list of odd sizes, got {kernels!r}")
        for k in kernels:
            check_int("SKAttention", "kernels[i]", k)
            if k % 2 == 0:
                raise BlockArgumentError(f"SKAttention: kernels must be odd to keep H x W, got {list(kernels)}")
        paper = variant == "paper"
        self.variant = variant
        self.groups = fitting_groups(c1, groups)
        d = max(L, c1 // reduction)
        self.branches = nn.ModuleList(_SKBranch(c1, k, self.groups, paper) for k in kernels)
        self.fuse = nn.Linear(c1, d, bias=not paper)  # fc
        self.fuse_bn = PooledBatchNorm2d(d) if paper else None
        self.select = nn.ModuleList(nn.Linear(d, c1, bias=not paper) for _ in kernels)  # fc_m

    def weights(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """a, (M, B, C) in fp32 (or the input's wider type), summing to 1 over the M paths."""
        dt = acc_dtype(feats[0].dtype)
        s = torch.stack([pooled_mean(f, (2, 3)) for f in feats]).sum(0)  # GAP(U), (B, C)
        z = self.fuse(s.to(self.fuse.weight.dtype))
        if self.fuse_bn is not None:
            z = self.fuse_bn(z[:, :, None, None]).flatten(1).relu()
        logits = torch.stack([head(z) for head in self.select])  # (M, B, C)
        return logits.softmax(0, dtype=dt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [branch(x) for branch in self.branches]  # U_m, (B, C, H, W) each
        a = self.weights(feats).to(x.dtype).unsqueeze(-1).unsqueeze(-1)  # (M, B, C, 1, 1)
        if no_autograd(feats[0]) and no_autograd(a):
            y = feats[0].mul_(a[0])  # our own buffers: accumulate in place
            for m in range(1, len(feats)):
                y.addcmul_(feats[m], a[m])
        else:
            y = feats[0] * a[0]
            for m in range(1, len(feats)):
                y = torch.addcmul(y, feats[m], a[m])
        return self.gated(x, y)
