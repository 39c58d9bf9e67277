"""Channel-preserving attention blocks: Coordinate Attention, SimAM, CBAM, MS-CAM.

Every block maps (B, C, H, W) -> (B, C, H, W); the first constructor argument is the input width ``c1``, which the
YAML parser fills in from ``from`` (it is never written in the YAML). Each can start as the identity for fine-tuning
(``IdentityStart``: off by default).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import (
    Conv1x1, ConvToOne, IdentityStart, PooledBatchNorm2d, acc_dtype, can_write_over, check_float, check_int, max_along,
    no_autograd, plain_eager,
)

__all__ = ("CA", "SimAM", "CBAM", "CBAMChannelAttention", "CBAMSpatialAttention", "MSCAM")

_HALF = torch.tensor(0.5)  # a 0-dim CPU scalar: adds to maps of any dtype and device without promoting them
_SIGMOID_HALF = 1 / (1 + math.exp(-0.5))


class CA(IdentityStart):
    """Coordinate Attention. Hou, Zhou, Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021.

    Direction-aware pooling keeps position along one axis while squeezing the other:
        z^h = mean_W(x)  (B, C, H, 1),   z^w = mean_H(x)  (B, C, 1, W)
        f   = delta(BN(F1([z^h ; z^w])))            F1: 1x1 conv C -> mid, mid = max(min_mid, C // reduction)
        g^h = sigmoid(F_h(f^h)),  g^w = sigmoid(F_w(f^w))     F_h, F_w: 1x1 conv mid -> C
        y   = x * g^h * g^w
    delta is h-swish, as in the paper's implementation.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): Channel reduction r (paper: 32).
        min_mid (int): Lower bound for the hidden width (paper: 8).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, reduction: int = 32, min_mid: int = 8):
        super().__init__()
        check_int("CA", "reduction", reduction)
        check_int("CA", "min_mid", min_mid)
        mid = max(min_mid, c1 // reduction)
        self.conv1 = Conv1x1(c1, mid)
        self.bn = nn.BatchNorm2d(mid)
        self.act = nn.Hardswish()
        self.conv_h = Conv1x1(mid, c1)
        self.conv_w = Conv1x1(mid, c1)

    def weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g^h (B, C, H, 1), g^w (B, C, 1, W))."""
        h, w = x.shape[2], x.shape[3]
        zh = x.mean(3, keepdim=True)  # (B, C, H, 1)
        zw = x.mean(2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        f = self.act(self.bn(self.conv1(torch.cat((zh, zw), 2))))  # (B, mid, H + W, 1)
        fh, fw = torch.split(f, (h, w), 2)
        return self.conv_h(fh).sigmoid(), self.conv_w(fw.transpose(2, 3)).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gh, gw = self.weights(x)
        return self.gated(x, x * gh * gw)


class SimAM(IdentityStart):
    """SimAM, parameter-free attention. Yang, Zhang, Li, Xie, "SimAM: A Simple, Parameter-Free Attention Module for
    Convolutional Neural Networks", ICML 2021.

    Each neuron's minimal energy has a closed form; its inverse weights the neuron:
        d   = (x - mean_HW(x))^2,   n = H*W - 1,   var = sum_HW(d) / n
        1/e = d / (4 (var + lambda)) + 0.5
        y   = x * sigmoid(1/e)
    On a 1x1 map n is taken as 1 (var = 0), giving the constant weight sigmoid(0.5) instead of 0/0.

    Args:
        c1 (int): Input channels, filled in by the parser (unused: the block has no parameters).
        e_lambda (float): Regulariser lambda (paper: 1e-4).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int | None = None, e_lambda: float = 1e-4):
        super().__init__()
        self.e_lambda = check_float("SimAM", "e_lambda", e_lambda)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """sigmoid(1/e) per neuron, (B, C, H, W), in x's dtype.

        The statistics come from one group norm with a group per channel (one fused kernel, sums in fp32 for half
        inputs): with eps = lambda * n / (H W) it returns g = (x - mu) / sqrt(n / (H W) * (var + lambda)), so
            1/e = d / (4 (var + lambda)) + 0.5 = g^2 * n / (4 H W) + 0.5,
        one multiply-add over g (written over g in plain eager inference), then the sigmoid (in place without
        autograd): with the product in ``forward``, four kernels over the map instead of eight. The formula is
        applied term by term instead for export (tracing: eps depends on H x W, which a traced group norm would
        freeze) and for non-contiguous (channels_last) input, whose CPU group norm takes E[x^2] - E[x]^2 in fp32
        and loses the variance of channels whose mean is far above their spread.
        """
        if torch.jit.is_tracing() or not x.is_contiguous():
            return self._literal_weights(x)
        hw = x.shape[2] * x.shape[3]
        if hw == 1:  # d = 0 everywhere (F.group_norm rejects a single value per group at batch 1)
            return torch.full_like(x, _SIGMOID_HALF)
        n = hw - 1
        g = F.group_norm(x, x.shape[1], eps=self.e_lambda * n / hw)  # fp32 under autocast
        e = torch.addcmul(_HALF, g, g, value=n / (4 * hw), out=g if plain_eager(g) else None)
        w = e.sigmoid_() if no_autograd(e) else e.sigmoid()
        return w.to(x.dtype)

    def _literal_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The docstring's formula, term by term (sums in fp32 for half inputs: fp16 overflows on large maps)."""
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        d = x - x.mean((2, 3), keepdim=True)
        var = d.square().sum((2, 3), keepdim=True, dtype=acc_dtype(x.dtype)) / n
        return (d.square() / (4 * (var + self.e_lambda)).to(x.dtype) + 0.5).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reweighted(x, self.weights(x))


class CBAMChannelAttention(nn.Module):
    """CBAM channel attention: Mc = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x))), a shared C -> C/r -> C MLP.

    Returns the attention weights (B, C, 1, 1), not the re-weighted map.
    """

    def __init__(self, c1: int, reduction: int = 16):
        super().__init__()
        check_int("CBAM", "reduction", reduction)
        hidden = max(c1 // reduction, 1)
        self.mlp = nn.Sequential(Conv1x1(c1, hidden), nn.ReLU(inplace=True), Conv1x1(hidden, c1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True))).sigmoid()


class CBAMSpatialAttention(nn.Module):
    """CBAM spatial attention: Ms = sigmoid(f^{k x k}([mean_C(x) ; max_C(x)])), a 2 -> 1 conv.

    Returns the attention weights (B, 1, H, W).
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        check_int("CBAM", "kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"CBAM: kernel_size must be odd to keep H x W, got {kernel_size}")
        self.conv = ConvToOne(2, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.stack((x.mean(1), max_along(x, 1)), 1)).sigmoid()


class CBAM(IdentityStart):
    """Convolutional Block Attention Module. Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module",
    ECCV 2018.

    Channel then spatial attention, applied in sequence (the paper's best arrangement):
        x' = Mc(x) * x,   y = Ms(x') * x'
    Mc uses both average- and max-pooled descriptors through one shared MLP with reduction r; Ms convolves the
    channel-wise average and max maps with a k x k kernel. This differs from ``ultralytics.nn.modules.CBAM``, whose
    channel branch has no reduction MLP and no max-pool descriptor.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): MLP reduction ratio r (paper: 16).
        kernel_size (int): Spatial attention kernel (paper: 7).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = CBAMChannelAttention(c1, reduction)
        self.spatial = CBAMSpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.channel(x)
        return self.gated(x, y * self.spatial(y))


class MSCAM(IdentityStart):
    """Multi-Scale Channel Attention Module. Dai, Gieseke, Oehmcke, Wu, Barnard, "Attentional Feature Fusion",
    WACV 2021.

    A local (per-pixel) and a global (pooled) bottleneck of point-wise convolutions, summed:
        L(x) = BN(PWConv2(ReLU(BN(PWConv1(x)))))            (B, C, H, W)
        G(x) = BN(PWConv2'(ReLU(BN(PWConv1'(GAP(x))))))      (B, C, 1, 1)
        M(x) = sigmoid(L(x) + G(x)),      y = x * M(x)
    ``weights(x)`` returns M(x); AFF and iAFF use it to mix two inputs.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): Bottleneck ratio r (paper's code: 4).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, reduction: int = 4):
        super().__init__()
        check_int("MSCAM", "reduction", reduction)
        mid = max(c1 // reduction, 1)
        self.local_att = nn.Sequential(
            Conv1x1(c1, mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            Conv1x1(mid, c1, bias=False),
            nn.BatchNorm2d(c1),
        )
        self.global_att = nn.Sequential(
            Conv1x1(c1, mid, bias=False),
            PooledBatchNorm2d(mid),
            nn.ReLU(inplace=True),
            Conv1x1(mid, c1, bias=False),
            PooledBatchNorm2d(c1),
        )

    def weights(self, x: torch.Tensor, reuse: bool = False) -> torch.Tensor:
        """M(x), (B, C, H, W) in (0, 1). With ``reuse`` (the caller made x and no longer needs it), M is written over
        x's memory in plain eager inference.

        The local branch's point-wise convs run as batched matrix products on the (B, C, H*W) view (on CPU, 2-3x
        faster than a 1x1 convolution of an NCHW map); in eval mode its BNs are folded into them, the biases and the
        global part are added in place and the sigmoid runs in place: the full map is read by the first product and
        written by the second, then updated twice in place.
        """
        b, c, h, w = x.shape
        g = self.global_att(x.mean((2, 3), keepdim=True)).flatten(1).unsqueeze(-1)  # (B, C, 1)
        conv1, bn1, act, conv2, bn2 = self.local_att
        w1, w2 = conv1.weight.flatten(1), conv2.weight.flatten(1)  # (mid, C), (C, mid)
        xv = x.flatten(2)  # (B, C, H*W), a view
        if self.training:  # batched products (bmm): their input gradients come back contiguous under torch.compile
            t = act(bn1(torch.bmm(w1.expand(b, -1, -1), xv).reshape(b, -1, h, w)))
            out = torch.bmm(w2.expand(b, -1, -1), t.flatten(2)).reshape(b, c, h, w)
            return (bn2(out) + g.unsqueeze(-1)).sigmoid()
        (w1, b1), (w2, b2) = _fold_bn(w1, bn1), _fold_bn(w2, bn2)
        t = act(torch.bmm(w1.expand(b, -1, -1), xv).add_(b1.unsqueeze(-1)))  # (B, mid, H*W); products keep no output
        over = reuse and can_write_over(x, t, w2)  # x's memory, as the (B, C, H*W) view xv
        out = torch.bmm(w2.expand(b, -1, -1), t, out=xv if over else None)  # (B, C, H*W)
        return out.add_((g + b2.unsqueeze(-1)).to(out.dtype)).sigmoid_().reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reweighted(x, self.weights(x))


def _fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A bias-free point-wise conv (out, in) followed by eval-mode BN, as one (weight, bias)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return weight * scale.unsqueeze(1), bn.bias - bn.running_mean * scale
