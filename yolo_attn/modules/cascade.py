"""Cascade fusion blocks of CFNet: the focal block and the transition block.

Zhang, Li, Li, Hu, "CFNet: Cascade Fusion Network for Dense Prediction", arXiv 2302.06052, 2023 (v2 of the same
arXiv entry: "CEDNet: A Cascade Encoder-Decoder Network for Dense Prediction", Pattern Recognition 2025).

CFNet fuses multi-scale features inside the backbone: each of several cascaded stages extracts C3, C4, C5 (strides
8, 16, 32; the C5 blocks are focal blocks) and a light transition block merges them top-down into the stride-8 map
that the next stage starts from. ``CFNetFocal`` is channel-preserving and repeatable (YAML ``repeats``);
``CFNetTransition`` takes the stage's levels as a ``from`` list, finest first, and returns one map at the finest
level's resolution.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import (
    BlockArgumentError, BlockInputError, Conv1x1, IdentityStart, LayerNorm2d, check_float, check_int, layer_name,
)

__all__ = ("CFNetFocal", "CFNetTransition")


def _init_official(*modules: nn.Module) -> None:
    """CFNet's initialisation of its convolutions: kaiming normal (fan_out, linear gain), zero bias."""
    for m in modules:
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="linear")
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class CFNetFocal(IdentityStart):
    """CFNet focal block (the blocks of each stage's C5 level). Zhang, Li, Li, Hu, "CFNet: Cascade Fusion Network for
    Dense Prediction", arXiv 2302.06052, 2023.

    A ConvNeXt block whose receptive field is enlarged by a second, dilated depth-wise convolution; each depth-wise
    convolution has its own norm, GELU and skip connection, then the ConvNeXt inverted bottleneck with layer scale:
        z1 = x  + GELU(LN(DW_k(x)))                     k x k depth-wise
        z2 = z1 + GELU(LN(DW_k,d(z1)))                  k x k depth-wise, dilation d (padding d * (k - 1) / 2)
        y  = x  + gamma * PW_2(GELU(PW_1(z2)))          PW_1: C -> e*C, PW_2: e*C -> C (1x1, with bias)
    LN is LayerNorm over channels (eps 1e-6); gamma is a per-channel layer scale. Deviations: no stochastic depth
    (YOLO trains without it); the point-wise layers are 1x1 convolutions instead of Linear layers on a permuted map
    (the same function, no permute copies). Works on any H x W, 1x1 included (zero padding).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        expansion (int): Hidden width ratio e of the inverted bottleneck (paper: 4).
        kernel_size (int): Depth-wise kernel k, odd (paper: 7).
        dilation (int): Dilation d of the second depth-wise conv (paper: 3).
        layer_scale (float): Initial gamma (paper: 1e-6); 0 disables the layer scale.

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, expansion: int = 4, kernel_size: int = 7, dilation: int = 3, layer_scale: float = 1e-6):
        super().__init__()
        check_int("CFNetFocal", "c1", c1)
        check_int("CFNetFocal", "expansion", expansion)
        check_int("CFNetFocal", "kernel_size", kernel_size)
        check_int("CFNetFocal", "dilation", dilation)
        layer_scale = check_float("CFNetFocal", "layer_scale", layer_scale, inclusive=True)
        if kernel_size % 2 == 0:
            raise BlockArgumentError(f"CFNetFocal: kernel_size must be odd to keep H x W, got {kernel_size}")
        half = kernel_size // 2
        self.dw1 = nn.Conv2d(c1, c1, kernel_size, padding=half, groups=c1)
        self.norm1 = LayerNorm2d(c1)
        self.dw2 = nn.Conv2d(c1, c1, kernel_size, padding=dilation * half, dilation=dilation, groups=c1)
        self.norm2 = LayerNorm2d(c1)
        self.pw1 = Conv1x1(c1, expansion * c1)
        self.pw2 = Conv1x1(expansion * c1, c1)
        self.act = nn.GELU()
        self.gamma = nn.Parameter(torch.full((c1, 1, 1), layer_scale)) if layer_scale > 0 else None
        _init_official(self.dw1, self.dw2, self.pw1, self.pw2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x + self.act(self.norm1(self.dw1(x)))
        z = z + self.act(self.norm2(self.dw2(z)))
        y = self.pw2(self.act(self.pw1(z)))
        if self.gamma is not None:
            y = y * self.gamma.to(y.dtype)
        return self.gated(x, x + y)


class CFNetTransition(IdentityStart):
    """CFNet transition block: fuses a stage's multi-scale features top-down into its finest level. Zhang, Li, Li, Hu,
    "CFNet: Cascade Fusion Network for Dense Prediction", arXiv 2302.06052, 2023.

    With inputs x_0 (finest) .. x_{N-1} (coarsest), each level half the size of the previous one:
        t_{N-1} = x_{N-1}
        t_k     = Norm_k( x_k + Up(PW_k(t_{k+1})) )        k = N-2 .. 0;  PW_k: 1x1 conv to level k's width
        y       = t_0                                      at x_0's resolution
    Up is bilinear interpolation (align_corners=False) to level k's exact size: the paper's 2x upsampling for even
    sizes, and it also fits odd pyramids (13 -> 7 -> 4, where 2x would overshoot). As in the paper's code the 1x1
    conv runs before the upsampling, at the coarse resolution. Deviations: Norm is BatchNorm2d, the norm of the host
    (YOLO) network, where the paper uses its backbone's norm (LayerNorm for ConvNeXt, BatchNorm for ResNet); PW_k has
    no bias since a BatchNorm follows; the output width ``c2`` may differ from x_0's width, in which case x_0 first
    goes through a bias-free 1x1 conv to ``c2`` (the paper keeps C3's width).

    Args:
        c1 (list[int]): Input widths, finest level first (filled in by the parser from ``from``), at least 2.
        c2 (int): Output width (scaled like ``Conv``).

    Shapes: xs = [(B, c1[0], H, W), (B, c1[1], ceil(H/2), ceil(W/2)), ...] -> (B, c2, H, W).
    With identity start armed (``IdentityStart``, needs c2 == c1[0]) it begins as the pass-through of x_0.
    """

    def __init__(self, c1: list[int], c2: int):
        super().__init__()
        if not isinstance(c1, (list, tuple)) or len(c1) < 2:
            raise BlockArgumentError(f"CFNetTransition: needs at least 2 levels in 'from' (finest first), got {c1!r}")
        for c in c1:
            check_int("CFNetTransition", "input width", c)
        check_int("CFNetTransition", "c2", c2)
        widths = [c2, *c1[1:]]  # width of t_k
        self.align = nn.Identity() if c1[0] == c2 else Conv1x1(c1[0], c2, bias=False)
        self.proj = nn.ModuleList(Conv1x1(widths[k + 1], widths[k], bias=False) for k in range(len(c1) - 1))
        self.norm = nn.ModuleList(nn.BatchNorm2d(widths[k]) for k in range(len(c1) - 1))
        _init_official(*self.proj)

    def _check(self, xs: list[torch.Tensor]) -> None:
        n = len(self.proj) + 1
        if torch.jit.is_tracing():  # ONNX export traces with sizes as tensors; the shapes were checked in eager mode
            return
        if not isinstance(xs, (list, tuple)) or len(xs) != n:
            got = len(xs) if isinstance(xs, (list, tuple)) else type(xs).__name__
            raise BlockInputError(f"{layer_name(self)}: expected a list of {n} inputs (finest first), got {got}")
        for j in range(1, n):
            h, w = xs[j - 1].shape[-2:]
            if tuple(xs[j].shape[-2:]) != ((h + 1) // 2, (w + 1) // 2):
                raise BlockInputError(
                    f"{layer_name(self)}: input {j} has shape {tuple(xs[j].shape)}, input {j - 1} has shape "
                    f"{tuple(xs[j - 1].shape)}; CFNetTransition inputs must be a pyramid, finest first, each level "
                    "half the size of the previous one (e.g. from: [P3, P4, P5])"
                )

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        self._check(xs)
        t = xs[-1]
        for k in range(len(self.proj) - 1, -1, -1):
            lateral = self.align(xs[0]) if k == 0 else xs[k]
            up = F.interpolate(self.proj[k](t), size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            t = self.norm[k](lateral + up)
        return self.gated(xs[0], t)

    def identity_start(self):
        """Start as the pass-through of the finest input (needs c2 equal to its width)."""
        if not isinstance(self.align, nn.Identity):
            raise BlockArgumentError(
                "CFNetTransition: identity start needs the output width c2 to equal the first input's width"
            )
        return super().identity_start()
