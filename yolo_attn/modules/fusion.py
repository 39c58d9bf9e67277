"""Multi-input fusion blocks: ASFF, AFF, iAFF, BiFPN_Concat.

Their first constructor argument is the list of input widths, one per entry of the YAML row's ``from`` list; the
parser fills it in. ``forward`` takes the list of input tensors in the same order.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import Conv

from ._common import (
    BlockArgumentError,
    BlockInputError,
    Conv1x1,
    IdentityStart,
    acc_dtype,
    can_write_over,
    check_float,
    check_int,
    layer_name,
    plain_eager,
)
from .attention import MSCAM

__all__ = ("ASFF", "AFF", "iAFF", "BiFPN_Concat")


class ASFF(IdentityStart):
    """Adaptively Spatial Feature Fusion. Liu, Huang, Wang, "Learning Spatial Fusion for Single-Shot Object
    Detection", 2019 (arXiv 1911.09516).

    Fuses N pyramid levels into the resolution of one target level l with per-pixel weights:
        x^{n->l} = resize_n(x^n)                                   to level l's size and width
        [a^1..a^N] = softmax_over_n(conv1x1(cat_n(conv1x1(x^{n->l}))))   per pixel, sum to 1
        y^l = Conv3x3( sum_n a^n * x^{n->l} )
    Resizing as in the paper: a level 2x finer goes through a 3x3 stride-2 conv; 4x (and beyond) through stride-2
    max-pools then a 3x3 stride-2 conv; a coarser level through a 1x1 conv then nearest interpolation to the exact
    target size (so odd sizes work). The fused width is level l's own width; activations are the host network's
    (ultralytics ``Conv``: BN + SiLU) where the paper's YOLOv3 used LeakyReLU.

    Args:
        c1 (list[int]): Input widths, finest level first (filled in by the parser from ``from``).
        c2 (int): Output width (scaled like ``Conv``).
        level (int): Index into ``from`` of the target level whose resolution the output takes.
        compress (int): Width of each level's weight-feature (paper's code: 16).

    Shapes: xs = [(B, c1[0], H, W), (B, c1[1], ceil(H/2), ceil(W/2)), ...] -> (B, c2, H_l, W_l).
    With identity start armed (``IdentityStart``) it begins as the pass-through of its target level.
    """

    def __init__(self, c1: list[int], c2: int, level: int = 0, compress: int = 16):
        super().__init__()
        n = len(c1)
        if n < 2:
            raise BlockArgumentError(f"ASFF: needs at least 2 pyramid levels in 'from', got {n}")
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < n:
            raise BlockArgumentError(f"ASFF: level must be an index into 'from' (0..{n - 1}), got {level!r}")
        check_int("ASFF", "compress", compress)
        self.level = level
        inter = c1[level]
        self.resize = nn.ModuleList(self._resizer(c, inter, j - level) for j, c in enumerate(c1))
        self.weight_feats = nn.ModuleList(Conv(inter, compress, 1, 1) for _ in c1)
        self.weight_levels = Conv1x1(compress * n, n)
        self.expand = Conv(inter, c2, 3, 1)

    @staticmethod
    def _resizer(c_in: int, c_out: int, steps: int) -> nn.Module:
        """Map a level ``steps`` octaves away (negative: finer) to the target level's width; resolution is matched
        by the module for finer levels and by interpolation in ``forward`` for coarser ones."""
        if steps == 0:
            return nn.Identity()
        if steps > 0:
            return Conv(c_in, c_out, 1, 1)
        pools = [nn.MaxPool2d(3, 2, 1) for _ in range(-steps - 1)]
        return nn.Sequential(*pools, Conv(c_in, c_out, 3, 2))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        feats, w = self.level_weights(xs)
        fused = feats[0] * w[:, 0:1]
        for j in range(1, len(feats)):
            fused = fused + feats[j] * w[:, j : j + 1]
        return self.gated(xs[self.level], self.expand(fused))

    def level_weights(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The resized levels x^{n->l} and their per-pixel softmax weights a (B, N, H_l, W_l)."""
        if len(xs) != len(self.resize):
            raise BlockInputError(f"{layer_name(self)}: expected {len(self.resize)} inputs, got {len(xs)}")
        size = xs[self.level].shape[-2:]
        feats = []
        for j, (x, resize) in enumerate(zip(xs, self.resize)):
            y = resize(x)
            if j > self.level:  # coarser: must be the target halved (j - level) times (ceil), then upsampled
                h, w = size
                for _ in range(j - self.level):
                    h, w = (h + 1) // 2, (w + 1) // 2
                ok = tuple(x.shape[-2:]) == (h, w)
                y = F.interpolate(y, size=size, mode="nearest")
            else:
                ok = y.shape[-2:] == size
            if not ok:
                raise BlockInputError(
                    f"{layer_name(self)}: input {j} has shape {tuple(x.shape)}, which does not fit target level "
                    f"{self.level} of size {tuple(size)}; ASFF inputs must be a pyramid, finest first, each level "
                    "half the size of the previous one"
                )
            feats.append(y)
        return feats, self.weight_levels(torch.cat([f(y) for f, y in zip(self.weight_feats, feats)], 1)).softmax(1)

    def identity_start(self):
        """Start as the pass-through of the target level (needs c2 equal to that level's width)."""
        if self.expand.conv.out_channels != self.expand.conv.in_channels:  # c2 != the target level's width
            raise BlockArgumentError("ASFF: identity start needs the output width c2 to equal its target level's width")
        return super().identity_start()


class AFF(nn.Module):
    """Attentional Feature Fusion. Dai, Gieseke, Oehmcke, Wu, Barnard, "Attentional Feature Fusion", WACV 2021.

    Two same-shaped maps X, Y are mixed by MS-CAM weights computed from their sum (the paper's initial integration):
        M = MSCAM(X + Y),     Z = M * X + (1 - M) * Y
    The paper fuses maps of equal width. Where the two inputs differ from the output width ``c2`` (a YOLO neck's
    upsampled and lateral paths usually do), each mismatched input first goes through a 1x1 ``Conv`` to ``c2``.

    Args:
        c1 (list[int]): The two input widths (filled in by the parser from ``from: [a, b]``).
        c2 (int | None): Output width, scaled like ``Conv``; None keeps the (equal) input width.
        reduction (int): MS-CAM bottleneck ratio r (paper's code: 4).

    Shapes: [X (B, c1[0], H, W), Y (B, c1[1], H, W)] -> (B, c2, H, W).
    """

    n_attention = 1

    def __init__(self, c1: list[int], c2: int | None = None, reduction: int = 4):
        super().__init__()
        name = type(self).__name__
        if len(c1) != 2:
            raise BlockArgumentError(f"{name}: fuses exactly 2 inputs, got {len(c1)}")
        if c2 is None:
            if c1[0] != c1[1]:
                raise BlockArgumentError(
                    f"{name}: inputs have {c1[0]} and {c1[1]} channels; give an output width (args [c2]) so that "
                    "1x1 projections align them, or feed inputs of equal width"
                )
            c2 = c1[0]
        check_int(name, "c2", c2)
        self.align = nn.ModuleList(nn.Identity() if c == c2 else Conv(c, c2, 1, 1) for c in c1)
        self.attention = nn.ModuleList(MSCAM(c2, reduction) for _ in range(self.n_attention))

    def _inputs(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(xs) != 2:
            raise BlockInputError(f"{layer_name(self)}: expected 2 inputs, got {len(xs)}")
        if xs[0].shape[-2:] != xs[1].shape[-2:]:
            raise BlockInputError(
                f"{layer_name(self)}: inputs must have the same H x W, got {tuple(xs[0].shape)} and "
                f"{tuple(xs[1].shape)} (upsample or downsample one of them first)"
            )
        return self.align[0](xs[0]), self.align[1](xs[1])

    def weights(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """The final mixing weight M of the first input, (B, c2, H, W)."""
        x, y = self._inputs(xs)
        return self._mix(x, y)

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mixing weight M of x, (B, c2, H, W); in plain eager inference it reuses the memory of the sum."""
        return self.attention[0].weights(x + y, reuse=True)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x, y = self._inputs(xs)
        return _lerp_over(y, x, self._mix(x, y))


class iAFF(AFF):
    """Iterative Attentional Feature Fusion. Dai et al., "Attentional Feature Fusion", WACV 2021.

    The initial integration is itself an AFF, then a second MS-CAM mixes the inputs again:
        M1 = MSCAM_1(X + Y),   S = M1 * X + (1 - M1) * Y,   M2 = MSCAM_2(S),   Z = M2 * X + (1 - M2) * Y
    Arguments, width alignment and shapes are those of ``AFF``.
    """

    n_attention = 2

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = _lerp_over(y, x, self.attention[0].weights(x + y, reuse=True))
        return self.attention[1].weights(s, reuse=True)


def _lerp_over(y: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """M * x + (1 - M) * y = y + M * (x - y) in one pass (torch.lerp); written over m, a weight map the caller made
    and no longer needs, in plain eager inference (saves a map-sized allocation)."""
    return torch.lerp(y, x, m, out=m if can_write_over(m, x, y) else None)


class BiFPN_Concat(nn.Module):
    """Weighted feature fusion of BiFPN (fast normalised fusion). Tan, Pang, Le, "EfficientDet: Scalable and
    Efficient Object Detection", CVPR 2020, eq. (2).

    One learnable scalar v_i per input, initialised to 1 (as the official code), normalised without a softmax:
        w_i = relu(v_i) / (sum_j relu(v_j) + eps),     eps = 1e-4
        mode "sum"    (the paper):  O = sum_i w_i * I_i                     inputs of equal width
        mode "concat" (default):    O = cat_i( (n + eps) * w_i * I_i )      output width = sum of the input widths
    "concat" is a drop-in for a YOLO ``Concat`` row (``[[-1, 6], 1, BiFPN_Concat, []]``): the following layers keep
    Concat's widths, as the forks' ``BiFPN_Concat2`` / ``BiFPN_Concat3`` do (they concatenate the weighted inputs).
    The constant n + eps (n inputs) makes a new block exactly ``Concat``: at v = 1 the factors (n + eps) * w_i are
    1.0 (computed as (n + eps) / (sum_j relu(v_j) + eps) * relu(v_i)), so a pretrained Concat model transfers with
    unchanged outputs and no identity-start gate is needed. A constant factor on all inputs changes nothing the
    next conv (and its BN) could not absorb; the learned ratios w_i / w_j and the normalisation are the paper's. The
    forks instead start at Concat / (n + 1e-4) (without the ReLU); "sum" keeps the paper's weighted mean, which has
    no Concat to start from. Weights are normalised in fp32 and applied in the inputs' dtype.

    Args:
        c1 (list[int]): Input widths, one per entry of ``from`` (filled in by the parser); at least 2.
        mode (str): "concat" (default) or "sum" (needs equal input widths; output width = that width).
        eps (float): eps of the normalisation (paper: 1e-4).

    Shapes: [(B, c1[0], H, W), ..., (B, c1[n-1], H, W)] -> (B, sum(c1), H, W) ("concat") or (B, c1[0], H, W) ("sum").
    """

    def __init__(self, c1: list[int], mode: str = "concat", eps: float = 1e-4):
        super().__init__()
        if not isinstance(c1, (list, tuple)) or len(c1) < 2:
            raise BlockArgumentError(f"BiFPN_Concat: fuses at least 2 inputs ('from' list), got {c1!r}")
        for c in c1:
            check_int("BiFPN_Concat", "input width", c)
        if mode not in ("concat", "sum"):
            raise BlockArgumentError(f"BiFPN_Concat: mode must be 'concat' or 'sum', got {mode!r}")
        if mode == "sum" and len(set(c1)) > 1:
            raise BlockArgumentError(
                f"BiFPN_Concat: mode 'sum' adds its inputs, which needs equal widths, got {list(c1)}; use mode "
                "'concat' (output width = their sum) or project the inputs to one width first"
            )
        self.eps = check_float("BiFPN_Concat", "eps", eps)
        self.mode = mode
        self.widths = tuple(c1)
        self.weight = nn.Parameter(torch.ones(len(c1)))

    def weights(self) -> torch.Tensor:
        """The paper's normalised weights w (n,), in fp32 (at least); they sum to S / (S + eps), S = sum relu(v)."""
        v = F.relu(self.weight.to(acc_dtype(self.weight.dtype)))
        return v / (v.sum() + self.eps)

    def factors(self) -> torch.Tensor:
        """What each input is multiplied by: w ("sum") or (n + eps) * w, exactly 1.0 at v = 1 ("concat")."""
        v = F.relu(self.weight.to(acc_dtype(self.weight.dtype)))
        if self.mode == "sum":
            return v / (v.sum() + self.eps)
        return v * ((len(self.widths) + self.eps) / (v.sum() + self.eps))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        n = len(self.widths)
        if len(xs) != n:
            raise BlockInputError(f"{layer_name(self)}: expected {n} inputs, got {len(xs)}")
        size = xs[0].shape[-2:]
        for j, x in enumerate(xs):
            if x.shape[-2:] != size:
                raise BlockInputError(
                    f"{layer_name(self)}: inputs must have the same H x W, got {tuple(xs[0].shape)} and input {j} "
                    f"{tuple(x.shape)} (upsample or downsample one of them first)"
                )
        f = self.factors().to(xs[0].dtype)
        if self.mode == "sum":
            y = xs[0] * f[0]
            for j in range(1, n):
                y = y + xs[j] * f[j]
            return y
        if plain_eager(*xs, f) and all(x.dtype == f.dtype for x in xs):  # each product into its slice of the output
            b, h, w = xs[0].shape[0], xs[0].shape[2], xs[0].shape[3]
            y = xs[0].new_empty(b, sum(self.widths), h, w)
            start = 0
            for j, x in enumerate(xs):
                torch.mul(x, f[j], out=y[:, start : start + x.shape[1]])
                start += x.shape[1]
            return y
        return torch.cat([x * f[j] for j, x in enumerate(xs)], 1)
