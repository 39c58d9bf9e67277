"""SE-style channel attention: SE, ECA, GAM, GC block, scSE, BAM.

Every block maps (B, C, H, W) -> (B, C, H, W); the first constructor argument is the input width ``c1``, which the
YAML parser fills in from ``from``. SE, scSE's cSE, BAM's channel branch, GC's transform and GAM's channel MLP share
one bottleneck, ``SEMLP`` (1x1 conv C -> C/r, optional LayerNorm, activation, 1x1 conv C/r -> C). Each block can
start as the identity for fine-tuning (``IdentityStart``: off by default).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from ._common import (
    BlockArgumentError, Conv1x1, IdentityStart, PooledBatchNorm2d, acc_dtype, can_write_over, check_float, check_int,
    no_autograd,
)

__all__ = ("SEMLP", "SE", "ECA", "GAM", "GCBlock", "scSE", "BAM", "eca_kernel_size")


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


class SEMLP(nn.Sequential):
    """SE-style bottleneck MLP as 1x1 convolutions: C -> hidden -> C, hidden = max(C // reduction, 1).

        z -> fc2(act(norm(fc1(z))))        fc1: 1x1 conv C -> hidden, fc2: 1x1 conv hidden -> C, both with bias

    On a pooled (B, C, 1, 1) map it is the two fully connected layers of SE; on a full (B, C, H, W) map it is the
    same MLP applied at every pixel (GAM). ``norm="layer"`` puts LayerNorm over [hidden, 1, 1] after fc1 (GCNet),
    which needs a pooled input. No sigmoid: the blocks apply their own gate.

    Args:
        c (int): Input and output channels.
        reduction (int): Reduction ratio r.
        act (callable): Builds the hidden activation (default ReLU).
        norm (str | None): None or "layer".
        block (str): Name of the owning block, for argument errors.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(
        self,
        c: int,
        reduction: int = 16,
        act: Callable[[], nn.Module] = _relu,
        norm: str | None = None,
        block: str = "SEMLP",
    ):
        check_int(block, "reduction", reduction)
        if norm not in (None, "layer"):
            raise BlockArgumentError(f"{block}: norm must be None or 'layer', got {norm!r}")
        hidden = max(c // reduction, 1)
        super().__init__()
        self.fc1 = Conv1x1(c, hidden)
        self.norm = nn.LayerNorm([hidden, 1, 1]) if norm == "layer" else nn.Identity()
        self.act = act()
        self.fc2 = Conv1x1(hidden, c)


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool, (B, C, H, W) -> (B, C, 1, 1) (reductions accumulate in fp32 for half inputs)."""
    return x.mean((2, 3), keepdim=True)


class SE(IdentityStart):
    """Squeeze-and-Excitation block. Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018.

        z = GAP(x)                                  (B, C, 1, 1)
        s = sigmoid(W2 relu(W1 z))                  W1: C -> C/r, W2: C/r -> C (``SEMLP``)
        y = s * x
    The FC layers carry biases, as in the authors' released models (the paper's equations omit them).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): Reduction ratio r (paper: 16).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, reduction: int = 16):
        super().__init__()
        self.fc = SEMLP(c1, reduction, block="SE")

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """s, (B, C, 1, 1) in (0, 1)."""
        return self.fc(_pool(x)).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gated(x, x * self.weights(x))


def eca_kernel_size(c: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel k = |log2(C) / gamma + b / gamma|_odd: truncate to an integer, and take the next odd
    number when it is even (the authors' rule); at least 1."""
    t = int(abs(math.log2(c) / gamma + b / gamma))
    return t if t % 2 else t + 1


class ECA(IdentityStart):
    """Efficient Channel Attention. Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep
    Convolutional Neural Networks", CVPR 2020.

    No dimensionality reduction: a 1D convolution of size k across the channel axis of the pooled descriptor.
        z = GAP(x)                                  (B, C, 1, 1), viewed as (B, 1, C)
        w = sigmoid(conv1d_k(z))                    one shared kernel, no bias, zero padding k // 2
        y = w * x
    k is adaptive, k = |log2(C) / gamma + b / gamma|_odd (``eca_kernel_size``), unless given.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        kernel_size (int | None): Explicit odd k; None (default) uses the adaptive rule.
        gamma (float): Rule parameter gamma (paper: 2).
        b (float): Rule parameter b (paper: 1).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, kernel_size: int | None = None, gamma: float = 2, b: float = 1):
        super().__init__()
        check_float("ECA", "gamma", gamma)
        check_float("ECA", "b", b, minimum=-math.inf)
        if kernel_size is None:
            kernel_size = eca_kernel_size(check_int("ECA", "c1", c1), gamma, b)
        check_int("ECA", "kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise BlockArgumentError(f"ECA: kernel_size must be odd to keep the channel count, got {kernel_size}")
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """w, (B, C, 1, 1) in (0, 1)."""
        z = x.mean((2, 3)).unsqueeze(1)  # (B, 1, C)
        return self.conv(z).transpose(1, 2).unsqueeze(-1).sigmoid()  # (B, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gated(x, x * self.weights(x))


class GAM(IdentityStart):
    """Global Attention Mechanism. Liu, Shao, Hoffmann, "Global Attention Mechanism: Retain Information to Enhance
    Channel-Spatial Interactions", arXiv 2112.05561, 2021.

    Channel then spatial attention, neither with pooling:
        Mc = sigmoid(MLP(x))        MLP over the channels of every pixel: C -> C/r -> C, ReLU (``SEMLP``)
        x' = Mc * x
        Ms = sigmoid(BN(conv7x7(relu(BN(conv7x7(x'))))))       C -> C/r -> C
        y  = Ms * x'
    The paper permutes (B, C, H, W) to (B, H, W, C) to run the MLP over C and permutes back; a 1x1 convolution is
    the same map without copying the feature map twice. Plain 7x7 convolutions, as in the paper's description (its
    ResNet-50 variant's group convolution with channel shuffle is not used). The 7x7 convolutions carry no bias (BN
    follows), and their BatchNorm, like any ``Conv``'s, needs more than one value per channel in training (not a 1x1
    map at batch 1). Heavy: about 2 * 49 * C^2 / r parameters.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): Reduction rate r of both submodules (paper: 4).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, reduction: int = 4):
        super().__init__()
        self.channel = SEMLP(c1, reduction, block="GAM")
        mid = max(c1 // reduction, 1)
        self.spatial = nn.Sequential(
            nn.Conv2d(c1, mid, 7, padding=3, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, c1, 7, padding=3, bias=False),
            nn.BatchNorm2d(c1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = x * self.channel(x).sigmoid()
        return self.gated(x, x1 * self.spatial(x1).sigmoid())


class GCBlock(IdentityStart):
    """Global Context block. Cao, Xu, Lin, Wei, Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and
    Beyond", ICCV Workshops 2019 (TPAMI 2020: "Global Context Networks").

    Attention pooling (one query-independent context for all positions), a bottleneck transform, add fusion:
        a = softmax_{H*W}(W_k x)                    W_k: 1x1 conv C -> 1, softmax over all positions (fp32)
        c = sum_j a_j x_j                           (B, C, 1, 1)
        y = x + W_v2 relu(LN(W_v1 c))               W_v1: C -> C/r, LN over [C/r, 1, 1], W_v2: C/r -> C (``SEMLP``)
    Initialised as the official code: W_k kaiming-normal (fan_in), zero bias; W_v2 weight and bias zero, so a new
    block is the identity. ``identity_start()`` then gives W_v2 PyTorch's default init (only while it is still all
    zero), because a zero gate times a zero branch would never receive a gradient. A 1x1 map pools to itself (a = 1).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): Bottleneck ratio r (paper default 16; official configs: ratio 1/16, and 1/4 variants).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, reduction: int = 16):
        super().__init__()
        self.mask = Conv1x1(c1, 1)
        self.transform = SEMLP(c1, reduction, norm="layer", block="GCBlock")
        nn.init.kaiming_normal_(self.mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.mask.bias)
        nn.init.zeros_(self.transform.fc2.weight)
        nn.init.zeros_(self.transform.fc2.bias)

    def identity_start(self):
        """Arm the gate; a still zero-initialised W_v2 gets PyTorch's default init so that both can learn."""
        if self.gate is None and not self.transform.fc2.weight.any():
            self.transform.fc2.reset_parameters()
        return super().identity_start()

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention-pooling weights a, (B, 1, H, W), summing to 1 over H x W."""
        logits = self.mask(x)  # (B, 1, H, W)
        a = logits.flatten(2).softmax(-1, dtype=acc_dtype(x.dtype))
        return a.to(x.dtype).view_as(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.weights(x).flatten(2)  # (B, 1, HW)
        context = torch.matmul(x.flatten(2), a.transpose(1, 2)).unsqueeze(-1)  # (B, C, 1, 1)
        return self.gated(x, x + self.transform(context))


class scSE(IdentityStart):
    """Concurrent spatial and channel squeeze & excitation. Roy, Navab, Wachinger, "Concurrent Spatial and Channel
    'Squeeze & Excitation' in Fully Convolutional Networks", MICCAI 2018; "Recalibrating Fully Convolutional Networks
    with Spatial and Channel 'Squeeze & Excitation' Blocks", IEEE TMI 2019.

        cSE: x_c = sigmoid(W2 relu(W1 GAP(x))) * x          SE with ratio r (``SEMLP``)
        sSE: x_s = sigmoid(conv1x1_{C->1}(x)) * x
        y    = max(x_c, x_s)      aggregation "max" (max-out; TMI version and the authors' code: default)
             = x_c + x_s          "add" (MICCAI version)
             = x_c * x_s          "mul" (the product of the two recalibrated maps, so of order x^2)
    The TMI paper's fourth strategy, concatenation, doubles the width and is not offered.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): cSE reduction ratio r (authors: 2).
        aggregation (str): "max", "add" or "mul".

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    AGGREGATIONS = ("max", "add", "mul")

    def __init__(self, c1: int, reduction: int = 2, aggregation: str = "max"):
        super().__init__()
        if aggregation not in self.AGGREGATIONS:
            raise BlockArgumentError(f"scSE: aggregation must be one of {self.AGGREGATIONS}, got {aggregation!r}")
        self.aggregation = aggregation
        self.cse = SEMLP(c1, reduction, block="scSE")
        self.sse = Conv1x1(c1, 1)

    def weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(channel weights (B, C, 1, 1), spatial weights (B, 1, H, W)), both in (0, 1)."""
        return self.cse(_pool(x)).sigmoid(), self.sse(x).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, s = self.weights(x)
        if self.aggregation == "max":
            y = torch.maximum(x * c, x * s)
        elif self.aggregation == "add":
            y = x * (c + s)
        else:
            y = (x * c) * (x * s)
        return self.gated(x, y)


class BAM(IdentityStart):
    """Bottleneck Attention Module. Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018.

    Channel and spatial branches in parallel, summed (broadcast) into one 3D attention map, applied residually:
        Mc = BN(MLP(GAP(x)))                        (B, C, 1, 1); MLP C -> C/r -> C, ReLU (``SEMLP``)
        Ms = BN(f3(f2(f1(f0(x)))))                  (B, 1, H, W); f0: 1x1 C -> C/r, f1, f2: 3x3 dilation d,
                                                    f3: 1x1 C/r -> 1; BN + ReLU after f0, f1, f2
        M  = sigmoid(Mc + Ms),    y = x + x * M
    As the paper's equations: the sum (the official code multiplies Mc and Ms), BN at the end of both branches (the
    code puts BN inside the channel MLP and none at the branch ends). The MLP keeps the paper's biases b0, b1; the
    spatial convolutions carry none (BN follows). Mc uses ``PooledBatchNorm2d`` (batch-1 training); Ms's BatchNorm,
    like any ``Conv``'s, needs more than one value per channel in training (not a 1x1 map at batch 1).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): Reduction ratio r of both branches (paper: 16).
        dilation (int): Dilation d of the two 3x3 convolutions (paper: 4).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, reduction: int = 16, dilation: int = 4):
        super().__init__()
        check_int("BAM", "dilation", dilation)
        self.channel = nn.Sequential(SEMLP(c1, reduction, block="BAM"), PooledBatchNorm2d(c1))
        mid = max(c1 // reduction, 1)
        layers = [Conv1x1(c1, mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True)]
        for _ in range(2):
            layers += [
                nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True),
            ]
        layers += [Conv1x1(mid, 1, bias=False), nn.BatchNorm2d(1)]
        self.spatial = nn.Sequential(*layers)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """M(x) = sigmoid(Mc + Ms), (B, C, H, W) in (0, 1) (the sigmoid in place on the sum, without autograd)."""
        m = self.channel(_pool(x)) + self.spatial(x)
        return m.sigmoid_() if no_autograd(m) else m.sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.weights(x)
        if self.gate is None and can_write_over(m, x):  # x + x * M written over M (inference)
            return torch.addcmul(x, x, m, out=m)
        return self.gated(x, torch.addcmul(x, x, m))
