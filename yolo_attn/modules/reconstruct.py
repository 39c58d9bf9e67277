"""Feature reconstruction convolution: ScConv (SCConv of CVPR 2023, spatial and channel reconstruction).

Not to be confused with ``SCConv`` (dynconv.py), the self-calibrated convolution of CVPR 2020: the YAML name of this
block is ``ScConv``. It maps (B, C, H, W) -> (B, C, H, W); the first constructor argument is the input width ``c1``,
which the YAML parser fills in from ``from``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import BlockArgumentError, Conv1x1, acc_dtype, check_float, check_int, no_autograd

__all__ = ("ScConv", "SRU", "CRU", "gn_groups")


def gn_groups(c: int, group_num: int) -> int:
    """GroupNorm groups for c channels: the largest divisor of c that is at most ``group_num`` (``group_num`` itself
    whenever it divides c, as the default 4 divides every Ultralytics width, a multiple of 8)."""
    return max(g for g in range(1, min(group_num, c) + 1) if c % g == 0)


class SRU(nn.Module):
    """Spatial reconstruction unit of ScConv (separate and reconstruct), see ``ScConv``.

    Shapes: x (B, C, H, W) -> (B, C, H, W), C even.
    """

    def __init__(self, c: int, group_num: int = 4, gate_threshold: float = 0.5):
        super().__init__()
        self.gn = nn.GroupNorm(gn_groups(c, group_num), c)
        self.gate_threshold = gate_threshold

    def reweights(self, x: torch.Tensor) -> torch.Tensor:
        """r = sigmoid(GN(x) * gamma / sum(gamma)), (B, C, H, W) in (0, 1), in at least fp32 (statistics and gate)."""
        dt = acc_dtype(x.dtype)
        gn = self.gn
        gamma = gn.weight.to(dt)
        w = gamma / gamma.sum()
        xn = F.group_norm(x.to(dt), gn.num_groups, None, None, gn.eps)  # (x - mu) / sigma per group
        return torch.sigmoid(xn * (gamma * w).view(1, -1, 1, 1) + (gn.bias.to(dt) * w).view(1, -1, 1, 1))

    def gated(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Separate x with the gate r and cross-reconstruct:
        W1 = where(r > t, 1, r), W2 = where(r > t, 0, r);  X1 = W1 x, X2 = W2 x;  [X11 + X22 ; X12 + X21]."""
        keep = r > self.gate_threshold
        t = (x * r).to(x.dtype)  # r x, where the gate keeps r
        x2 = t.masked_fill(keep, 0)  # W2 x
        x1 = torch.where(keep, x, t)  # W1 x
        c = x.shape[1] // 2
        if no_autograd(x1) and no_autograd(x2):
            x1[:, :c].add_(x2[:, c:])
            x1[:, c:].add_(x2[:, :c])
            return x1
        return torch.cat((x1[:, :c] + x2[:, c:], x1[:, c:] + x2[:, :c]), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gated(x, self.reweights(x))


class CRU(nn.Module):
    """Channel reconstruction unit of ScConv (split, transform and fuse), see ``ScConv``.

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c: int, alpha: float = 0.5, squeeze_ratio: int = 2, group_size: int = 2,
                 group_kernel_size: int = 3):  # fmt: skip
        super().__init__()
        self.up_channel = up = int(alpha * c)
        self.low_channel = low = c - up
        self.squeeze1 = Conv1x1(up, up // squeeze_ratio, bias=False)
        self.squeeze2 = Conv1x1(low, low // squeeze_ratio, bias=False)
        k = group_kernel_size
        self.GWC = nn.Conv2d(up // squeeze_ratio, c, k, padding=k // 2, groups=group_size)
        self.PWC1 = Conv1x1(up // squeeze_ratio, c, bias=False)
        self.PWC2 = Conv1x1(low // squeeze_ratio, c - low // squeeze_ratio, bias=False)

    def _squeeze(self, conv: Conv1x1, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """conv(x[:, start:stop]) without copying the channel slice (a batched product over the (B, C, H*W) view)."""
        if x.device.type != "cpu" or not x.is_contiguous() or torch.jit.is_tracing():
            return conv(x[:, start:stop])
        b, c, h, w = x.shape
        weight = conv.weight.flatten(1)  # (c_out, stop - start)
        y = torch.bmm(weight.expand(b, -1, -1), x.view(b, c, h * w)[:, start:stop])  # autocast picks the dtype
        return y.view(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self._squeeze(self.squeeze1, x, 0, self.up_channel)
        low = self._squeeze(self.squeeze2, x, self.up_channel, x.shape[1])
        y1 = self.GWC(up)
        y1 = y1.add_(self.PWC1(up)) if no_autograd(y1) else y1 + self.PWC1(up)  # Y1 = GWC(X_up) + PWC1(X_up)
        p = self.PWC2(low)  # Y2 = [PWC2(X_low) ; X_low]
        dt = acc_dtype(y1.dtype)
        pooled = torch.cat((y1.mean((2, 3), dtype=dt), p.mean((2, 3), dtype=dt), low.mean((2, 3), dtype=dt)), 1)
        beta = torch.softmax(pooled, 1)  # (B, 2C): over all 2C channels of [Y1 ; Y2]
        c = y1.shape[1]
        b1, b2 = beta[:, :c, None, None].to(y1.dtype), beta[:, c:, None, None].to(y1.dtype)
        n = p.shape[1]
        if no_autograd(y1) and no_autograd(p) and no_autograd(low) and p.dtype == y1.dtype == low.dtype:
            y1.mul_(b1)
            y1[:, :n].addcmul_(p, b2[:, :n])
            y1[:, n:].addcmul_(low, b2[:, n:])
            return y1
        return y1 * b1 + torch.cat((p, low.to(p.dtype)), 1) * b2


class ScConv(nn.Module):
    """Spatial and Channel reconstruction Convolution. Li, Zhang, Huang, "SCConv: Spatial and Channel Reconstruction
    Convolution for Feature Redundancy", CVPR 2023. YAML name ``ScConv``: the paper calls it SCConv, a name that here
    (and in the YAML) means the self-calibrated convolution of Liu et al., CVPR 2020, a different block.

    y = CRU(SRU(x)), a drop-in for a 3x3 conv that keeps the width.

    SRU (spatial reconstruction unit), with GN's own scale gamma as the informativeness of each channel:
        r  = sigmoid( GN(x) * gamma / sum_c gamma_c )                         (B, C, H, W)
        W1 = where(r > t, 1, r),  W2 = where(r > t, 0, r)                     t = 0.5
        X1 = W1 * x,  X2 = W2 * x                     split in channel halves X_1 = [X11 ; X12], X_2 = [X21 ; X22]
        X_s = [X11 + X22 ; X12 + X21]                                          cross reconstruction
    CRU (channel reconstruction unit), split at up = floor(alpha C), low = C - up channels:
        X_up = Conv_{1x1}(X_s[:up]) (up / r ch.),  X_low = Conv_{1x1}(X_s[up:]) (low / r ch.)  r: squeeze ratio, no bias
        Y1 = GWC_{k x k, groups g}(X_up) + PWC1(X_up)                          C channels; GWC with bias
        Y2 = [PWC2(X_low) ; X_low]                                             C - low / r + low / r channels
        beta = softmax(GAP([Y1 ; Y2]))  over the 2C channels,   y = beta_1 * Y1 + beta_2 * Y2

    The paper describes the gate as setting weights above the threshold to 1 (W1) and to 0 (W2); as in the
    most-used PyTorch code (cheng-haha/ScConv; no official code exists), the other weights keep their value r (soft
    gates, so r gets gradients), and the CRU's softmax runs over all 2C pooled channels. Both are kept so that
    models trained with that code load and compute the same. GN statistics and the gate are computed in at least
    fp32 (under AMP too), so half precision cannot flip a gate that fp32 would not. Attribute names follow that
    code (SRU.gn, CRU.squeeze1 / squeeze2 / GWC / PWC1 / PWC2); its ``GroupBatchnorm2d`` option is not provided.

    GroupNorm groups: ``group_num`` (default 4, the code's ScConv default; its SRU alone defaults to 16, which some
    YOLO copies use) is an upper bound: GN takes the largest divisor of C not above it (``gn_groups``), so any
    width builds (4 divides every Ultralytics width: they are multiples of 8).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser; even.
        group_num (int): GroupNorm groups (at most; see above).
        gate_threshold (float): Gate threshold t in (0, 1) (paper: 0.5).
        alpha (float): Share of channels in the upper (rich) branch, in (0, 1) (paper: 1/2).
        squeeze_ratio (int): Squeeze ratio r of the 1x1 squeeze convs (paper: 2).
        group_size (int): Groups g of the GWC (paper: 2).
        group_kernel_size (int): Odd kernel k of the GWC (paper: 3).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, group_num: int = 4, gate_threshold: float = 0.5, alpha: float = 0.5,
                 squeeze_ratio: int = 2, group_size: int = 2, group_kernel_size: int = 3):  # fmt: skip
        super().__init__()
        check_int("ScConv", "c1", c1, minimum=2)
        if c1 % 2:
            raise BlockArgumentError(f"ScConv: input width must be even (the SRU swaps channel halves), got {c1}")
        check_int("ScConv", "group_num", group_num)
        check_float("ScConv", "gate_threshold", gate_threshold)
        if gate_threshold >= 1:
            raise BlockArgumentError(f"ScConv: gate_threshold must be in (0, 1), got {gate_threshold!r}")
        check_float("ScConv", "alpha", alpha)
        if alpha >= 1:
            raise BlockArgumentError(f"ScConv: alpha must be in (0, 1), got {alpha!r}")
        check_int("ScConv", "squeeze_ratio", squeeze_ratio)
        check_int("ScConv", "group_size", group_size)
        check_int("ScConv", "group_kernel_size", group_kernel_size)
        if group_kernel_size % 2 == 0:
            raise BlockArgumentError(f"ScConv: group_kernel_size must be odd to keep H x W, got {group_kernel_size}")
        up = int(alpha * c1)
        up_sq, low_sq = up // squeeze_ratio, (c1 - up) // squeeze_ratio
        if up_sq < 1 or low_sq < 1:
            raise BlockArgumentError(
                f"ScConv: alpha={alpha} and squeeze_ratio={squeeze_ratio} leave no channel in a branch of a "
                f"{c1}-channel input (upper {up} -> {up_sq}, lower {c1 - up} -> {low_sq})"
            )
        if up_sq % group_size or c1 % group_size:
            raise BlockArgumentError(
                f"ScConv: the GWC's input ({up_sq} channels) and output ({c1}) widths must divide by "
                f"group_size={group_size}"
            )
        self.SRU = SRU(c1, group_num, float(gate_threshold))
        self.CRU = CRU(c1, float(alpha), squeeze_ratio, group_size, group_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.CRU(self.SRU(x))
