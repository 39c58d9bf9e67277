"""Convolution replacements: ODConv (dynamic), RefConv (re-parameterised), SCConv (self-calibrated), ACmix.

All four take ``Conv``'s arguments in ``Conv``'s order, (c1, c2, k, s, p, g, d, act), with their own options after
``act``, so a YAML row swaps ``Conv`` for them without changing its args; the output width is scaled like
``Conv``'s and the output size is ``Conv``'s: (B, c2, ceil(H / s), ceil(W / s)) for an odd k with automatic padding.
Each ends in BatchNorm + ``Conv.default_act`` (SiLU) like ``Conv``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import Conv
from ultralytics.nn.modules.conv import Conv2, autopad

from ._common import BlockArgumentError, Conv1x1, PooledBatchNorm2d, acc_dtype, check_int

__all__ = ("ODConv", "RefConv", "SCConv", "ACmix", "odconv_temperature")


def _activation(act) -> nn.Module:
    """The activation ``Conv`` would use for ``act``."""
    return Conv.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()


def _check_conv_args(block: str, c1, c2, k, s, g, d) -> None:
    for name, v in (("c1", c1), ("c2", c2), ("k", k), ("s", s), ("g", g), ("d", d)):
        check_int(block, name, v)
    if c1 % g or c2 % g:
        raise BlockArgumentError(f"{block}: input width {c1} and output width {c2} must divide by groups g={g}")


def _check_same_padding(block: str, k: int, p, d: int) -> None:
    """Blocks whose inner maps must keep their size accept only the automatic ('same') padding."""
    if k % 2 == 0:
        raise BlockArgumentError(f"{block}: k must be odd (its inner maps keep their size), got {k}")
    if p is not None and p != autopad(k, None, d):
        raise BlockArgumentError(f"{block}: p must be None (automatic padding {autopad(k, None, d)}), got {p!r}")


def odconv_temperature(iteration: int, epoch: int, iters_per_epoch: int, temp_epoch: int = 10, temp_init: float = 30.0):
    """ODConv's attention temperature schedule (official training script): linear from ``temp_init`` at the first
    iteration down to 1 after ``temp_epoch`` epochs, then 1. Set it with ``ODConv.update_temperature`` on every
    ODConv of a model, once per iteration; without this ODConv runs at temperature 1 (the post-annealing value)."""
    total = iters_per_epoch * temp_epoch
    current = iteration + epoch * iters_per_epoch
    return 1.0 + max(0.0, (temp_init - 1.0) * (total - current) / total)


class ODConv(nn.Module):
    """Omni-dimensional dynamic convolution. Li, Zhou, Yao, "Omni-Dimensional Dynamic Convolution", ICLR 2022.

    n candidate kernels W_i (c2, c1/g, k, k), mixed per sample by four attentions from one squeezed descriptor:
        z   = ReLU(BN(FC(GAP(x))))                      hidden = max(c1 // reduction, 16)
        a_s = sigmoid(FC_s(z) / T)   (k x k)      a_c = sigmoid(FC_c(z) / T)   (c1)
        a_f = sigmoid(FC_f(z) / T)   (c2)         a_w = softmax(FC_w(z) / T)   (n)
        y   = act(BN( sum_i (a_wi * a_f * a_c * a_s * W_i) * x ))
    As in the official code a_s, a_c and a_f are shared by the n kernels, so a_c is applied to the input, a_f to the
    output, and only sum_i a_wi * a_s * W_i is built per sample (one grouped conv with the batch folded into the
    groups). Heads that have nothing to weigh are absent, as in the paper: a_w when n = 1, a_s when k = 1, a_f for a
    depthwise conv (c1 = c2 = g). Default: ODConv (4x), r = 1/16, the paper's headline (and detection) setting.
    T is 1 unless set with ``update_temperature`` (the official training anneals it from 30 to 1 over the first 10
    epochs: ``odconv_temperature``); it is a buffer, so changing it does not recompile a compiled model.
    A traced or exported graph fixes a conv's group count, so under ``torch.jit.trace`` and ``torch.onnx.export`` the
    per-sample conv runs as a batched matmul on the unfolded input instead (same result, any batch size).

    Args:
        c1, c2, k, s, p, g, d, act: As ``Conv``.
        kernel_num (int): Number of candidate kernels n (paper: 4; 1 gives ODConv (1x)).
        reduction (int): Hidden width c1 // reduction of the attention, at least 16 (paper: r = 1/16).

    Shapes: (B, c1, H, W) -> (B, c2, H_out, W_out), H_out as for ``Conv`` with the same k, s, p, d.
    """

    MIN_HIDDEN = 16

    def __init__(self, c1, c2, k=3, s=1, p=None, g=1, d=1, act=True, kernel_num: int = 4, reduction: int = 16):
        super().__init__()
        _check_conv_args("ODConv", c1, c2, k, s, g, d)
        self.n = check_int("ODConv", "kernel_num", kernel_num)
        check_int("ODConv", "reduction", reduction)
        self.k, self.s, self.p, self.g, self.d = k, s, autopad(k, p, d), g, d
        hidden = max(c1 // reduction, self.MIN_HIDDEN)

        self.fc = Conv1x1(c1, hidden, bias=False)
        self.fc_bn = PooledBatchNorm2d(hidden)
        self.channel_fc = Conv1x1(hidden, c1)
        self.filter_fc = None if c1 == c2 == g else Conv1x1(hidden, c2)
        self.spatial_fc = None if k == 1 else Conv1x1(hidden, k * k)
        self.kernel_fc = None if kernel_num == 1 else Conv1x1(hidden, kernel_num)
        self.weight = nn.Parameter(torch.empty(kernel_num, c2, c1 // g, k, k))
        self.bn = nn.BatchNorm2d(c2)
        self.act = _activation(act)
        self.register_buffer("temperature", torch.ones(()), persistent=False)

        for m in (self.fc, self.channel_fc, self.filter_fc, self.spatial_fc, self.kernel_fc):  # official init
            if m is not None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for w in self.weight:
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")

    def update_temperature(self, temperature: float) -> None:
        """Set the softmax/sigmoid temperature T of the attentions (1 after the official annealing)."""
        self.temperature.fill_(temperature)

    def attentions(self, x: torch.Tensor):
        """(a_c (B, c1, 1, 1), a_f (B, c2, 1, 1) | None, a_s (B, 1, 1, k, k) | None, a_w (B, n) | None)."""
        b, t = x.shape[0], self.temperature
        z = F.relu(self.fc_bn(self.fc(x.mean((2, 3), keepdim=True))))  # (B, hidden, 1, 1)
        a_c = torch.sigmoid(self.channel_fc(z) / t)
        a_f = None if self.filter_fc is None else torch.sigmoid(self.filter_fc(z) / t)
        a_s = None if self.spatial_fc is None else torch.sigmoid(self.spatial_fc(z) / t).view(b, 1, 1, self.k, self.k)
        a_w = None
        if self.kernel_fc is not None:
            a_w = F.softmax(self.kernel_fc(z).view(b, self.n) / t, dim=1, dtype=torch.float32).to(x.dtype)
        return a_c, a_f, a_s, a_w

    def _export_conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The per-sample conv as a batched matmul on the unfolded input (the batch-folded grouped conv would pin the
        batch size of a traced or exported graph)."""
        b, c1, h, w = x.shape
        g, c2 = self.g, weight.shape[1]
        cols = F.unfold(x, self.k, self.d, self.p, self.s)  # (B, c1 * k * k, L)
        y = weight.reshape(b, g, c2 // g, -1) @ cols.view(b, g, cols.shape[1] // g, -1)  # (B, g, c2 / g, L)
        h_out = (h + 2 * self.p - self.d * (self.k - 1) - 1) // self.s + 1
        return y.reshape(b, c2, h_out, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c1, h, w = x.shape
        a_c, a_f, a_s, a_w = self.attentions(x)
        x = x * a_c
        if a_s is None and a_w is None:  # k = 1 and n = 1: one static kernel
            y = F.conv2d(x, self.weight[0], None, self.s, self.p, self.d, self.g)
        else:
            weight = self.weight.flatten(1) if a_w is None else a_w @ self.weight.flatten(1)  # (1 or B, c2*c1/g*k*k)
            weight = weight.view(-1, *self.weight.shape[1:])  # (1 or B, c2, c1/g, k, k)
            if a_s is not None:
                weight = weight * a_s  # (B, c2, c1/g, k, k)
            if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
                y = self._export_conv(x, weight)
            else:  # one grouped conv, the batch folded into the groups
                c2 = weight.shape[1]
                y = F.conv2d(
                    x.reshape(1, b * c1, h, w), weight.reshape(b * c2, *weight.shape[2:]), None, self.s, self.p,
                    self.d, b * self.g,
                )
                y = y.view(b, c2, y.shape[2], y.shape[3])
        if a_f is not None:
            y = y * a_f
        return self.act(self.bn(y))


class RefConv(Conv2):
    """Re-parameterised refocusing convolution. Cai, Ding, et al., "RefConv: Re-parameterized Refocusing Convolution
    for Powerful ConvNets", arXiv 2310.10563, 2023.

    A frozen basis kernel W_b and a trainable refocusing transformation T, a convolution applied to the kernel itself:
        W = W_b + T(W_b),      y = act(BN(W * x))
    T (as in the official code): W_b (c2, c1/g, k, k) is viewed as one image with c2*c1/g channels (the 2-D kernels);
    T is a map_k x map_k conv over it, zero-padded, in c1*c2/g^2 groups of g kernels, no bias, PyTorch's default
    init. For g = 1 every 2-D kernel is refocused by its own map; for a depthwise conv all kernels are mixed.

    The basis is the buffer ``conv.weight`` (saved in the state dict, not a parameter, so no optimizer or trainer
    unfreezes it) and the state dict otherwise matches ``Conv``'s: a trained ``Conv``'s state dict loads into a
    RefConv with only ``refocus.weight`` missing, which is how the paper uses it (the basis inherits a pretrained
    model's kernels). Trained from scratch the basis is a frozen random kernel, ``nn.Conv2d``'s default init (the
    official code has a zero placeholder overwritten by pretrained weights; a zero basis would stay zero).

    ``fuse()`` gives the deploy form: one plain conv with weight W (then BN + act as a ``Conv``). It subclasses
    Ultralytics' ``Conv2`` (without its 1x1 branch) because ``BaseModel.fuse()`` calls ``fuse_convs()`` on Conv2
    layers before folding BN into ``conv``: a fused YOLO model therefore computes act(conv(x)) with the refocused,
    BN-folded kernel, exactly as Ultralytics fuses a ``Conv``.

    Args:
        c1, c2, k, s, p, g, d, act: As ``Conv``.
        map_k (int): Kernel of T, odd (official: 3); capped at k (the official code requires map_k <= k).

    Shapes: (B, c1, H, W) -> (B, c2, H_out, W_out), H_out as for ``Conv`` with the same k, s, p, d.
    """

    def __init__(self, c1, c2, k=3, s=1, p=None, g=1, d=1, act=True, map_k: int = 3):
        _check_conv_args("RefConv", c1, c2, k, s, g, d)
        map_k = min(check_int("RefConv", "map_k", map_k), k)
        if map_k % 2 == 0:
            raise BlockArgumentError(f"RefConv: map_k (capped at k={k}) must be odd, got {map_k}")
        Conv.__init__(self, c1, c2, k, s, p, g, d, act)  # Conv2's parallel 1x1 branch is not built
        basis = self.conv.weight.detach().clone()
        del self.conv.weight
        self.conv.register_buffer("weight", basis)
        kernels = c2 * (c1 // g)
        self.refocus = nn.Conv2d(kernels, kernels, map_k, 1, map_k // 2, groups=kernels // g, bias=False)

    def refocused_weight(self) -> torch.Tensor:
        """W = W_b + T(W_b), (c2, c1/g, k, k); after ``fuse()`` the stored deploy kernel."""
        w = self.conv.weight
        if self.refocus is None:
            return w
        return w + self.refocus(w.reshape(1, -1, *w.shape[2:])).view_as(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        y = F.conv2d(x, self.refocused_weight(), c.bias, c.stride, c.padding, c.dilation, c.groups)
        return self.act(self.bn(y))

    @torch.no_grad()
    def fuse(self) -> RefConv:
        """Deploy form: ``conv`` becomes a plain conv with weight W, the transformation and the basis are dropped."""
        if self.refocus is not None:
            w = self.refocused_weight()
            del self.conv.weight  # the basis buffer
            self.conv.weight = nn.Parameter(w)
            self.refocus = None
        return self

    def fuse_convs(self) -> RefConv:
        """What Ultralytics' ``BaseModel.fuse()`` calls on a ``Conv2`` before ``fuse_conv_and_bn(m.conv, m.bn)``."""
        return self.fuse()

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """After ``BaseModel.fuse()`` (BN folded into ``conv`` and removed): act(conv(x)), as ``Conv.forward_fuse``.
        Ultralytics 8.3.0's ``Conv2.forward_fuse`` still applies the removed BN."""
        return self.act(self.conv(x))


class SCConv(nn.Module):
    """Self-calibrated convolution. Liu, Hou, Cheng, Wang, Feng, "Improving Convolutional Networks with
    Self-Calibrated Convolutions", CVPR 2020.

    The input is split by channels into X1 (first c1 // 2) and X2; four k x k convs K1..K4, each followed by BN:
        T1 = AvgPool_r(X1),     X1' = Up(K2(T1))                       r x r pooling, nearest upsampling
        Y1 = K4( K3(X1) * sigmoid(X1 + X1') )                          self-calibration, stride s on K4
        Y2 = K1(X2)                                                    stride s
        y  = act([Y1 ; Y2])                                            c2 // 2 + (c2 - c2 // 2) channels
    The act follows K1 and K4 (the official code's ReLUs sit there; here ``Conv.default_act``); K2 and K3 have none.
    The pooling covers the map in ceil(H / r) windows (a last partial window averages what it holds) and the
    upsampling repeats each value r times and crops to H x W, so odd sizes and maps smaller than r (down to 1 x 1)
    work. Each K is an Ultralytics ``Conv``, so ``model.fuse()`` folds their BNs. The official SCNet feeds the two
    halves from two 1x1 convs inside its bottleneck; here, as a drop-in for one conv, the input is split as in the
    paper's definition.

    Args:
        c1, c2, k, s, p, g, d, act: As ``Conv``; k odd and p automatic (the calibration maps keep their size); the
            halves' widths must divide by g.
        pooling_r (int): Down-sampling rate r of the calibration branch (paper: 4).

    Shapes: (B, c1, H, W) -> (B, c2, ceil(H / s), ceil(W / s)).
    """

    def __init__(self, c1, c2, k=3, s=1, p=None, g=1, d=1, act=True, pooling_r: int = 4):
        super().__init__()
        _check_conv_args("SCConv", c1, c2, k, s, g, d)
        _check_same_padding("SCConv", k, p, d)
        self.r = check_int("SCConv", "pooling_r", pooling_r)
        if c1 < 2 or c2 < 2:
            raise BlockArgumentError(f"SCConv: input and output widths must be >= 2 (two halves), got {c1}, {c2}")
        self.c_cal = c1 // 2
        c_plain, o_cal = c1 - self.c_cal, c2 // 2
        if self.c_cal % g or c_plain % g or o_cal % g or (c2 - o_cal) % g:
            raise BlockArgumentError(
                f"SCConv: the halves of the widths ({self.c_cal}, {c_plain} -> {o_cal}, {c2 - o_cal}) must divide by "
                f"groups g={g}"
            )
        self.k1 = Conv(c_plain, c2 - o_cal, k, s, None, g, d, act)
        self.k2 = Conv(self.c_cal, self.c_cal, k, 1, None, g, d, act=False)
        self.k2.bn = PooledBatchNorm2d(self.c_cal)  # the pooled map is 1 x 1 for maps up to r x r
        self.k3 = Conv(self.c_cal, self.c_cal, k, 1, None, g, d, act=False)
        self.k4 = Conv(self.c_cal, o_cal, k, s, None, g, d, act)

    def calibration(self, x1: torch.Tensor) -> torch.Tensor:
        """sigmoid(X1 + Up(K2(AvgPool_r(X1)))), (B, c1 // 2, H, W)."""
        h, w, r = x1.shape[2], x1.shape[3], self.r
        t = self.k2(F.avg_pool2d(x1, r, r, ceil_mode=True, count_include_pad=False))
        return torch.sigmoid(x1 + F.interpolate(t, scale_factor=r, mode="nearest")[..., :h, :w])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.c_cal], x[:, self.c_cal :]
        y1 = self.k4(self.k3(x1) * self.calibration(x1))
        return torch.cat((y1, self.k1(x2)), 1)


class ACmix(nn.Module):
    """ACmix, self-attention and convolution sharing their 1x1 projections. Pan, Ge, Lu, Song, Chen, Huang, Huang,
    "On the Integration of Self-Attention and Convolution", CVPR 2022.

    Stage I: one 1x1 conv gives q, k, v (c2 channels each, ``head`` heads of d = c2 / head).
    Stage II, attention path (local window k_att x k_att around each output pixel p, per head):
        a_pj = softmax_j( d^-1/2 * q_p . (k_{p+j} - R j) ),     R: (d x 2) relative-position map, j = (dx, dy) / radius
        att_p = sum_j a_pj * v_{p+j}
    Stage II, convolution path: a fully connected layer maps the 3*head features of each channel index to k^2 maps,
    which a group conv (groups = d, k x k, shift-initialised: map i starts as the one-hot kernel at tap i) shifts and
    sums:  conv = GroupConv(FC(q, k, v)).
        y = act(BN(alpha * att + beta * conv))
    Stride s: queries and the group conv are subsampled as in the official code; output ceil(H / s) x ceil(W / s).

    Facts from the official code: alpha = beta = 0.5 at init (the ResNet and Swin code both fill 0.5); the group
    conv has no bias (its bias is set to None), the FC none in the ResNet model; q . (pe_q - pe_k) with pe a 1x1 conv
    of the coordinates, whose bias cancels (left out here). BN + act follow as in the official ResNet bottleneck.
    Deviations, for detection and export:
    (1) the window is zero-padded and positions outside the map are masked out of the softmax; the official code
        reflection-pads, impossible on maps of 3 x 3 and smaller, which the last YOLO level reaches on small images
        (strided, it also assumes even sizes);
    (2) relative offsets are in window radii: the official normalised coordinates on a 7 x 7 map (k_att = 7), but
        the same at every map size;
    (3) the windows are never unfolded: logits and the weighted sum go one offset at a time over views of the
        padded keys and values, so memory is O(B*C*H*W + B*head*k_att^2*H*W), not the unfold's B*C*k_att^2*H*W;
        the FC and the group conv are folded into one grouped k x k conv on q, k, v (same parameters and FLOPs, no
        permuted copy). q, k, v are laid out channel-index first so both paths give the same channel order.

    Args:
        c1, c2, k, s, act: As ``Conv``; k is the convolution path's kernel (paper: 3), odd.
        p, g, d: Only Conv's defaults (None, 1, 1) are accepted.
        k_att (int): Attention window (paper: 7), odd.
        head (int): Number of heads (paper: 4); c2 must divide by it.

    Shapes: (B, c1, H, W) -> (B, c2, ceil(H / s), ceil(W / s)).
    """

    def __init__(self, c1, c2, k=3, s=1, p=None, g=1, d=1, act=True, k_att: int = 7, head: int = 4):
        super().__init__()
        _check_conv_args("ACmix", c1, c2, k, s, g, d)
        _check_same_padding("ACmix", k, p, d)
        if g != 1 or d != 1:
            raise BlockArgumentError(f"ACmix: only g=1 and d=1 are supported, got g={g}, d={d}")
        check_int("ACmix", "k_att", k_att)
        if k_att % 2 == 0:
            raise BlockArgumentError(f"ACmix: k_att must be odd (a window centred on each pixel), got {k_att}")
        self.heads = check_int("ACmix", "head", head)
        if c2 % head:
            raise BlockArgumentError(f"ACmix: output width {c2} must divide by head={head}")
        self.k, self.s, self.k_att, self.dim = k, s, k_att, c2 // head
        self.scale = self.dim**-0.5

        self.qkv = Conv1x1(c1, 3 * c2)  # output channel (d, t, h): index d * 3 * head + t * head + h
        self.rel_pos = nn.Parameter(torch.empty(2, self.dim).uniform_(-(2**-0.5), 2**-0.5))  # like a 1x1 conv 2 -> d
        self.fc = nn.Parameter(torch.empty(k * k, 3 * head))
        nn.init.kaiming_uniform_(self.fc, a=math.sqrt(5))  # nn.Conv2d(3 * head, k * k, 1)'s default init
        shift = torch.zeros(k * k, k, k)
        shift.view(k * k, k * k).fill_diagonal_(1.0)  # map i -> one-hot at tap (i // k, i % k)
        self.dep = nn.Parameter(shift.repeat(c2, 1, 1, 1))  # (c2, k^2, k, k), groups = d
        self.alpha = nn.Parameter(torch.full((1,), 0.5))
        self.beta = nn.Parameter(torch.full((1,), 0.5))
        self.bn = nn.BatchNorm2d(c2)
        self.act = _activation(act)

    def conv_weight(self) -> torch.Tensor:
        """FC followed by the group conv as one grouped conv on q, k, v: (c2, 3 * head, k, k), groups = d."""
        # as a matmul over i (same numbers as einsum("oiyx,ic->ocyx")): older ONNX exporters give einsum's result no
        # static shape, and a conv weight needs one
        return (self.dep.permute(0, 2, 3, 1) @ self.fc).permute(0, 3, 1, 2)

    def _windows(self):
        """Per offset j (row-major over the window): (dy, dx) and the slices of the padded map it reads."""
        r, s = self.k_att // 2, self.s
        for dy in range(self.k_att):
            for dx in range(self.k_att):  # negative stops keep the slices independent of the map size
                yield dy - r, dx - r, slice(dy, dy - 2 * r or None, s), slice(dx, dx - 2 * r or None, s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        s, r, dim, heads = self.s, self.k_att // 2, self.dim, self.heads
        acc = acc_dtype(x.dtype)  # softmax and the window sum
        qkv = self.qkv(x)  # (B, 3 * c2, H, W)
        conv = F.conv2d(qkv, self.conv_weight(), None, s, self.k // 2, 1, dim)  # (B, c2, Ho, Wo)

        qkv = qkv.view(b, dim, 3, heads, h, w)
        q = qkv[:, :, 0, :, ::s, ::s] * self.scale  # (B, d, head, Ho, Wo)
        kv = F.pad(qkv[:, :, 1:], (r, r, r, r))  # (B, d, 2, head, H + 2r, W + 2r), zeros outside
        inside = F.pad(torch.ones_like(x[0, 0]), (r, r, r, r))  # (H + 2r, W + 2r), 0 outside the map
        radius = max(r, 1)
        qx = (q * self.rel_pos[0].view(1, dim, 1, 1, 1)).sum(1)  # q . R_x, (B, head, Ho, Wo)
        qy = (q * self.rel_pos[1].view(1, dim, 1, 1, 1)).sum(1)

        logits, masks = [], []
        for oy, ox, sy, sx in self._windows():
            logits.append((q * kv[:, :, 0, :, sy, sx]).sum(1) - (qx * (ox / radius) + qy * (oy / radius)))
            masks.append(inside[sy, sx])
        logits = torch.stack(logits, 1).to(acc)  # (B, k_att^2, head, Ho, Wo)
        outside = torch.stack(masks, 0).unsqueeze(1) == 0  # (k_att^2, 1, Ho, Wo)
        a = logits.masked_fill(outside, float("-inf")).softmax(1)  # the centre is always inside

        att = None
        for j, (_, _, sy, sx) in enumerate(self._windows()):
            term = a[:, j].unsqueeze(1) * kv[:, :, 1, :, sy, sx]  # (B, d, head, Ho, Wo)
            att = term if att is None else att + term
        att = att.to(x.dtype).reshape(b, dim * heads, att.shape[-2], att.shape[-1])  # channel d * head + h
        return self.act(self.bn(self.alpha.to(conv.dtype) * att + self.beta.to(conv.dtype) * conv))
