"""Local attention with 1-D or depth-wise convolutions: ELA, MLCA, CPCA.

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
    BlockArgumentError, IdentityStart, acc_dtype, check_float, check_int, max_along, no_autograd,
)
from .channel import SEMLP
from .grouped import fitting_groups, pooled_mean

__all__ = ("ELA", "MLCA", "CPCA", "mlca_kernel_size", "adaptive_pool_matrix")


def _odd(block: str, name: str, k) -> int:
    check_int(block, name, k)
    if k % 2 == 0:
        raise BlockArgumentError(f"{block}: {name} must be odd to keep the size, got {k}")
    return k


# ----------------------------------------------------------------------------------------------------------------
# ELA
# ----------------------------------------------------------------------------------------------------------------
class ELA(IdentityStart):
    """Efficient Local Attention. Xu, Wan, "ELA: Efficient Local Attention for Deep Convolutional Neural Networks",
    arXiv 2403.01123, 2024.

    Coordinate-attention-style strips, without channel reduction: one 1-D convolution along each strip and a
    GroupNorm, both shared by the two directions:
        z^h = mean_W(x)   (B, C, H),        z^w = mean_H(x)   (B, C, W)
        y^h = sigmoid(GN(F_k(z^h))),        y^w = sigmoid(GN(F_k(z^w)))     F_k: Conv1d C -> C, kernel k, no bias
        y   = x * y^h * y^w
    The paper's four settings (kernel k, channels per conv group, GN groups): ELA-T (5, 1, 32), ELA-B (7, 1, 16),
    ELA-S (5, 8, 16), ELA-L (7, 8, 16); conv groups are C for 1 channel per group (depth-wise) and C / 8 for 8. The
    default is ELA-B, which is also what the YOLO forks' ``ELA(channel, kernel_size=7)`` copies build (depth-wise
    Conv1d, GroupNorm(16, C)). There is no official code; this follows the listing printed in the paper.

    Groups adapt to the width: the GN group count is ``num_groups`` when it divides C, else the largest divisor of C
    below it (ELA-T's 32 gives 16 groups at C = 16); the conv's channels per group likewise.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        kernel_size (int): Odd kernel k of the 1-D convolution (ELA-B: 7).
        group_channels (int): Channels per convolution group, an upper bound (1: depth-wise, T and B; 8: S and L).
        num_groups (int): GroupNorm groups, an upper bound (16; ELA-T: 32).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, kernel_size: int = 7, group_channels: int = 1, num_groups: int = 16):
        super().__init__()
        check_int("ELA", "c1", c1)
        _odd("ELA", "kernel_size", kernel_size)
        check_int("ELA", "group_channels", group_channels)
        check_int("ELA", "num_groups", num_groups)
        per_group = fitting_groups(c1, group_channels)  # the largest divisor of C not above group_channels
        self.conv = nn.Conv1d(c1, c1, kernel_size, padding=kernel_size // 2, groups=c1 // per_group, bias=False)
        self.num_groups = fitting_groups(c1, num_groups)
        self.norm = nn.GroupNorm(self.num_groups, c1)  # its affine parameters; applied to the strips in fp32

    def weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y^h (B, C, H, 1), y^w (B, C, 1, W)) in x's dtype. The strips' statistics run in fp32; torch.group_norm
        (not F.group_norm, which refuses a single value per group: a 1 x 1 map at batch 1)."""
        dt = acc_dtype(x.dtype)
        conv, norm = self.conv, self.norm
        weight, gamma, beta = conv.weight.to(dt), norm.weight.to(dt), norm.bias.to(dt)
        gates = []
        for dim in (3, 2):  # z^h = mean over W, z^w = mean over H
            t = F.conv1d(pooled_mean(x, dim), weight, None, 1, conv.padding, 1, conv.groups).to(dt)
            gates.append(torch.group_norm(t, self.num_groups, gamma, beta, norm.eps).sigmoid().to(x.dtype))
        return gates[0].unsqueeze(-1), gates[1].unsqueeze(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ah, aw = self.weights(x)
        return self.reweighted(x, ah * aw)


# ----------------------------------------------------------------------------------------------------------------
# MLCA
# ----------------------------------------------------------------------------------------------------------------
def mlca_kernel_size(c: int, gamma: float = 2, b: float = 1) -> int:
    """MLCA's (ECA's) adaptive 1-D kernel: t = int(|log2(C) + b| / gamma), the next odd number when t is even."""
    t = int(abs(math.log2(c) + b) / gamma)
    return t if t % 2 else t + 1


def adaptive_pool_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """The (n_out, n_in) matrix of 1-D adaptive average pooling: output cell o averages inputs
    floor(o n_in / n_out) .. ceil((o + 1) n_in / n_out) - 1, as F.adaptive_avg_pool1d (which down- or up-samples).
    Built from aranges, so a traced export keeps n_in / n_out dynamic; in ``like``'s dtype and device."""
    o = torch.arange(n_out, device=like.device).unsqueeze(1)
    i = torch.arange(n_in, device=like.device).unsqueeze(0)
    start = torch.div(o * n_in, n_out, rounding_mode="floor")
    end = torch.div((o + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
    inside = (i >= start) & (i < end)
    return inside.to(like.dtype) / (end - start).to(like.dtype)


class MLCA(IdentityStart):
    """Mixed Local Channel Attention. Wan et al., "Mixed local channel attention for object detection", Engineering
    Applications of Artificial Intelligence, 2023.

    ECA-style 1-D convolutions over channel descriptors of a coarse s x s grid (local) and of the whole map (global):
        L = AdaptiveAvgPool_s(x)                    (B, C, s, s),  s = local_size
        G = mean_{s x s}(L)                          (B, C): the global descriptor, pooled from the local map
        a_l = sigmoid(conv_l(L as one sequence))    L read position by position, its C channels each: (B, 1, s s C)
        a_g = sigmoid(conv_g(G))                     (B, 1, C), broadcast over the grid
        A = AdaptiveAvgPool_{H x W}(lambda a_l + (1 - lambda) a_g)       "un-pooling" back to H x W
        y = x * A
    conv_l, conv_g: Conv1d(1, 1, k, no bias), k = |log2(C) + b| / gamma made odd (``mlca_kernel_size``). As in the
    authors' code, the local sequence runs through all grid cells in turn, so the kernel also reaches from the last
    channels of one cell into the first of the next; un-pooling is adaptive average pooling (a cell's value where H
    is a multiple of s, the mean of the two cells it straddles otherwise). Both adaptive poolings are products with
    pooling matrices (``adaptive_pool_matrix``), which export to ONNX with dynamic H x W.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser (sets k).
        local_size (int): Grid size s (paper: 5).
        gamma (float): Kernel rule gamma (2).
        b (float): Kernel rule b (1).
        local_weight (float): lambda, the local branch's share in [0, 1] (paper: 0.5).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, local_size: int = 5, gamma: float = 2, b: float = 1, local_weight: float = 0.5):
        super().__init__()
        check_int("MLCA", "c1", c1)
        self.local_size = check_int("MLCA", "local_size", local_size)
        check_float("MLCA", "gamma", gamma)
        check_float("MLCA", "b", b, minimum=-math.inf)
        lw = check_float("MLCA", "local_weight", local_weight, inclusive=True)
        if lw > 1:
            raise BlockArgumentError(f"MLCA: local_weight must be in [0, 1], got {local_weight!r}")
        self.local_weight = lw
        k = mlca_kernel_size(c1, gamma, b)
        self.global_conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.local_conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """A, (B, C, H, W) in (0, 1), in x's dtype (a new tensor)."""
        b, c, h, w = x.shape
        s = self.local_size
        ph, pw = adaptive_pool_matrix(h, s, x), adaptive_pool_matrix(w, s, x)  # (s, H), (s, W)
        local = torch.matmul(ph, torch.matmul(x, pw.t()))  # (B, C, s, s)
        glob = local.mean((2, 3))  # (B, C)
        seq = local.permute(0, 2, 3, 1).reshape(b, 1, s * s * c)
        a_l = self.local_conv(seq.to(self.local_conv.weight.dtype)).view(b, s, s, c).permute(0, 3, 1, 2).sigmoid()
        a_g = self.global_conv(glob.unsqueeze(1).to(self.global_conv.weight.dtype)).view(b, c, 1, 1).sigmoid()
        att = torch.lerp(a_g, a_l, self.local_weight).to(x.dtype)  # lambda a_l + (1 - lambda) a_g, (B, C, s, s)
        uh, uw = adaptive_pool_matrix(s, h, x), adaptive_pool_matrix(s, w, x)  # (H, s), (W, s)
        return torch.matmul(uh, torch.matmul(att, uw.t()))  # (B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reweighted(x, self.weights(x))


# ----------------------------------------------------------------------------------------------------------------
# CPCA
# ----------------------------------------------------------------------------------------------------------------
class CPCA(IdentityStart):
    """Channel Prior Convolutional Attention. Huang, Chen, Zou, Lu, Chen, "Channel prior convolutional attention for
    medical image segmentation", Computers in Biology and Medicine, 2024 (arXiv 2306.05196).

    Channel attention first, then multi-scale depth-wise spatial attention on the re-weighted map:
        u  = GELU(P(x))                                               P: 1x1 conv C -> C with bias
        ca = sigmoid(MLP(AvgPool(u))) + sigmoid(MLP(MaxPool(u)))      shared MLP C -> C/r -> C, ReLU, biases
        F  = ca * u                                                   the channel prior
        d  = DW5x5(F)
        S  = d + DW7x1(DW1x7(d)) + DW11x1(DW1x11(d)) + DW21x1(DW1x21(d))     depth-wise, with biases
        y  = P(P(S) * F)
    As in the authors' block (``RepBlock`` of CPCANet, copied by the YOLO forks as ``CPCA(channels, 4)``): the SAME
    1x1 conv P serves as input projection, spatial-attention mixer and output projection, and the channel weight is
    the sum of two sigmoids (in (0, 2)). The MLP's hidden width is max(C // r, 1).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): Channel-attention reduction r (official: 4).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    STRIPS = (7, 11, 21)

    def __init__(self, c1: int, reduction: int = 4):
        super().__init__()
        check_int("CPCA", "c1", c1)
        self.proj = nn.Conv2d(c1, c1, 1)  # P, used three times (as matrix products, see forward)
        self.act = nn.GELU()
        self.channel = SEMLP(c1, reduction, block="CPCA")
        self.dw5x5 = nn.Conv2d(c1, c1, 5, padding=2, groups=c1)
        for k in self.STRIPS:
            setattr(self, f"dw1x{k}", nn.Conv2d(c1, c1, (1, k), padding=(0, k // 2), groups=c1))
            setattr(self, f"dw{k}x1", nn.Conv2d(c1, c1, (k, 1), padding=(k // 2, 0), groups=c1))

    def channel_weights(self, u: torch.Tensor) -> torch.Tensor:
        """ca, (B, C, 1, 1) in (0, 2): the MLP runs once on the stacked average and max descriptors."""
        b = u.shape[0]
        flat = u.flatten(2)
        z = torch.cat((pooled_mean(flat, 2).to(u.dtype), max_along(flat, 2)))[..., None, None]  # (2B, C, 1, 1)
        s = self.channel(z).sigmoid()
        return s[:b] + s[b:]

    def spatial_sum(self, f: torch.Tensor) -> torch.Tensor:
        """S = d + sum over k of DW_kx1(DW_1xk(d)), d = DW5x5(F)."""
        d = self.dw5x5(f)
        inplace = no_autograd(d)
        s = None
        for k in self.STRIPS:
            t = getattr(self, f"dw{k}x1")(getattr(self, f"dw1x{k}")(d))
            s = t if s is None else (s.add_(t) if inplace else s + t)
        return s.add_(d) if inplace else s + d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The map is kept channels-last (B, H, W, C) between the two outer projections: oneDNN's depth-wise
        convolutions run 1.5-6x faster on it (1 x 21: 6x), and each 1x1 conv P is a matrix product that reads and
        writes the layout it needs, so the layout costs no copy (x's NCHW in, NCHW out)."""
        b, c, h, w = x.shape
        weight, bias = self.proj.weight.flatten(1), self.proj.bias
        xt = x.reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C), a view
        u = self.act(F.linear(xt, weight, bias)).view(b, h, w, c).permute(0, 3, 1, 2)  # (B, C, H, W), channels-last
        ca = self.channel_weights(u)
        f = u.mul_(ca) if no_autograd(u) else u * ca  # F, channels-last
        a = F.linear(self.spatial_sum(f).permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)  # P(S)
        a = a.mul_(f) if no_autograd(a) else a * f  # P(S) * F, channels-last
        at = a.permute(0, 2, 3, 1).reshape(b, h * w, c).transpose(1, 2)  # (B, C, HW), a view
        y = torch.baddbmm(bias.to(at.dtype).view(1, c, 1), weight.to(at.dtype).expand(b, c, c), at)
        return self.gated(x, y.view(b, c, h, w))
