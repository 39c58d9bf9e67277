"""Content-aware upsamplers: DySample, CARAFE.

Both replace an ``nn.Upsample`` row of a YOLO neck: channel-preserving, (B, C, H, W) -> (B, C, sH, sW) for any H x W
(odd sizes and 1x1 included). The first constructor argument is the input width ``c1``, which the parser fills in;
the output width reported to the next layer is the same. Both are plain PyTorch (no compiled op) and export to ONNX
(opset >= 16 for DySample's GridSample).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import BlockArgumentError, Conv1x1, acc_dtype, check_int, no_autograd

__all__ = ("DySample", "CARAFE")


def _axis_coords(n: int, s: int, like: torch.Tensor) -> torch.Tensor:
    """Normalised (align_corners=False) coordinates of the centres of the n * s output pixels along one axis:
    (2 i + 1) / (s n) - 1, i.e. output pixel i samples the input at (i + 0.5) / s pixels."""
    return (torch.arange(n * s, device=like.device, dtype=like.dtype) * 2 + 1) / (n * s) - 1


def _conv_acc(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv in fp32 (at least) whatever the input's, the weights' and autocast's precision: offsets are
    positions, and a bf16 conv's 0.4% error moves samples by a visible part of a pixel. fp32 without autocast takes
    the module's own (CPU fast) path."""
    dt = acc_dtype(x.dtype)
    if x.dtype == dt and conv.weight.dtype == dt and not torch.is_autocast_enabled(x.device.type):
        return conv(x)
    with torch.autocast(x.device.type, enabled=False):
        bias = None if conv.bias is None else conv.bias.to(dt)
        return F.conv2d(x.to(dt), conv.weight.to(dt), bias)


class DySample(nn.Module):
    """Dynamic upsampling by point sampling. Liu, Lu, Fu, Cao, "Learning to Upsample by Learning to Sample",
    ICCV 2023.

    Each output pixel bilinearly samples the input at its own position, the position bilinear upsampling would use
    plus a learned offset (in input pixels), per channel group:
        O = 0.25 * linear(X)                              static scope factor ('lp', the paper's DySample)
        O = 0.5 * sigmoid(linear_2(X)) * linear(X)        dynamic scope (``dyscope``, DySample+)
        S = G + pixel_shuffle(O),     Y = grid_sample(X, S)
    G places output pixel (i, j) at input position ((j + 0.5) / s, (i + 0.5) / s), so zero offsets give bilinear
    upsampling (align_corners=False); the offsets keep x before y per group, as ``grid_sample`` reads them; border
    padding as in the official code. 'lp' ("linear + pixel shuffle") predicts 2 g s^2 offsets per input pixel with a
    1x1 conv on X; 'pl' ("pixel shuffle + linear") pixel-shuffles X to (C / s^2, sH, sW) first and predicts 2 g
    offsets per output pixel (fewer parameters). Official init: offset conv N(0, 0.001) with zero bias, scope conv
    zero, so a new DySample is (nearly) bilinear upsampling.

    Width rule: ``groups`` must divide c1, and 'pl' needs c1 divisible by scale^2 (YOLO widths are multiples of 8:
    the defaults, groups 4 and scale 2, fit every scale). The offset convs, the sampling positions and the sampling
    run in fp32 also under autocast and in a half model (a bf16 position is off by up to 0.5 pixel at 160 pixels,
    and a bf16 offset conv by 0.4% of its output); the output has the input's dtype.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        scale (int): Upsampling factor s (paper: 2).
        style (str): 'lp' (paper's default) or 'pl'.
        groups (int): Offset groups g; the channels of a group share one sampling set (paper: 4).
        dyscope (bool): Dynamic scope factor (DySample+).

    Shapes: (B, C, H, W) -> (B, C, sH, sW).
    """

    def __init__(self, c1: int, scale: int = 2, style: str = "lp", groups: int = 4, dyscope: bool = False):
        super().__init__()
        check_int("DySample", "c1", c1)
        check_int("DySample", "scale", scale, minimum=2)
        check_int("DySample", "groups", groups)
        if style not in ("lp", "pl"):
            raise BlockArgumentError(f"DySample: style must be 'lp' or 'pl', got {style!r}")
        if not isinstance(dyscope, bool):
            raise BlockArgumentError(f"DySample: dyscope must be true or false, got {dyscope!r}")
        if c1 % groups:
            raise BlockArgumentError(f"DySample: groups={groups} must divide the input width {c1}")
        if style == "pl" and c1 % (scale * scale):
            raise BlockArgumentError(
                f"DySample: style 'pl' pixel-shuffles the input, so its width {c1} must divide by scale^2 = "
                f"{scale * scale}; use style 'lp'"
            )
        self.scale, self.style, self.groups = scale, style, groups
        c_in = c1 // (scale * scale) if style == "pl" else c1
        c_out = 2 * groups * (1 if style == "pl" else scale * scale)
        self.offset = Conv1x1(c_in, c_out)
        nn.init.normal_(self.offset.weight, 0, 0.001)
        nn.init.zeros_(self.offset.bias)
        self.scope = None
        if dyscope:
            self.scope = Conv1x1(c_in, c_out, bias=False)
            nn.init.zeros_(self.scope.weight)

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        """O / scope factor, laid out per output pixel: (B, g, sH, sW, 2) ('pl') or (B, g, H, s, W, s, 2) ('lp'),
        (x, y) last, in fp32 (at least, also under autocast or in a half model); a view of the conv output."""
        b, _, h, w = x.shape
        s, g = self.scale, self.groups
        src = F.pixel_shuffle(x, s) if self.style == "pl" else x
        o = _conv_acc(self.offset, src)
        if self.scope is not None:
            gate = _conv_acc(self.scope, src).sigmoid()
            o = gate.mul_(o) if no_autograd(gate) and no_autograd(o) else o * gate
        if self.style == "pl":  # (B, 2 g, sH, sW): channel = xy * g + group
            return o.reshape(b, 2, g, s * h, s * w).permute(0, 2, 3, 4, 1)
        # (B, 2 g s^2, H, W): channel = (xy * g + group) * s^2 + i * s + j is output pixel (h s + i, w s + j)
        return o.reshape(b, 2, g, s, s, h, w).permute(0, 2, 5, 3, 6, 4, 1)

    def grid(self, x: torch.Tensor) -> torch.Tensor:
        """S normalised for ``grid_sample`` (align_corners=False), (B * g, sH, sW, 2), fp32 (at least)."""
        b, _, h, w = x.shape
        s = self.scale
        o = self.offsets(x)
        bx, by = _axis_coords(w, s, o), _axis_coords(h, s, o)  # bilinear upsampling's positions
        base = torch.stack((bx.expand(s * h, s * w), by.unsqueeze(1).expand(s * h, s * w)), -1)
        if self.style == "lp":
            base = base.reshape(h, s, w, s, 2)
        f = 0.5 if self.scope is not None else 0.25  # scope factor; offsets in pixels -> normalised units
        axis = torch.arange(2, device=o.device, dtype=o.dtype)  # [2 f / w, 2 f / h], traced sizes stay symbolic
        factor = (1 - axis) * (2 * f / w) + axis * (2 * f / h)
        return torch.addcmul(base, o, factor).reshape(b * self.groups, s * h, s * w, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        xa = x.to(acc_dtype(x.dtype))  # fp32 copy of a half input: offsets and sampling
        grid = self.grid(xa)
        src = xa.reshape(b * self.groups, c // self.groups, h, w)
        y = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return y.reshape(b, c, self.scale * h, self.scale * w).to(x.dtype)


class CARAFE(nn.Module):
    """Content-Aware ReAssembly of FEatures. Wang, Chen, Xu, Liu, Loy, Lin, "CARAFE: Content-Aware ReAssembly of
    FEatures", ICCV 2019.

    A kernel prediction module and a content-aware reassembly module (paper Sec. 3, eqs. (1)-(4)):
        X_c  = conv_{1x1}(X)                                   channel compressor, C -> C_m
        W    = softmax_{k_up^2}( pixel_shuffle( conv_{k_enc}(X_c) ) )     (B, G, k_up^2, sH, sW)
        Y[c, l'] = sum_{n, m = -r..r} W[g(c), (n, m), l'] * X[c, i + n, j + m]     l' = (i', j'), i = i' // s
    with r = k_up // 2, zero padding outside the map, and channel c in group g(c) = c // (C / G). The reassembly is
    done with shifted views of the padded input (k_up^2 multiply-adds over the output, no unfold of k_up^2 copies
    and no CUDA op); the kernel softmax runs in fp32 for half inputs. Layers and init as mmcv's ``CARAFEPack``:
    both convs with bias, xavier-uniform, the content encoder N(0, 0.001) so a new CARAFE averages each k_up x k_up
    neighbourhood (a smoothed nearest upsampling).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        scale (int): Upsampling ratio sigma (paper: 2).
        up_kernel (int): Reassembly kernel k_up, odd (paper: 5).
        encoder_kernel (int): Content encoder kernel k_encoder, odd (paper: 3).
        compressed (int): Compressed channels C_m (paper: 64).
        groups (int): Reassembly groups G sharing a kernel, dividing c1 (mmcv's up_group: 1).

    Shapes: (B, C, H, W) -> (B, C, sH, sW).
    """

    def __init__(
        self, c1: int, scale: int = 2, up_kernel: int = 5, encoder_kernel: int = 3, compressed: int = 64,
        groups: int = 1,
    ):  # fmt: skip
        super().__init__()
        check_int("CARAFE", "c1", c1)
        check_int("CARAFE", "scale", scale, minimum=2)
        for name, v in (("up_kernel", up_kernel), ("encoder_kernel", encoder_kernel)):
            check_int("CARAFE", name, v)
            if v % 2 == 0:
                raise BlockArgumentError(f"CARAFE: {name} must be odd (kernels centred on each pixel), got {v}")
        check_int("CARAFE", "compressed", compressed)
        check_int("CARAFE", "groups", groups)
        if c1 % groups:
            raise BlockArgumentError(f"CARAFE: groups={groups} must divide the input width {c1}")
        self.scale, self.k, self.groups = scale, up_kernel, groups
        self.compressor = Conv1x1(c1, compressed)
        self.encoder = nn.Conv2d(
            compressed, up_kernel * up_kernel * groups * scale * scale, encoder_kernel, 1, encoder_kernel // 2
        )
        for m in (self.compressor, self.encoder):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        nn.init.normal_(self.encoder.weight, 0, 0.001)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised reassembly kernels W as (B, G, k_up^2, s^2, H, W): W[b, g, n * k + m, i * s + j, h, w]
        is output pixel (h s + i, w s + j)'s weight of input pixel (h + n - r, w + m - r); fp32 for half inputs."""
        b, _, h, w = x.shape
        k2, s2 = self.k * self.k, self.scale * self.scale
        logits = self.encoder(self.compressor(x)).reshape(b, self.groups, k2, s2, h, w)
        return logits.softmax(2, dtype=acc_dtype(logits.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k, s, g, r = self.k, self.scale, self.groups, self.k // 2
        wk = self.kernels(x).to(x.dtype).unsqueeze(2)  # (B, G, 1, k^2, s^2, H, W)
        xp = F.pad(x, (r, r, r, r)).reshape(b, g, c // g, 1, h + 2 * r, w + 2 * r)
        out = xp[..., 0:h, 0:w] * wk[:, :, :, 0]  # (B, G, C / G, s^2, H, W): sub-pixel planes
        for n in range(k):
            for m in range(k):
                if n or m:  # in place also under autograd: addcmul_ saves its factors (views), not out
                    out.addcmul_(xp[..., n : n + h, m : m + w], wk[:, :, :, n * k + m])
        return F.pixel_shuffle(out.reshape(b, c * s * s, h, w), s)
