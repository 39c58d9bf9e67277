"""Receptive-field attention convolutions: RFAConv, RFCBAMConv, RFCAConv.

Zhang, Liu, Yang, Song, Ye, Li, Song, "RFAConv: Innovating Spatial Attention and Standard Convolutional Operation",
arXiv 2304.03198, 2023.

A k x k convolution sees, at each output position, a k x k receptive field. The paper expands every receptive field
into its own k x k patch of "receptive-field spatial features" F_rf (B, C, k^2, h, w): a depth-wise k x k conv with
k^2 outputs per channel, BN and ReLU. An attention A_rf re-weights those features per receptive field and per
channel, and a k x k conv with stride k over the expanded (h k, w k) map gives the output: one k x k window of that
map is exactly one receptive field, so the final conv applies its kernel to attention-weighted receptive fields.

All three take ``Conv``'s arguments in ``Conv``'s order, (c1, c2, k, s, p, g, d, act), with their own options after
``act``, so a YAML row ``[c2, k, s]`` swaps ``Conv`` for them (the output width is scaled like ``Conv``'s) and the
output size is ``Conv``'s: (B, c2, ceil(H / s), ceil(W / s)). As in the official YOLO integration (which replaces the
stride-2 Convs) they end like ``Conv``: BN + ``Conv.default_act`` (SiLU).

Computation without the expanded map: the stride-k conv W (c2, c1/g, k, k) over the (h k, w k) map equals a 1x1
conv with the same weights viewed as (c2, c1/g * k^2) over F_rf laid out as (B, c1 k^2, h, w), channel c*k^2 + j for
receptive-field position j = n1 * k + n2 (the official rearrangement's order). The blocks never build the expanded
map (a copy of 9x the input, forward and backward); RFCBAMConv and RFCAConv build only their small attention inputs
in that layout. The final conv is ``RFConv``, an Ultralytics ``Conv`` whose conv runs in the 1x1 form, so
``model.fuse()`` folds its BN like any Conv's. In inference (BN in eval mode) the BN of F_rf is folded into its conv.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import Conv

from ._common import BlockArgumentError, Conv1x1, ConvToOne, acc_dtype, check_int, max_along, no_autograd

__all__ = ("RFAConv", "RFCBAMConv", "RFCAConv", "RFConv")


def _check_args(block: str, c1, c2, k, s, p, g, d) -> None:
    for name, v in (("c1", c1), ("c2", c2), ("k", k), ("s", s), ("g", g), ("d", d)):
        check_int(block, name, v)
    if k % 2 == 0:
        raise BlockArgumentError(f"{block}: k must be odd (a receptive field centred on each position), got {k}")
    if p is not None and p != k // 2:
        raise BlockArgumentError(f"{block}: p must be None (automatic padding {k // 2}), got {p!r}")
    if d != 1:
        raise BlockArgumentError(f"{block}: d must be 1 (the receptive field is the k x k window itself), got {d!r}")
    if c1 % g or c2 % g:
        raise BlockArgumentError(f"{block}: input width {c1} and output width {c2} must divide by groups g={g}")


class RFConv(Conv):
    """The final conv of the RFA blocks: ``Conv(c1, c2, k, s=k, p=0, g, act)`` applied to the expanded receptive-field
    map (B, c1, h k, w k), computed as the equal 1x1 conv over the receptive-field features (B, c1 k^2, h, w).

    Its state dict and ``model.fuse()`` are ``Conv``'s (``forward_fuse`` keeps the 1x1 form).

    Shapes: (B, c1 * k * k, h, w) -> (B, c2, h, w).
    """

    def __init__(self, c1: int, c2: int, k: int, g: int = 1, act=True):
        super().__init__(c1, c2, k, k, 0, g, 1, act)

    def conv1x1(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-k conv as a 1x1 conv over (B, c1 k^2, h, w). On CPU (contiguous input, g = 1, not traced) a
        batched matrix product: oneDNN's 1x1 conv with a long reduction (576-2304 inputs) takes 1.3-2.4x as long
        as the product, as does the stride-k conv over the expanded map that the official code runs."""
        c = self.conv
        weight = c.weight.reshape(c.out_channels, -1)
        if x.device.type != "cpu" or c.groups != 1 or not x.is_contiguous() or torch.jit.is_tracing():
            return F.conv2d(x, weight.view(*weight.shape, 1, 1), c.bias, 1, 0, 1, c.groups)
        b, _, h, w = x.shape
        y = torch.bmm(weight.expand(b, -1, -1), x.flatten(2))  # (B, c2, h w), in the dtype autocast chose
        if c.bias is not None:
            y = y + c.bias.to(y.dtype).unsqueeze(-1)
        return y.view(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv1x1(x)))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv1x1(x))


class _RFBase(nn.Module):
    """Receptive-field features F_rf and the final conv, shared by the three blocks."""

    def __init__(self, block: str, c1, c2, k, s, p, g, d, act):
        super().__init__()
        _check_args(block, c1, c2, k, s, p, g, d)
        self.k, self.s = k, s
        # F_rf = ReLU(BN(g^{k x k}(X))): depth-wise k x k, k^2 outputs per channel, stride s (official YOLO layout)
        self.generate = Conv(c1, c1 * k * k, k, s, g=c1, act=nn.ReLU())
        self.conv = RFConv(c1, c2, k, g, act)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """F_rf (B, C, k^2, h, w), h = ceil(H / s). With the BN in eval mode it is folded into the conv."""
        gen = self.generate
        bn = getattr(gen, "bn", None)  # gone after Ultralytics' model.fuse()
        if bn is None or bn.training:
            y = gen(x)
        else:
            conv = gen.conv
            scale = bn.weight.float() * torch.rsqrt(bn.running_var.float() + bn.eps)
            weight = (conv.weight.float() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype)
            bias = (bn.bias.float() - bn.running_mean.float() * scale).to(conv.weight.dtype)
            y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
            y = y.relu_() if no_autograd(y) else y.relu()
        b, c = x.shape[0], x.shape[1]
        return y.view(b, c, self.k * self.k, y.shape[2], y.shape[3])

    def project(self, y: torch.Tensor) -> torch.Tensor:
        """The final stride-k conv on attention-weighted features y (B, C, k^2, h, w)."""
        return self.conv(y.flatten(1, 2))


class RFAConv(_RFBase):
    """Receptive-Field Attention convolution (Zhang et al., arXiv 2304.03198, eq. (3) and Fig. 3).

        A_rf = softmax_{k^2}( g^{1x1}( AvgPool_{k x k, s}(X) ) )          per channel and receptive field
        F_rf = ReLU( BN( g^{k x k}(X) ) )                                    (B, C, k^2, h, w)
        Y    = act( BN( Conv_{k x k, stride k}( rearrange(A_rf * F_rf) ) ) )
    g^{1x1} is a grouped 1x1 conv C -> C k^2 (one weight per channel and kernel position, no bias), computed as a
    broadcast product; the average pool counts the zero padding (count_include_pad), as in the official code; the
    softmax runs over the k^2 positions of each receptive field, in fp32 for half inputs. The final conv is
    ``RFConv`` (BN + SiLU like ``Conv``; the official YOLO copy has a biased conv + BN + ReLU there, where a conv
    bias before BN is redundant).

    Args:
        c1, c2, k, s, g, act: As ``Conv`` (k odd; g groups the final conv).
        p, d: As ``Conv``, only their defaults (automatic padding, no dilation).

    Shapes: (B, c1, H, W) -> (B, c2, ceil(H / s), ceil(W / s)).
    """

    def __init__(self, c1, c2, k=3, s=1, p=None, g=1, d=1, act=True):
        super().__init__("RFAConv", c1, c2, k, s, p, g, d, act)
        self.get_weight = nn.Conv2d(c1, c1 * k * k, 1, groups=c1, bias=False)  # g^{1x1}

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """A_rf (B, C, k^2, h, w), summing to 1 over the k^2 positions, in fp32 for half inputs."""
        k = self.k
        pooled = F.avg_pool2d(x, k, self.s, k // 2)  # (B, C, h, w)
        logits = pooled.unsqueeze(2) * self.get_weight.weight.view(1, -1, k * k, 1, 1).to(pooled.dtype)
        return logits.softmax(2, dtype=acc_dtype(logits.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        a = self.attention(x).to(f.dtype)
        return self.project(a.mul_(f) if no_autograd(a) and no_autograd(f) else f * a)


class RFCBAMConv(_RFBase):
    """RFA convolution with CBAM-style attention on the receptive-field features (Zhang et al., arXiv 2304.03198,
    Sec. 3.4 and Fig. 5): channel attention by SE, spatial attention on the expanded receptive-field map.

        F_rf = ReLU( BN( g^{k x k}(X) ) ),  E = rearrange(F_rf)              (B, C, h k, w k)
        M_c  = sigmoid( FC_2( ReLU( FC_1( GAP(X) ) ) ) )                     SE on the input, hidden c1 // r
        M_s  = sigmoid( Conv_{3x3}( [max_C(E) ; mean_C(E)] ) )               (B, 1, h k, w k)
        Y    = act( BN( Conv_{k x k, stride k}( E * M_c * M_s ) ) )
    As in the official code M_s is computed from F_rf itself (not from the channel-weighted features, unlike CBAM's
    sequential order), with a 3x3 conv without bias (max first), and the SE FCs have no bias.

    Departures: the paper replaces CBAM's channel attention by SE, whose hidden width is C / r (r = 16, Hu et al.);
    the official class passes its ``ratio=16`` as the hidden width itself (16 at every C, although its own comment
    says C / r), which is C / r only at C = 256. Here hidden = max(c1 // reduction, 1). The published class cannot be
    built (``nn.ReLu``); its final conv has bias + BN + ReLU, here ``RFConv`` (BN + SiLU, like ``Conv``).

    Args:
        c1, c2, k, s, g, act: As ``Conv`` (k odd; g groups the final conv).
        p, d: As ``Conv``, only their defaults.
        reduction (int): SE reduction ratio r (SE paper: 16).

    Shapes: (B, c1, H, W) -> (B, c2, ceil(H / s), ceil(W / s)).
    """

    def __init__(self, c1, c2, k=3, s=1, p=None, g=1, d=1, act=True, reduction: int = 16):
        super().__init__("RFCBAMConv", c1, c2, k, s, p, g, d, act)
        check_int("RFCBAMConv", "reduction", reduction)
        hidden = max(c1 // reduction, 1)
        self.se = nn.Sequential(Conv1x1(c1, hidden, bias=False), nn.ReLU(), Conv1x1(hidden, c1, bias=False))
        self.get_weight = ConvToOne(2, 3, bias=False)

    def channel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """M_c (B, C, 1, 1, 1)."""
        return self.se(x.mean((2, 3), keepdim=True)).sigmoid().unsqueeze(2)

    def spatial_attention(self, f: torch.Tensor) -> torch.Tensor:
        """M_s (B, 1, k^2, h, w) from F_rf (B, C, k^2, h, w), computed on the expanded (h k, w k) map."""
        b, _, _, h, w = f.shape
        k = self.k
        desc = torch.stack((max_along(f, 1), f.mean(1)), 1)  # (B, 2, k^2, h, w)
        desc = desc.view(b, 2, k, k, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, 2, h * k, w * k)
        m = self.get_weight(desc).sigmoid()  # (B, 1, h k, w k)
        return m.view(b, 1, h, k, w, k).permute(0, 1, 3, 5, 2, 4).reshape(b, 1, k * k, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc = self.channel_attention(x)
        f = self.features(x)
        ms = self.spatial_attention(f)
        if no_autograd(f) and no_autograd(ms) and no_autograd(mc):
            return self.project(f.mul_(ms).mul_(mc))  # f is the block's own buffer
        return self.project(f * ms * mc)


class RFCAConv(_RFBase):
    """RFA convolution with coordinate attention on the receptive-field features (Zhang et al., arXiv 2304.03198,
    Sec. 3.4 and Fig. 6).

        F_rf = ReLU( BN( g^{k x k}(X) ) ),  E = rearrange(F_rf)              (B, C, h k, w k)
        z^h  = mean_{w k}(E)  (B, C, h k),   z^w = mean_{h k}(E)  (B, C, w k)
        f    = h_swish( BN( F_1([z^h ; z^w]) ) )                            F_1: 1x1 C -> mid, mid = max(8, C // r)
        a^h  = sigmoid( F_h(f^h) ),  a^w = sigmoid( F_w(f^w) )               1x1 mid -> C, with bias
        Y    = act( BN( Conv_{k x k, stride k}( E * a^h * a^w ) ) )
    Coordinate attention (Hou et al.) on the expanded map, as in the official code: a row of the expanded map is one
    kernel row of the receptive fields of one output row, so a^h and a^w weight kernel rows and columns per position.

    Departure: the official class ends in a plain biased k x k stride-k conv (no BN, no activation); here it is
    ``RFConv`` (BN + SiLU) like the other two blocks and the ``Conv`` it replaces, so each drops in for a YOLO Conv
    and keeps its output statistics under control.

    Args:
        c1, c2, k, s, g, act: As ``Conv`` (k odd; g groups the final conv).
        p, d: As ``Conv``, only their defaults.
        reduction (int): Coordinate attention reduction r (paper and official code: 32; mid at least 8).

    Shapes: (B, c1, H, W) -> (B, c2, ceil(H / s), ceil(W / s)).
    """

    MIN_MID = 8

    def __init__(self, c1, c2, k=3, s=1, p=None, g=1, d=1, act=True, reduction: int = 32):
        super().__init__("RFCAConv", c1, c2, k, s, p, g, d, act)
        check_int("RFCAConv", "reduction", reduction)
        mid = max(self.MIN_MID, c1 // reduction)
        self.conv1 = Conv1x1(c1, mid)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = nn.Hardswish()
        self.conv_h = Conv1x1(mid, c1)
        self.conv_w = Conv1x1(mid, c1)

    def coordinate_attention(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a^h (B, C, k, 1, h, 1), a^w (B, C, 1, k, 1, w)) from F_rf (B, C, k^2, h, w): the expanded map's row
        weight at row h k + n1 and column weight at column w k + n2."""
        b, c, _, h, w = f.shape
        k = self.k
        f6 = f.view(b, c, k, k, h, w)  # (B, C, n1, n2, h, w)
        zh = f6.mean((3, 5)).transpose(2, 3).reshape(b, c, h * k, 1)  # rows h k + n1
        zw = f6.mean((2, 4)).transpose(2, 3).reshape(b, c, w * k, 1)  # columns w k + n2
        y = self.act1(self.bn1(self.conv1(torch.cat((zh, zw), 2))))
        yh, yw = torch.split(y, (h * k, w * k), 2)
        ah = self.conv_h(yh).sigmoid().view(b, c, h, k).transpose(2, 3).reshape(b, c, k, 1, h, 1)
        aw = self.conv_w(yw).sigmoid().view(b, c, w, k).transpose(2, 3).reshape(b, c, 1, k, 1, w)
        return ah, aw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        ah, aw = self.coordinate_attention(f)
        b, c, kk, h, w = f.shape
        f6 = f.view(b, c, self.k, self.k, h, w)
        if no_autograd(f) and no_autograd(ah) and no_autograd(aw):
            return self.project(f6.mul_(ah).mul_(aw).view(b, c, kk, h, w))
        return self.project((f6 * ah * aw).view(b, c, kk, h, w))
