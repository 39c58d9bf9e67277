"""Slim-neck: GSConv, the GS bottleneck and VoV-GSCSP. Li, Li, Wei, Liu, Chen, Wang, Xu, "Slim-neck by GSConv: a
lightweight-design for real-time detector architectures", Journal of Real-Time Image Processing 2024.

``GSConv`` takes ``Conv``'s arguments (c1, c2, k, s, g, act), so a YAML row swaps ``Conv`` for it without changing its
args; ``VoVGSCSP`` takes ``C2f``'s (c1, c2, n, shortcut, g, e) and stacks n GS bottlenecks. Widths are scaled like
``Conv`` / ``C2f``, repeats by depth. Their ``Conv`` parts are Ultralytics' (conv, BN, the host's activation).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from ultralytics.nn.modules import Conv

from ._common import BlockArgumentError, check_float, check_int

__all__ = ("GSConv", "GSBottleneck", "VoVGSCSP")


class GSConv(nn.Module):
    """GSConv. Li et al., "Slim-neck by GSConv", JRTIP 2024.

    Half the output channels from a standard convolution (SC), the other half from a cheap depth-wise convolution (DSC)
    of that result, then a channel shuffle that interleaves the two halves so the SC information permeates the DSC
    part:
        x1 = Conv_{k, s, g}(x)                   c1 -> c2 / 2   (conv, BN, act: Ultralytics ``Conv``)
        x2 = Conv_{5x5, depth-wise}(x1)          c2 / 2 -> c2 / 2 (conv, BN, act)
        y  = shuffle(cat[x1, x2])                channel 2i = x1_i, 2i + 1 = x2_i
    Activation: the GSConv design itself does not fix one (its Conv is "conv, BN, activation"); the paper picks Mish
    for its detectors as a network-wide "free trick" (with the EIoU loss), and the authors' copies disagree (SiLU in
    their Ultralytics v8-v11 integration, Mish in models_inPaper.py and the YOLOv5 one). This follows the
    Ultralytics-era copy: ``act=True`` is the host's ``Conv`` activation, SiLU, or the paper's Mish when the YAML
    sets ``activation: nn.Mish()`` (the whole network then uses it, as in the paper). The shuffle is the interleaving of the paper's and v8 copies (a ShuffleNet shuffle with 2 groups);
    the YOLOv5 copy's even / odd split is another fixed permutation of the same channels, which the next layer's
    weights absorb. Odd output widths are refused (the official copies silently give c2 - 1 channels). The
    interleave is one stacked copy instead of cat + permute.

    Args:
        c1 (int): Input channels (from the parser).
        c2 (int): Output channels, even (scaled like ``Conv``).
        k (int): Kernel of the standard conv (default 1).
        s (int): Stride of the standard conv (default 1); odd sizes give ceil(H / s) for odd k, as ``Conv``.
        g (int): Groups of the standard conv (default 1).
        act (bool | nn.Module): Activation of both convs, as in ``Conv``.

    Shapes: (B, c1, H, W) -> (B, c2, H_out, W_out), H_out as for ``Conv(c1, c2, k, s)``.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, g: int = 1, act: bool | nn.Module = True):
        super().__init__()
        for name, v in (("c1", c1), ("c2", c2), ("k", k), ("s", s), ("g", g)):
            check_int("GSConv", name, v)
        if c2 % 2:
            raise BlockArgumentError(f"GSConv: output width c2 must be even (two halves), got {c2}")
        c_ = c2 // 2
        if c1 % g or c_ % g:
            raise BlockArgumentError(f"GSConv: input width {c1} and half the output width {c_} must divide by g={g}")
        self.cv1 = Conv(c1, c_, k, s, None, g, 1, act)
        self.cv2 = Conv(c_, c_, 5, 1, None, c_, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv1(x)
        b, c, h, w = x1.shape
        # interleave: x1_0, x2_0, x1_1, x2_1, ... (reshape: x1 may come channels-last from a conv on a tiny map)
        return torch.stack((x1, self.cv2(x1)), 2).reshape(b, 2 * c, h, w)


class GSBottleneck(nn.Module):
    """GS bottleneck of Slim-neck: two GSConvs and a 1x1 ``Conv`` shortcut branch, added:
        y = GSConv_{3x3, no act}(GSConv_{1x1}(x)) + Conv_{1x1, no act}(x)
    The first GSConv narrows to c_ = int(c2 * e) channels (e = 0.5 in the authors' models_inPaper.py, 1.0 in their
    YOLOv5 copy's VoV-GSCSP); the second has no activation, as in both copies that run a GS bottleneck (the v8 copy
    defines one with an activation but its VoV-GSCSP never calls it).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels, even.
        e (float): Hidden width ratio; c_ = int(c2 * e) must be even.

    Shapes: (B, c1, H, W) -> (B, c2, H, W).
    """

    def __init__(self, c1: int, c2: int, e: float = 0.5):
        super().__init__()
        check_float("GSBottleneck", "e", e)
        c_ = int(c2 * e)
        if c_ < 2 or c_ % 2:
            raise BlockArgumentError(f"GSBottleneck: hidden width int(c2 * e) = {c_} must be even and at least 2")
        self.conv_lighting = nn.Sequential(GSConv(c1, c_, 1, 1), GSConv(c_, c2, 3, 1, act=False))
        self.shortcut = Conv(c1, c2, 1, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_lighting(x) + self.shortcut(x)


class VoVGSCSP(nn.Module):
    """VoV-GSCSP. Li et al., "Slim-neck by GSConv", JRTIP 2024 (VoV-GSCSP1, the one of the paper's three designs
    it recommends): a cross stage partial module whose one branch goes through GS bottlenecks and is aggregated once (one-shot, VoVNet style) with
    the other:
        y = cv3(cat[cv2(x), m(cv1(x))])          cv1, cv2: 1x1 Conv c1 -> c_; m: n GS bottlenecks c_ -> c_;
                                                  cv3: 1x1 Conv 2 c_ -> c2; c_ = int(c2 * e)
    This is the structure of the authors' models_inPaper.py and YOLOv5 copy. Their Ultralytics v8-v11 copy is a
    different module (a C2f in place of the bottlenecks and a 3x3 GSConv as the second branch) that ignores n;
    models_inPaper.py ignores n as well. Here n is honoured, as in the YOLOv5 copy: a YAML row's repeats (scaled by
    depth) stack n GS bottlenecks, as ``C2f`` stacks its bottlenecks. The bottlenecks follow models_inPaper.py
    (hidden width c_ / 2). ``shortcut`` and ``g`` are accepted for C2f's signature and not used, as in every
    official copy: the GS bottleneck's 1 x 1 shortcut branch is part of the paper's module (the authors' YOLOv5
    configs pass False, copied from C3 rows, and train with it). The copies' unused ``res`` conv is left out.

    Args:
        c1 (int): Input channels (from the parser).
        c2 (int): Output channels (scaled like ``C2f``).
        n (int): Number of GS bottlenecks (the row's repeats, scaled by depth).
        shortcut (bool): Accepted, not used (see above).
        g (int): Accepted, not used.
        e (float): Hidden width ratio; c_ = int(c2 * e) must be a multiple of 4.

    Shapes: (B, c1, H, W) -> (B, c2, H, W).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        check_int("VoVGSCSP", "c1", c1)
        check_int("VoVGSCSP", "c2", c2)
        check_int("VoVGSCSP", "n", n)
        check_int("VoVGSCSP", "g", g)
        check_float("VoVGSCSP", "e", e)
        c_ = int(c2 * e)
        if c_ < 4 or c_ % 4:
            raise BlockArgumentError(f"VoVGSCSP: hidden width int(c2 * e) = {c_} must be a multiple of 4 (GSConv halves)")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.m = nn.Sequential(*(GSBottleneck(c_, c_) for _ in range(n)))
        self.cv3 = Conv(2 * c_, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.cv2(x), self.m(self.cv1(x))), 1))
