"""Large receptive fields at small cost: LSKA (separable large kernel attention), the LSK module of LSKNet (large
selective kernel), and WTConv (wavelet convolution).

LSKA and LSKBlock map (B, C, H, W) -> (B, C, H, W) and can start as the identity (``IdentityStart``: off by default).
WTConv is a depth-wise convolution: it keeps the width, and with a stride it subsamples. The first constructor
argument is always the input width ``c1``, which the YAML parser fills in from ``from``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import BlockArgumentError, Conv1x1, IdentityStart, check_int, max_along, no_autograd

__all__ = ("LSKA", "LSKBlock", "WTConv", "LSKA_KERNELS", "haar_filters")


# ----------------------------------------------------------------------------------------------------------------
# LSKA
# ----------------------------------------------------------------------------------------------------------------
# kernel_size k -> (k0, k1, d): the paper's table. A (2d - 1) x (2d - 1) depth-wise conv and a
# floor(k / d) x floor(k / d) depth-wise conv with dilation d (receptive field k0 + d (k1 - 1) = k), each split into
# 1 x n and n x 1 kernels.
LSKA_KERNELS = {7: (3, 3, 2), 11: (3, 5, 2), 23: (5, 7, 3), 35: (5, 11, 3), 41: (5, 13, 3), 53: (5, 17, 3)}


def _dw(c: int, kh: int, kw: int, dilation: int = 1) -> nn.Conv2d:
    """Depth-wise kh x kw conv with bias, 'same' padding for odd kernels."""
    pad = (dilation * (kh // 2), dilation * (kw // 2))
    return nn.Conv2d(c, c, (kh, kw), padding=pad, dilation=dilation, groups=c)


class LSKA(IdentityStart):
    """Large Separable Kernel Attention. Lau, Po, Rehman, "Large Separable Kernel Attention: Rethinking the Large
    Kernel Attention Design in CNN", Expert Systems with Applications 2024 (arXiv 2309.01439).

    LKA (VAN) with each 2-D depth-wise kernel split into a horizontal and a vertical 1-D kernel:
        A = Conv_{1x1}( DW-D_{k1 x 1, d}( DW-D_{1 x k1, d}( DW_{k0 x 1}( DW_{1 x k0}(x) ) ) ) )
        y = A * x          (element-wise; no sigmoid, no norm, no residual)
    with k0 = 2d - 1, k1 = floor(k / d) and dilation d = 2 for k <= 11, 3 above, so that the receptive field
    k0 + d (k1 - 1) is exactly k: the paper's kernels 7, 11, 23, 35, 41, 53 (``LSKA_KERNELS``; other sizes are
    refused). Every conv has a bias; attribute names follow the official code (conv0h, conv0v, conv_spatial_h,
    conv_spatial_v, conv1), so its weights load by name. PyTorch's default initialisation (VAN's own init is
    applied by its backbone, not by LSKA).

    This is the module alone, as in the paper's equations; VAN's attention unit wraps it as
    x + proj_2(LSKA(GELU(proj_1(x)))) (the community's ``LSKA_Attention`` and ``C2f_LSKA_Attention``).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        kernel_size (int): Large kernel k, one of 7, 11, 23, 35, 41, 53 (VAN-LSKA default 7; the paper's ImageNet
            model uses 23).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, kernel_size: int = 7):
        super().__init__()
        check_int("LSKA", "c1", c1)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size not in LSKA_KERNELS:
            raise BlockArgumentError(
                f"LSKA: kernel_size must be one of the paper's {', '.join(map(str, LSKA_KERNELS))}, got {kernel_size!r}"
            )
        k0, k1, d = LSKA_KERNELS[kernel_size]
        self.kernel_size = kernel_size
        self.conv0h = _dw(c1, 1, k0)
        self.conv0v = _dw(c1, k0, 1)
        self.conv_spatial_h = _dw(c1, 1, k1, d)
        self.conv_spatial_v = _dw(c1, k1, 1, d)
        self.conv1 = Conv1x1(c1, c1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map A, (B, C, H, W), unbounded."""
        return self.conv1(self.conv_spatial_v(self.conv_spatial_h(self.conv0v(self.conv0h(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reweighted(x, self.attention(x))


# ----------------------------------------------------------------------------------------------------------------
# LSK module (LSKNet)
# ----------------------------------------------------------------------------------------------------------------
class LSKBlock(IdentityStart):
    """The LSK module (large selective kernel) of LSKNet. Li, Hou, Wang, Gao, Xu, Yang, Li, "Large Selective Kernel
    Network for Remote Sensing Object Detection", ICCV 2023 (official class ``LSKblock``).

    A large kernel decomposed into a cascade of depth-wise convs, whose two outputs are selected per pixel:
        U1 = DW_{5x5}(x),      U2 = DW_{7x7, dilation 3}(U1)                  (receptive fields 5 and 23)
        V1 = Conv_{1x1}(U1),   V2 = Conv_{1x1}(U2)                            C -> C/2 each
        SA = [mean_c [V1; V2] ; max_c [V1; V2]]                               (B, 2, H, W)
        [s1 ; s2] = sigmoid(Conv_{7x7}(SA))                                   2 -> 2 channels
        y  = x * Conv_{1x1}(s1 * V1 + s2 * V2)                                C/2 -> C
    Every conv has a bias; attribute names follow the official code (conv0, conv_spatial, conv1, conv2,
    conv_squeeze, conv). The mean and max over the concatenated 2 x C/2 channels are taken from the two halves
    without concatenating them. PyTorch's default initialisation (LSKNet's own init is applied by its backbone).

    This is the module alone; LSKNet's attention unit wraps it as x + proj_2(LSK(GELU(proj_1(x)))).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser; even (two branches of C/2).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int):
        super().__init__()
        check_int("LSKBlock", "c1", c1, minimum=2)
        if c1 % 2:
            raise BlockArgumentError(f"LSKBlock: input width must be even (two branches of c1 / 2), got {c1}")
        self.conv0 = nn.Conv2d(c1, c1, 5, padding=2, groups=c1)
        self.conv_spatial = nn.Conv2d(c1, c1, 7, padding=9, groups=c1, dilation=3)
        self.conv1 = Conv1x1(c1, c1 // 2)
        self.conv2 = Conv1x1(c1, c1 // 2)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = Conv1x1(c1 // 2, c1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map, (B, C, H, W), unbounded."""
        u1 = self.conv0(x)
        v2 = self.conv2(self.conv_spatial(u1))
        v1 = self.conv1(u1)
        avg = (v1.mean(1, keepdim=True) + v2.mean(1, keepdim=True)) * 0.5
        mx = torch.maximum(max_along(v1, 1), max_along(v2, 1)).unsqueeze(1)
        s = self.conv_squeeze(torch.cat((avg, mx), 1)).sigmoid()  # (B, 2, H, W)
        s1, s2 = s[:, :1], s[:, 1:]
        if no_autograd(v1) and no_autograd(v2):
            a = v1.mul_(s1).addcmul_(v2, s2)  # both branch maps are ours: combine over v1
        else:
            a = v1 * s1 + v2 * s2
        return self.conv(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reweighted(x, self.attention(x))


# ----------------------------------------------------------------------------------------------------------------
# WTConv
# ----------------------------------------------------------------------------------------------------------------
def haar_filters(c: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 2-D Haar (db1) analysis filters of a depth-wise wavelet transform, (4c, 1, 2, 2), bands LL, LH, HL, HH of
    each channel in turn (channel 4 i + band):
        LL = [[1, 1], [1, 1]] / 2, LH = [[1, 1], [-1, -1]] / 2, HL = [[1, -1], [1, -1]] / 2, HH = [[1, -1], [-1, 1]] / 2
    i.e. outer products of lo = (1, 1) / sqrt 2 and hi = (1, -1) / sqrt 2 (rows: the first factor, along H). They
    are orthonormal, so the same filters synthesise (transposed conv) what they analyse. Computed in float64 as
    outer((1, +-1), (1, +-1)) / 2 and cast, so every entry is exactly +-0.5 in every dtype (the official code's
    float32 filters, pywt's float32 1/sqrt 2 squared, are +-0.49999997)."""
    lo = torch.tensor([1.0, 1.0], dtype=torch.float64)
    hi = torch.tensor([1.0, -1.0], dtype=torch.float64)
    bands = torch.stack([torch.outer(a, b) for a, b in ((lo, lo), (hi, lo), (lo, hi), (hi, hi))]) * 0.5  # (4, 2, 2)
    return bands.unsqueeze(1).repeat(c, 1, 1, 1).to(dtype)


class _Scale(nn.Module):
    """A learnable per-channel scale (no bias): y = weight * x, weight of shape ``shape``."""

    def __init__(self, shape, init: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full(shape, float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x


class WTConv(nn.Module):
    """Wavelet convolution. Finder, Amoyal, Treister, Freifeld, "Wavelet Convolutions for Large Receptive Fields",
    ECCV 2024 (official class ``WTConv2d``).

    A depth-wise k x k conv, plus depth-wise k x k convs on the Haar wavelet sub-bands of L cascaded levels, so the
    receptive field grows as k 2^L with parameters growing only linearly in L:
        X_LL^(0) = x
        [X_LL, X_LH, X_HL, X_HH]^(i) = WT(X_LL^(i-1))                          i = 1..L (each halves H and W)
        Y^(i) = s^(i) * DW_{k x k}^(i)([X_LL, X_LH, X_HL, X_HH]^(i))           4C channels, no bias, s^(i) init 0.1
        Z^(L+1) = 0,   Z^(i) = IWT(Y^(i) + [Z^(i+1), 0, 0, 0])                 from the deepest level up
        y = s_0 * DW_{k x k}(x) + Z^(1)                                        s_0 init 1, this conv with a bias
    WT / IWT: the 2-D Haar transform (``haar_filters``), a stride-2 depth-wise 2x2 conv and its transpose. A level
    whose H or W is odd is zero-padded by one row / column at the bottom / right, and its IWT output cropped back
    (so odd sizes, and maps down to 1 x 1, work at any L). With stride s > 1 the result is subsampled, y[::s, ::s]
    (the official code's 1x1 average pool), computed directly at the strided positions: (B, C, ceil(H / s),
    ceil(W / s)).

    Channel-preserving, as in the paper: WTConv is a drop-in for a depth-wise conv (WTConvNeXt replaces ConvNeXt's
    7x7 DW conv by WTConv k=5; the official class asserts in_channels == out_channels), with no norm or activation
    and no mixing of channels. It is therefore not a Conv-like ``(c1, c2, k, s)`` layer: a 1x1 projection to another
    width would be a layer the paper does not have. In a YAML it replaces a depth-wise conv, or a Conv that keeps
    the width (``[-1, 1, WTConv, []]``, ``[-1, 1, WTConv, [5, 2]]`` for a stride-2 one; a BN / activation, if
    wanted, is a separate row), and a width-changing Conv stays a Conv (as in the community's ``C3k2_WTConv``, whose
    bottlenecks use WTConv only where their second conv keeps the width).

    Departures from the official code: only the Haar (= db1) wavelet, the one the paper uses (others would need
    pywt); the fixed filters are buffers ``wt_filter`` / ``iwt_filter`` (saved in the state dict, exactly +-0.5)
    instead of frozen parameters, so no optimizer sees them and ``parameters()`` counts only trainable weights; in
    inference the transforms run as a 4 x 4 mix of the taps of each 2 x 2 block (the same filters; faster on CPU
    than the strided and transposed convs, which training and export use), the level-1 synthesis is added in place
    into the base conv's output, and an even stride is applied before the last synthesis instead of after it; the
    scales s are applied to the conv weights (s * DW(x) = DW_{s * w}(x)). State-dict keys are the official ones.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        kernel_size (int): Odd kernel k of every depth-wise conv (paper: 5).
        stride (int): Subsampling of the output (1: none).
        wt_levels (int): Wavelet levels L (WTConvNeXt: 5, 4, 3, 2 from its first stage to its last).
        bias (bool): Bias of the base conv (official default True).

    Shapes: x (B, C, H, W) -> (B, C, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, c1: int, kernel_size: int = 5, stride: int = 1, wt_levels: int = 1, bias: bool = True):
        super().__init__()
        check_int("WTConv", "c1", c1)
        check_int("WTConv", "kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise BlockArgumentError(f"WTConv: kernel_size must be odd ('same' padding), got {kernel_size}")
        self.stride = check_int("WTConv", "stride", stride)
        self.wt_levels = check_int("WTConv", "wt_levels", wt_levels)
        if not isinstance(bias, bool):
            raise BlockArgumentError(f"WTConv: bias must be true or false, got {bias!r}")
        self.c1, self.k = c1, kernel_size
        filters = haar_filters(c1)
        self.register_buffer("wt_filter", filters)
        self.register_buffer("iwt_filter", filters.clone())
        self.base_conv = nn.Conv2d(c1, c1, kernel_size, padding=kernel_size // 2, groups=c1, bias=bias)
        self.base_scale = _Scale((1, c1, 1, 1), 1.0)
        self.wavelet_convs = nn.ModuleList(
            nn.Conv2d(4 * c1, 4 * c1, kernel_size, padding=kernel_size // 2, groups=4 * c1, bias=False)
            for _ in range(wt_levels)
        )
        self.wavelet_scale = nn.ModuleList(_Scale((1, 4 * c1, 1, 1), 0.1) for _ in range(wt_levels))

    # -- the wavelet transform ----------------------------------------------------------------------------------
    # With autograd (training) and under export tracing the transforms are the paper's convs with the fixed filters
    # (their backward is the fastest on CPU); in inference a 4 x 4 mix of the taps of each 2 x 2 block, laid out
    # by a reshape, is (1.3-1.6x faster there). The same filters, the same result.
    @staticmethod
    def _conv_path(t: torch.Tensor) -> bool:
        return torch.jit.is_tracing() or not no_autograd(t)

    def _wt(self, x: torch.Tensor) -> torch.Tensor:
        """Haar analysis of an even-sized (B, C, H, W) map: (B, 4C, H/2, W/2), channel 4 c + band."""
        if self._conv_path(x):  # a stride-2 depth-wise 2x2 conv
            return F.conv2d(x, self.wt_filter.to(x.dtype), stride=2, groups=self.c1)
        b, c, h, w = x.shape
        taps = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c, 4, -1)  # tap 2 a + b
        mix = self.wt_filter[:4].reshape(4, 4).to(x.dtype)  # (band, tap)
        return torch.matmul(mix, taps).view(b, 4 * c, h // 2, w // 2)

    def _iwt_blocks(self, y: torch.Tensor) -> torch.Tensor:
        """Haar synthesis as a (B, C, h, 2, w, 2) view (the 2 x 2 output block of every band position)."""
        b, c4, h, w = y.shape
        mix = self.iwt_filter[:4].reshape(4, 4).to(y.dtype)  # (band, tap)
        taps = torch.matmul(mix.t(), y.view(b, c4 // 4, 4, h * w)).view(b, c4 // 4, 2, 2, h, w)
        return taps.permute(0, 1, 4, 2, 5, 3)

    def _iwt(self, y: torch.Tensor) -> torch.Tensor:
        """Haar synthesis (the transposed conv): (B, 4C, h, w) -> (B, C, 2h, 2w)."""
        if self._conv_path(y):
            return F.conv_transpose2d(y, self.iwt_filter.to(y.dtype), stride=2, groups=self.c1)
        b, c4, h, w = y.shape
        return self._iwt_blocks(y).reshape(b, c4 // 4, 2 * h, 2 * w)

    def _iwt_strided(self, y: torch.Tensor, s: int) -> torch.Tensor:
        """Haar synthesis at the positions (s i, s j) only, for an even s: the top-left tap of every block,
        (B, 4C, h, w) -> (B, C, ceil(h / (s/2)), ceil(w / (s/2)))."""
        b, c4, h, w = y.shape
        top_left = self.iwt_filter[:4, 0, 0, 0].to(y.dtype)  # (band,)
        z = (y.view(b, c4 // 4, 4, h, w) * top_left.view(1, 1, 4, 1, 1)).sum(2)
        return z[..., :: s // 2, :: s // 2]

    @staticmethod
    def _pad_even(x: torch.Tensor) -> torch.Tensor:
        """Zero-pad the bottom row / right column of an odd-sized map (the official code's padding)."""
        h, w = x.shape[-2:]
        if torch.jit.is_tracing() or h % 2 or w % 2:  # traced: always a Pad node (of 0 or 1), whatever the size
            x = F.pad(x, (0, w % 2, 0, h % 2))
        return x

    def wavelet(self, x: torch.Tensor) -> torch.Tensor:
        """Z^(1) at the output positions: (B, C, ceil(H / s), ceil(W / s))."""
        ys, sizes = [], []
        ll = x
        for conv, scale in zip(self.wavelet_convs, self.wavelet_scale):
            sizes.append(ll.shape[-2:])
            bands = self._wt(self._pad_even(ll))  # (B, 4C, h, w)
            ll = bands.view(bands.shape[0], -1, 4, *bands.shape[-2:])[:, :, 0]  # the unfiltered LL goes deeper
            weight = conv.weight * scale.weight.view(-1, 1, 1, 1)
            ys.append(F.conv2d(bands, weight.to(bands.dtype), None, 1, conv.padding, 1, conv.groups))
        z = None
        for i in range(self.wt_levels - 1, -1, -1):
            y = ys[i]
            if z is not None:  # add the deeper level's synthesis to this level's LL band
                b, c4, h, w = y.shape
                y4 = y.view(b, c4 // 4, 4, h, w)
                if no_autograd(y) and not torch.jit.is_tracing():
                    y4[:, :, 0].add_(z)
                else:
                    y = torch.cat(((y4[:, :, :1] + z.unsqueeze(2)), y4[:, :, 1:]), 2).view(b, c4, h, w)
            h0, w0 = sizes[i]
            if i == 0 and self.stride > 1 and self.stride % 2 == 0 and not torch.jit.is_tracing():
                return self._iwt_strided(y, self.stride)
            if i == 0 and self.stride == 1 and h0 % 2 == 0 and w0 % 2 == 0 and not self._conv_path(y):
                return self._iwt_blocks(y)  # (B, C, H/2, 2, W/2, 2): forward adds it as a view, no copy
            z = self._iwt(y)[..., :h0, :w0]
        return z[..., :: self.stride, :: self.stride] if self.stride > 1 else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.base_conv
        s = self.base_scale.weight.view(-1)
        bias = None if conv.bias is None else conv.bias * s
        y = F.conv2d(x, conv.weight * s.view(-1, 1, 1, 1), bias, self.stride, conv.padding, 1, conv.groups)
        z = self.wavelet(x)
        if z.dim() == 6:  # inference, even H and W: the synthesis blocks, added in place over y's 2 x 2 blocks
            if y.dtype == z.dtype and y.is_contiguous():
                return y.view(z.shape).add_(z).view(y.shape)
            z = z.reshape(y.shape)
        if no_autograd(y) and no_autograd(z) and y.dtype == z.dtype:
            return y.add_(z)
        return y + z
