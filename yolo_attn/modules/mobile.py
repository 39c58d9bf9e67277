"""Efficient mobile blocks: FasterNet's partial convolution and block, StarNet's star block, EMO's iRMB, and the
C2f hosts whose bottlenecks are FasterNet or star blocks (``C2f_Faster``, ``C2f_Star``).

``PConv``, ``FasterBlock``, ``StarBlock`` and ``iRMB`` map (B, C, H, W) -> (B, C, H, W); their first constructor
argument is the input width ``c1``, which the YAML parser fills in from ``from``. The three blocks with their own
residual (FasterNet, star, iRMB) can start as the identity (``IdentityStart``: a learnable gate on their residual
branch, off by default); ``PConv`` is a convolution without a residual and has no gate. ``C2f_Faster`` and
``C2f_Star`` take ``C2f``'s arguments (c1, c2, n, shortcut, g, e).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import C2f

from ._common import BlockArgumentError, Conv1x1, IdentityStart, acc_dtype, check_float, check_int, no_autograd

__all__ = ("PConv", "FasterBlock", "C2f_Faster", "StarBlock", "C2f_Star", "iRMB", "irmb_heads")

_ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def _act(block: str, act: str) -> nn.Module:
    if act not in _ACTS:
        raise BlockArgumentError(f"{block}: act must be one of {', '.join(_ACTS)}, got {act!r}")
    return _ACTS[act]()


def _odd(block: str, name: str, k) -> int:
    check_int(block, name, k)
    if k % 2 == 0:
        raise BlockArgumentError(f"{block}: {name} must be odd to keep H x W, got {k}")
    return k


class _PW(Conv1x1):
    """A point-wise convolution (``Conv1x1``: nn.Conv2d(c1, c2, 1) with its parameters, state dict and FLOP count)
    that takes ``Conv1x1``'s batched-product path on CPU only for narrow inputs (<= 96 channels), where oneDNN's
    1x1 convolutions are slow (2 threads, forward + backward: 8x32x40x40 to 64 and 8x64x40x40 to 32 in 0.6-0.7x
    the conv's time, 8x64x40x40 to 128 in 0.85x); wider inputs (8x256x20x20 to 512 and back: the conv 10-15%
    faster, forward and backward) and pooled maps wider than that take nn.Conv2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels > 96:
            return nn.Conv2d.forward(self, x)
        return super().forward(x)


def _activate(act: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """act(t); ReLU and SiLU in place at inference (t is a fresh map the caller made)."""
    if no_autograd(t):
        if type(act) is nn.ReLU:
            return t.relu_()
        if type(act) is nn.SiLU:
            return F.silu(t, inplace=True)
    return act(t)


def _residual(block: IdentityStart, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + y, the block's residual; with identity start armed, x + g * y (the gate on the residual branch, g = 0 at
    the start: exactly x). y, made by the caller, is overwritten at inference."""
    if block.gate is not None:
        return x + block.gate.to(y.dtype) * y
    if no_autograd(y) and y.shape == x.shape and y.dtype == torch.promote_types(x.dtype, y.dtype):
        return y.add_(x)
    return x + y


# ----------------------------------------------------------------------------------------------------------------
# FasterNet
# ----------------------------------------------------------------------------------------------------------------
class PConv(nn.Module):
    """Partial convolution (PConv). Chen, Kao, He, Zhuo, Wen, Lee, Chan, "Run, Don't Walk: Chasing Higher FLOPS for
    Faster Neural Networks", CVPR 2023.

    A regular (dense) 3 x 3 convolution on the first c_p = C / n_div channels only; the other channels pass through
    untouched (they are mixed by the point-wise layers that follow in a FasterNet block):
        y[:, :c_p] = Conv3x3(x[:, :c_p])          c_p -> c_p, no bias, stride 1, padding 1
        y[:, c_p:] = x[:, c_p:]
    FLOPs h w k^2 c_p^2, 1/16 of a full conv at n_div = 4. As in the official code the first channels are the
    convolved ones; no norm or activation (the paper's PConv is the bare convolution). Not an attention gate and
    without a residual of its own, so it has no identity start.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        n_div (int): Ratio C / c_p (paper: 4); c_p = C // n_div must be at least 1.

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, n_div: int = 4):
        super().__init__()
        check_int("PConv", "c1", c1)
        check_int("PConv", "n_div", n_div)
        if c1 // n_div < 1:
            raise BlockArgumentError(f"PConv: n_div={n_div} leaves no channel of the {c1} to convolve (at most {c1})")
        self.cp = c1 // n_div
        self.conv = nn.Conv2d(self.cp, self.cp, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cp, c = self.cp, x.shape[1]
        if cp == c:
            return self.conv(x)
        x1, x2 = x.split((cp, c - cp), 1)  # split, not two slices: its backward is one cat, not two zero-filled maps
        return torch.cat((self.conv(x1), x2), 1)


class FasterBlock(IdentityStart):
    """FasterNet block. Chen et al., "Run, Don't Walk: Chasing Higher FLOPS for Faster Neural Networks", CVPR 2023.

    A PConv for spatial mixing, then two point-wise convolutions (an inverted bottleneck, "T-shaped" together with
    the PConv) with the block's only norm and activation between them, and a residual:
        h = PConv(x)                                            3 x 3 on C / n_div channels
        y = x + gamma * PW_2(act(BN(PW_1(h))))                  PW_1: C -> r C, PW_2: r C -> C, 1 x 1, no bias
    r = ``mlp_ratio`` (paper: 2), act ReLU (the paper's FasterNet-T2/S/M/L; GELU for T0/T1), gamma a per-channel
    layer scale when ``layer_scale`` > 0 (the official code's option, 0 in every released model). No activation
    after the residual add. Departure: no stochastic depth (a training regulariser of the ImageNet recipe, 0 to 0.3
    there; YOLO trains without it, and the community's C2f_Faster default of 0.1 is not used). Identity start
    (opt-in): y = x + g * gamma * PW_2(...), the gate g = 0 on the residual branch.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        n_div (int): PConv's ratio C / c_p (paper: 4).
        mlp_ratio (float): Hidden width ratio r of the point-wise layers (paper: 2).
        act (str): "relu" (paper, default), "gelu" (paper's smallest models) or "silu" (the YOLO host's).
        layer_scale (float): Initial gamma; 0 (default) disables the layer scale.

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, n_div: int = 4, mlp_ratio: float = 2.0, act: str = "relu", layer_scale: float = 0.0):
        super().__init__()
        check_float("FasterBlock", "mlp_ratio", mlp_ratio)
        layer_scale = check_float("FasterBlock", "layer_scale", layer_scale, inclusive=True)
        check_int("FasterBlock", "c1", c1)
        check_int("FasterBlock", "n_div", n_div)
        if c1 // n_div < 1:
            raise BlockArgumentError(
                f"FasterBlock: n_div={n_div} leaves no channel of the {c1} for PConv to convolve (at most {c1})"
            )
        hidden = int(c1 * mlp_ratio)
        if hidden < 1:
            raise BlockArgumentError(f"FasterBlock: mlp_ratio={mlp_ratio} leaves no hidden channel of {c1} * ratio")
        self.spatial = PConv(c1, n_div)
        self.fc1 = _PW(c1, hidden, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.act = _act("FasterBlock", act)
        self.fc2 = _PW(hidden, c1, bias=False)
        self.gamma = nn.Parameter(torch.full((c1, 1, 1), layer_scale)) if layer_scale > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.bn(self.fc1(self.spatial(x)))
        # ReLU in place also under autograd (as the official code): BN's backward needs its input, not its output
        t = t.relu_() if type(self.act) is nn.ReLU else _activate(self.act, t)
        y = self.fc2(t)
        if self.gamma is not None:
            y = y * self.gamma.to(y.dtype)
        return _residual(self, x, y)


class C2f_Faster(C2f):
    """``C2f`` (CSP bottleneck with two convs, YOLOv8) whose bottlenecks are FasterNet blocks (``FasterBlock`` at the
    hidden width c = int(c2 * e)), the community's C2f_Faster. Arguments as ``C2f``: (c1, c2, n, shortcut, g, e);
    cv1 and cv2 are C2f's, so a pretrained C2f's cv1 / cv2 tensors load by name (the bottlenecks start new).
    ``shortcut`` and ``g`` are accepted for C2f's signature and not used: a FasterNet block always has its own
    residual and no grouped conv (as in the community's class).

        y = cv2(cat[a, b, m_1(b), m_2(m_1(b)), ...]),   [a, b] = split(cv1(x))

    The FasterNet block is the paper's (official MLPBlock): PConv, 1 x 1 (no bias), BN, ReLU, 1 x 1 (no bias), plus
    the input; n_div 4, mlp_ratio 2, no layer scale, drop path 0. The community's Faster_Block differs in two
    places, which are not followed: its first 1 x 1 is Ultralytics' ``Conv`` (BN and SiLU, the host's activation)
    and its drop path defaults to 0.1 (stochastic depth in every YOLO training, which the paper used only for its
    ImageNet recipe).

    Shapes: (B, c1, H, W) -> (B, c2, H, W).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        check_int("C2f_Faster", "n", n)
        super().__init__(c1, c2, n, shortcut, g, e)
        if self.c < 4:
            raise BlockArgumentError(f"C2f_Faster: hidden width int(c2 * e) = {self.c} must be at least 4 (PConv 1/4)")
        self.m = nn.ModuleList(FasterBlock(self.c) for _ in range(n))


# ----------------------------------------------------------------------------------------------------------------
# StarNet
# ----------------------------------------------------------------------------------------------------------------
class StarBlock(IdentityStart):
    """StarNet block. Ma, Dai, Bai, Chen, Fu, "Rewrite the Stars", CVPR 2024.

    The "star" operation, an element-wise product of two linear branches, maps the input into a high-dimensional
    implicit feature space (products of channel pairs) at the cost of one extra point-wise layer:
        h = BN(DW7(x))                                   7 x 7 depth-wise, with bias
        z = ReLU6(W_1 h + b_1) * (W_2 h + b_2)           W_1, W_2: 1 x 1, C -> r C
        y = x + DW7'(BN(W_g z + b_g))                    W_g: 1 x 1, r C -> C; DW7': 7 x 7 depth-wise with bias
    As in the official code every conv keeps its bias, also the two followed by a BatchNorm (the parameter count is
    the official one). r = ``mlp_ratio``: 3 is the official block's default (StarNet's model builder passes 4 for
    starnet_s1 to s4, 3 for s050 / s150); the community's C2f_Star uses 3. No stochastic depth (see FasterBlock).
    Identity start (opt-in): y = x + g * DW7'(...), the gate g = 0 on the residual branch.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        mlp_ratio (int): Width ratio r of the two star branches (default 3).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, mlp_ratio: int = 3):
        super().__init__()
        check_int("StarBlock", "c1", c1)
        check_int("StarBlock", "mlp_ratio", mlp_ratio)
        hidden = mlp_ratio * c1
        self.hidden = hidden
        self.dw1 = nn.Conv2d(c1, c1, 7, 1, 3, groups=c1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.f1 = _PW(c1, hidden)
        self.f2 = _PW(c1, hidden)
        self.g = _PW(hidden, c1)
        self.bn2 = nn.BatchNorm2d(c1)
        self.dw2 = nn.Conv2d(c1, c1, 7, 1, 3, groups=c1)

    def _star(self, h: torch.Tensor) -> torch.Tensor:
        """ReLU6(f1(h)) * f2(h); on CPU, narrow inputs (<= 96 channels, see ``_PW``) take one matrix product for both
        branches."""
        if h.device.type == "cpu" and h.shape[1] <= 96 and h.is_contiguous() and not torch.jit.is_tracing():
            b, c, hh, ww = h.shape
            weight = torch.cat((self.f1.weight, self.f2.weight)).flatten(1)  # (2 r C, C)
            bias = torch.cat((self.f1.bias, self.f2.bias))
            if hh * ww == 1:
                z = F.linear(h.flatten(1), weight, bias).view(b, -1, 1, 1)
            else:  # bmm, then the bias: profilers count bmm (not baddbmm) outside a conv module
                z = torch.bmm(weight.expand(b, -1, -1), h.flatten(2))
                bias = bias.to(z.dtype).view(1, -1, 1)
                z = (z.add_(bias) if no_autograd(z) else z + bias).view(b, -1, hh, ww)
            z1, z2 = z.split(self.hidden, 1)
        else:
            z1, z2 = self.f1(h), self.f2(h)
        if no_autograd(z1):
            return torch.mul(z1.clamp_(0, 6), z2)
        return F.relu6(z1) * z2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw2(self.bn2(self.g(self._star(self.bn1(self.dw1(x))))))
        return _residual(self, x, y)


class C2f_Star(C2f):
    """``C2f`` (CSP bottleneck with two convs, YOLOv8) whose bottlenecks are StarNet blocks (``StarBlock`` at the
    hidden width c = int(c2 * e), mlp_ratio 3), the community's C2f_Star. Arguments as ``C2f``: (c1, c2, n,
    shortcut, g, e); cv1 and cv2 are C2f's, so a pretrained C2f's cv1 / cv2 tensors load by name (the bottlenecks
    start new). ``shortcut`` and ``g`` are accepted for C2f's signature and not used: a star block always has its
    own residual and depth-wise convs.

        y = cv2(cat[a, b, m_1(b), m_2(m_1(b)), ...]),   [a, b] = split(cv1(x))

    The star block is the official one (every conv with its bias, no stochastic depth); the community's Star_Block
    builds its first 7 x 7 and W_g as Ultralytics ``Conv(act=False)`` (no conv bias before the BN), the same
    function with C + C fewer parameters.

    Shapes: (B, c1, H, W) -> (B, c2, H, W).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        check_int("C2f_Star", "n", n)
        super().__init__(c1, c2, n, shortcut, g, e)
        if self.c < 1:
            raise BlockArgumentError(f"C2f_Star: hidden width int(c2 * e) = {self.c} must be at least 1")
        self.m = nn.ModuleList(StarBlock(self.c) for _ in range(n))


# ----------------------------------------------------------------------------------------------------------------
# EMO: inverted Residual Mobile Block
# ----------------------------------------------------------------------------------------------------------------
def irmb_heads(c: int, c_mid: int, dim_head: int) -> int:
    """Attention heads of an iRMB of width c and value width c_mid: the largest divisor of gcd(c, c_mid) that is at
    most max(1, c // dim_head). Where c divides by dim_head (the official code's requirement) this is c / dim_head;
    elsewhere the head width c / heads adapts (c = 48, dim_head 32: one head of 48; c = 112: two heads of 56)."""
    g = math.gcd(c, c_mid)
    h = max(1, min(c // dim_head, g))
    while g % h:
        h -= 1
    return h


class _SqueezeExcite(nn.Module):
    """SE gate of iRMB (timm's SqueezeExcite): x * sigmoid(W_e act(W_r GAP(x) + b_r) + b_e)."""

    def __init__(self, c: int, rd: int, act: nn.Module):
        super().__init__()
        self.conv_reduce = Conv1x1(c, rd)
        self.act = act
        self.conv_expand = Conv1x1(rd, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv_expand(self.act(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class iRMB(IdentityStart):
    """Inverted Residual Mobile Block. Zhang, Li, Li, Liu, Xue, Zhang, Jiang, Huang, Wang, Wang, "Rethinking Mobile
    Block for Efficient Attention-based Models" (EMO), ICCV 2023.

    The Meta Mobile Block with expansion lambda and an efficient operator F made of an expanded window MHSA (EW-MHSA)
    and a depth-wise conv with its own skip (the paper's Eq. and official code, with pre-norm):
        h  = BN(x)                                              BN eps 1e-6
        A  = softmax(Q K^T / sqrt(d)) per head, in windows      Q, K = W_qk h   (1 x 1, C -> 2C, the unexpanded h)
        v  = A act(W_v h)                                       W_v: 1 x 1, C -> lambda C ("expanded" values)
        u  = v + SE(SiLU(BN(DW_k(v))))                          DW k x k, BN eps 1e-6, SiLU; SE when se_ratio > 0
        y  = x + W_p u                                          W_p: 1 x 1, lambda C -> C, no bias
    ``attn_pre``: v = act(W_v (A h)) (attention before the value projection, the EMO models' setting). With
    ``attn_s`` false the attention is left out: v = act(W_v h). act is ReLU (the class default of the official code).

    Windows: the paper's EW-MHSA is window attention, the Swin-style non-overlapping local windows it cites. By
    default (``window_layout="local"``) each window is a contiguous window_size x window_size patch; a map that does
    not divide into windows is zero-padded at the bottom / right and the padded positions are masked out of the
    softmax, so every real pixel's output is independent of the padding (a map smaller than a window is one window,
    also 1 x 1). The official code differs: its windows are a strided grid (window (i, j) holds pixels (i + a * n_h,
    j + b * n_w), a dilated partition over the whole map), and the padded zeros take part in the softmax unmasked.
    ``window_layout="grid"`` reproduces the official code exactly (its released outputs are matched in the tests).
    ``window_size`` <= 0 attends over the whole map (both layouts coincide).

    Heads: heads = ``irmb_heads(C, lambda C, dim_head)``, i.e. C / dim_head where that divides (the official code
    asserts it), else the largest divisor of the widths below C // dim_head, with the head width adapting. The
    official default dim_head 64 does not divide YOLO's narrow widths (16, 48, ...); EMO's models use 16 to 32, and
    32 is the default here (C = 64: 2 heads, 256: 8). Softmaxes run in fp32 for half inputs. Departures: no dropout
    or stochastic depth (0 in the class defaults); channel-preserving, stride 1, with both skips (EMO's stage
    transitions, stride 2 without skips, are not this block); norm BatchNorm (the class default). Identity start
    (opt-in): y = x + g * W_p u, the gate g = 0 on the outer residual branch.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        exp_ratio (float): Expansion lambda of the values (official default 1.0).
        dw_ks (int): Depth-wise kernel, odd (default 3).
        se_ratio (float): SE reduction ratio in [0, 1); 0 (default) leaves SE out.
        dim_head (int): Target head width (default 32, see Heads).
        window_size (int): Window side (default 7, as in every EMO model); <= 0 for global attention.
        attn_s (bool): Use the attention (default True).
        qkv_bias (bool): Biases on W_qk and W_v (default False; the EMO models use True).
        attn_pre (bool): Attention before the value projection (default False; the EMO models use True).
        act (str): Activation of the values and of SE: "relu" (default), "gelu" or "silu".
        window_layout (str): "local" (the paper's windows, default) or "grid" (the official code's).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, exp_ratio: float = 1.0, dw_ks: int = 3, se_ratio: float = 0.0, dim_head: int = 32,
                 window_size: int = 7, attn_s: bool = True, qkv_bias: bool = False, attn_pre: bool = False,
                 act: str = "relu", window_layout: str = "local"):  # fmt: skip
        super().__init__()
        check_int("iRMB", "c1", c1)
        check_float("iRMB", "exp_ratio", exp_ratio)
        _odd("iRMB", "dw_ks", dw_ks)
        se_ratio = check_float("iRMB", "se_ratio", se_ratio, inclusive=True)
        if se_ratio >= 1:
            raise BlockArgumentError(f"iRMB: se_ratio must be in [0, 1), got {se_ratio!r}")
        check_int("iRMB", "dim_head", dim_head)
        if isinstance(window_size, bool) or not isinstance(window_size, int):
            raise BlockArgumentError(f"iRMB: window_size must be an integer (<= 0: the whole map), got {window_size!r}")
        for name, v in (("attn_s", attn_s), ("qkv_bias", qkv_bias), ("attn_pre", attn_pre)):
            if not isinstance(v, bool):
                raise BlockArgumentError(f"iRMB: {name} must be true or false, got {v!r}")
        if window_layout not in ("local", "grid"):
            raise BlockArgumentError(f"iRMB: window_layout must be one of local, grid, got {window_layout!r}")
        c_mid = int(c1 * exp_ratio)
        if c_mid < 1:
            raise BlockArgumentError(f"iRMB: exp_ratio={exp_ratio} leaves no channel of {c1} * exp_ratio")
        self.c_mid = c_mid
        self.attn_s, self.attn_pre = attn_s, attn_pre
        self.window_size, self.window_layout = window_size, window_layout
        self.norm = nn.BatchNorm2d(c1, eps=1e-6)
        if attn_s:
            self.heads = irmb_heads(c1, c_mid, dim_head)
            self.dim_head = c1 // self.heads
            self.scale = self.dim_head**-0.5
            self.qk = _PW(c1, 2 * c1, bias=qkv_bias)
        else:
            self.heads = 0
        self.v = _PW(c1, c_mid, bias=qkv_bias)
        self.v_act = _act("iRMB", act)
        self.conv_local = nn.Conv2d(c_mid, c_mid, dw_ks, 1, dw_ks // 2, groups=c_mid, bias=False)
        self.bn_local = nn.BatchNorm2d(c_mid, eps=1e-6)
        self.act_local = nn.SiLU()
        rd = round(c_mid * se_ratio)
        self.se = _SqueezeExcite(c_mid, rd, _act("iRMB", act)) if se_ratio > 0 and rd > 0 else nn.Identity()
        self.proj = _PW(c_mid, c1, bias=False)

    # -- attention ------------------------------------------------------------------------------------------------
    def _layout(self, h: int, w: int, dynamic: bool):
        """(window height, window width, pad bottom, pad right) for an h x w map."""
        ws = self.window_size
        if ws <= 0:
            return h, w, 0, 0
        if self.window_layout == "local" and not dynamic:  # a map side within one window is one unpadded window
            wh, ww = (h if h <= ws else ws), (w if w <= ws else ws)
            return wh, ww, (-h) % wh, (-w) % ww
        return ws, ws, (-h) % ws, (-w) % ws

    def _windows(self, t: torch.Tensor, parts: int, wh, ww) -> torch.Tensor:
        """(B, parts * heads * c, Hp, Wp) -> (parts, B * nW, heads, wh * ww, c): tokens of each window, channels last;
        q and k (parts = 2) come out as two contiguous blocks (one copy, no further one for the products)."""
        b, ch, hp, wp = t.shape
        nh, nw = hp // wh, wp // ww
        heads = self.heads
        c = ch // (parts * heads)
        if self.window_layout == "local":
            t = t.view(b, parts, heads, c, nh, wh, nw, ww).permute(1, 0, 4, 6, 2, 5, 7, 3)
        else:  # official grid: row = r * nh + i for window row i and in-window row r
            t = t.view(b, parts, heads, c, wh, nh, ww, nw).permute(1, 0, 5, 7, 2, 4, 6, 3)
        return t.reshape(parts, b * nh * nw, heads, wh * ww, c)

    def _unwindow(self, t: torch.Tensor, b: int, hp, wp, wh, ww) -> torch.Tensor:
        """Inverse of ``_windows``: (B * nW, heads, L, c) -> (B, heads * c, Hp, Wp)."""
        nh, nw = hp // wh, wp // ww
        heads, c = t.shape[1], t.shape[3]
        if self.window_layout == "local":
            t = t.view(b, nh, nw, heads, wh, ww, c).permute(0, 3, 6, 1, 4, 2, 5)
        else:
            t = t.view(b, nh, nw, heads, wh, ww, c).permute(0, 3, 6, 4, 1, 5, 2)
        return t.reshape(b, heads * c, hp, wp)

    def _key_mask(self, b: int, h, w, hp, wp, wh, ww) -> torch.Tensor:
        """(B * nW, 1, 1, L) bool, True where a window's key is a real pixel (local layout with padding)."""
        rows = torch.arange(hp, device=self.norm.weight.device) < h
        cols = torch.arange(wp, device=self.norm.weight.device) < w
        keep = rows.view(hp // wh, 1, wh, 1) & cols.view(1, wp // ww, 1, ww)  # (nh, nw, wh, ww)
        keep = keep.reshape(1, -1, 1, 1, wh * ww).expand(b, -1, -1, -1, -1)
        return keep.reshape(-1, 1, 1, wh * ww)

    def _attention(self, q, k, v, mask):
        """softmax(q k^T / sqrt(d)) v per window and head, the softmax in fp32 for half inputs. The fused kernel
        (which accumulates half inputs in fp32) everywhere but in export and, on CPU, in training with windows of
        at most 1024 tokens: there its backward is 1.5x slower than that of the two products and the softmax
        (8x256x20x20, windows of 49), which are used instead."""
        small_cpu_grad = (
            q.device.type == "cpu"
            and torch.is_grad_enabled()
            and (q.requires_grad or v.requires_grad)
            and q.shape[-2] <= 1024
        )
        if small_cpu_grad or torch.onnx.is_in_onnx_export() or v.dtype != q.dtype:
            logits = (q * self.scale) @ k.transpose(-2, -1)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            return logits.softmax(-1, dtype=acc_dtype(q.dtype)).to(v.dtype) @ v
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)

    def _attend(self, h: torch.Tensor) -> torch.Tensor:
        """EW-MHSA: (B, C, H, W) normed input -> (B, lambda C, H, W) attended, projected values."""
        b, c, hh, ww_ = h.shape
        dynamic = torch.jit.is_tracing()
        wh, ww, pad_b, pad_r = self._layout(hh, ww_, dynamic)
        padded = dynamic or bool(pad_b or pad_r)
        grid = self.window_layout == "grid"
        if grid and padded:  # official: the padded zeros go through the projections and attend
            h = F.pad(h, (0, pad_r, 0, pad_b))
        qk = self.qk(h)
        vals = h if self.attn_pre else _activate(self.v_act, self.v(h))
        if padded and not grid:
            qk = F.pad(qk, (0, pad_r, 0, pad_b))
            vals = F.pad(vals, (0, pad_r, 0, pad_b))
        hp, wp = qk.shape[2], qk.shape[3]
        q, k = self._windows(qk, 2, wh, ww)  # (B * nW, heads, L, d) each
        vals = self._windows(vals, 1, wh, ww)[0]
        mask = self._key_mask(b, hh, ww_, hp, wp, wh, ww) if padded and not grid else None
        out = self._unwindow(self._attention(q, k, vals, mask), b, hp, wp, wh, ww)
        if padded:
            out = out[:, :, :hh, :ww_]
        if self.attn_pre:
            out = _activate(self.v_act, self.v(out.contiguous()))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        v = self._attend(h) if self.attn_s else _activate(self.v_act, self.v(h))
        u = self.se(_activate(self.act_local, self.bn_local(self.conv_local(v))))
        u = u.add_(v) if no_autograd(u) and u.dtype == v.dtype and u.shape == v.shape else u + v
        return _residual(self, x, self.proj(u))
