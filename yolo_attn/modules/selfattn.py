"""Self-attention blocks in the non-local style: DANet's position and channel attention (PAM, CAM, DABlock), Polarized
Self-Attention (PSA_p, PSA_s), Relation-Aware Global Attention (RGA_S, RGA_C, RGA) and the attentional channel
processing block of Fully Attentional Networks (FANChannelAttention).

Every block maps (B, C, H, W) -> (B, C, H, W); the first constructor argument is the input width ``c1``, which the
YAML parser fills in from ``from``. Each can start as the identity for fine-tuning (``IdentityStart``: off by default).
Softmaxes and normalisation statistics are computed in fp32 for half inputs; outputs keep the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import Conv

from ._common import BlockArgumentError, Conv1x1, IdentityStart, LayerNorm2d, acc_dtype, check_float, check_int

__all__ = (
    "PAM",
    "CAM",
    "DABlock",
    "PSA_p",
    "PSA_s",
    "RGASpatialRelation",
    "RGAChannelRelation",
    "RGA_S",
    "RGA_C",
    "RGA",
    "FANValueMLP",
    "FANChannelAttention",
)


# ----------------------------------------------------------------------------------------------------------------
# DANet
# ----------------------------------------------------------------------------------------------------------------
class PAM(IdentityStart):
    """Position attention module of DANet. Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene
    Segmentation", CVPR 2019.

    Every position attends to all N = H*W positions:
        Q = W_q x, K = W_k x   (B, C/r, N),   V = W_v x   (B, C, N)        1x1 convs with bias
        S = softmax_j(Q_i . K_j)   (B, N, N), no 1/sqrt(d) scaling
        y = gamma * (V S^T) + x,   gamma a learnable scalar initialised to 0
    So a new PAM is already the identity; gamma still receives a gradient and grows as training finds use for it.
    Memory is O((H*W)^2) per image wherever the attention matrix is materialised (``F.scaled_dot_product_attention``
    with scale 1 runs it; its memory-efficient GPU kernels avoid that where the head widths allow one): 400 positions
    at P5 of a 640 image are cheap, 6400 at P3 are not.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): Query/key width C / r, at least 1 (paper: 8).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, reduction: int = 8):
        super().__init__()
        check_int("PAM", "reduction", reduction)
        ck = max(c1 // reduction, 1)
        self.query = Conv1x1(c1, ck)
        self.key = Conv1x1(c1, ck)
        self.value = Conv1x1(c1, c1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """V S^T, (B, C, H, W): the attended values before the gamma-weighted residual."""
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, C/r)
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, C/r)
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, C)
        if torch.onnx.is_in_onnx_export():  # torch < 2.5's ONNX symbolic of SDPA fails on a float scale: spelt out
            out = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, 1, N, C)
        return out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gated(x, self.gamma.to(x.dtype) * self.attend(x) + x)


class CAM(IdentityStart):
    """Channel attention module of DANet. Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019.

    Channel maps attend to each other through their Gram matrix, with no projection:
        E = X X^T          (B, C, C),  X = x as (B, C, N)
        A = softmax_j(max_k E_ik - E_ij)     the paper's max-minus-energy form (= softmax_j(-E_ij))
        y = beta * (A X) + x,   beta a learnable scalar initialised to 0
    beta is the only parameter; a new CAM is the identity and beta still receives a gradient. E is accumulated in
    fp32 for half inputs (its entries are sums over H*W products, too coarse in bf16 for a softmax).

    Args:
        c1 (int): Input channels, filled in by the parser (unused: no weights depend on it).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int | None = None):
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(1))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """A, (B, C, C) in x's dtype, each row summing to 1.

        The energies are sums over H*W products and span hundreds within a row, so most of a row's weights fall
        below the smallest normal fp32 number; those are set to 0 (a change below 1.2e-38 each). Left as subnormals
        they made the CPU's product A X 30x slower (8x256x40x40: 216 ms against 7 ms for the Gram matrix).
        """
        xf = x.flatten(2).to(acc_dtype(x.dtype))  # (B, C, N)
        with torch.autocast(x.device.type, enabled=False):  # AMP would run it in half again: sums over H*W overflow
            energy = torch.bmm(xf, xf.transpose(1, 2))  # (B, C, C)
        att = torch.softmax(energy.amax(-1, keepdim=True) - energy, -1)
        return att.masked_fill(att < torch.finfo(att.dtype).tiny, 0).to(x.dtype)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """A X, (B, C, H, W): the attended channels before the beta-weighted residual."""
        return torch.bmm(self.weights(x), x.flatten(2)).view_as(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gated(x, self.beta.to(x.dtype) * self.attend(x) + x)


class DABlock(IdentityStart):
    """DANet's dual attention head as a channel-preserving block. Fu et al., "Dual Attention Network for Scene
    Segmentation", CVPR 2019.

    Two parallel branches on the reduced width c_ = C / r, summed:
        p = Conv3x3(PAM(Conv3x3(x)))        c = Conv3x3(CAM(Conv3x3'(x)))      each Conv3x3: conv + BN + ReLU
        y = W_o (p + c)                     W_o: 1x1 conv c_ -> C with bias
    The paper's head ends in the classifier (dropout + 1x1 conv to the classes); here W_o projects back to C instead
    (the adaptation that makes it a backbone block), without the dropout and the two auxiliary per-branch outputs.
    There is no residual around the block (the paper has none): it replaces x like a conv layer. ReLU, as in the
    paper (not Conv's SiLU). PAM/CAM start at gamma = beta = 0 inside. PAM's O((H*W)^2) memory applies at c_.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        reduction (int): Branch width reduction r, c_ = max(C // r, 1) (paper: 4).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, reduction: int = 4):
        super().__init__()
        check_int("DABlock", "reduction", reduction)
        c_ = max(c1 // reduction, 1)
        self.pam_in = Conv(c1, c_, 3, act=nn.ReLU())
        self.pam = PAM(c_)
        self.pam_out = Conv(c_, c_, 3, act=nn.ReLU())
        self.cam_in = Conv(c1, c_, 3, act=nn.ReLU())
        self.cam = CAM(c_)
        self.cam_out = Conv(c_, c_, 3, act=nn.ReLU())
        self.proj = Conv1x1(c_, c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pam_out(self.pam(self.pam_in(x)))
        c = self.cam_out(self.cam(self.cam_in(x)))
        return self.gated(x, self.proj(p + c))


# ----------------------------------------------------------------------------------------------------------------
# Polarized Self-Attention
# ----------------------------------------------------------------------------------------------------------------
class _PSA(IdentityStart):
    """The two PSA branches (weights only); PSA_p and PSA_s combine them."""

    def __init__(self, c1: int):
        super().__init__()
        c_ = max(c1 // 2, 1)
        self.ch_wq = Conv1x1(c1, 1, bias=False)
        self.ch_wv = Conv1x1(c1, c_, bias=False)
        self.ch_wz = Conv1x1(c_, c1, bias=False)
        self.ch_norm = nn.LayerNorm(c1)
        self.sp_wq = Conv1x1(c1, c_, bias=False)
        self.sp_wv = Conv1x1(c1, c_, bias=False)
        for conv in (self.ch_wq, self.ch_wv, self.sp_wq, self.sp_wv):  # the authors' init
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """A^ch, (B, C, 1, 1) in (0, 1)."""
        b, c = x.shape[:2]
        p = self.ch_wq(x).flatten(2).softmax(-1, dtype=acc_dtype(x.dtype)).to(x.dtype)  # (B, 1, N), softmax over H*W
        ctx = torch.bmm(x.flatten(2), p.transpose(1, 2)).unsqueeze(-1)  # (B, C, 1, 1) = X p
        z = self.ch_wz(self.ch_wv(ctx))  # W_v(X) p == W_v(X p): W_v is linear without bias
        return self.ch_norm(z.view(b, c)).sigmoid().view(b, c, 1, 1)

    def spatial_weights(self, x: torch.Tensor, a_ch: torch.Tensor | None = None) -> torch.Tensor:
        """A^sp, (B, 1, H, W) in (0, 1), of x, or of a_ch * x when the channel weights a_ch are given (PSA_s)."""
        b, c, h, w = x.shape
        g = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        if a_ch is not None:
            g = g * a_ch  # GAP(a_ch * x) == a_ch * GAP(x)
        q = self.sp_wq(g).flatten(1).softmax(-1, dtype=acc_dtype(x.dtype)).to(x.dtype)  # (B, C/2), over channels
        k = q @ self.sp_wv.weight.flatten(1)  # (B, C) = W_v^T q, so that q . W_v(x_p) = k . x_p
        if a_ch is not None:
            k = k * a_ch.view(b, c)
        return torch.bmm(k.unsqueeze(1), x.flatten(2)).view(b, 1, h, w).sigmoid()


class PSA_p(_PSA):
    """Polarized Self-Attention, parallel layout. Liu, Liu, Fan, Huang, "Polarized Self-Attention: Towards
    High-quality Pixel-wise Regression", arXiv 2107.00782, 2021.

    Channel-only branch (full resolution kept along C/2, softmax over the H*W positions):
        A^ch = sigmoid(LN(W_z((W_v x) softmax_HW(W_q x)^T)))      W_q: C -> 1, W_v: C -> C/2, W_z: C/2 -> C
    Spatial-only branch (full resolution kept along H*W, softmax over the C/2 channels):
        A^sp = sigmoid(softmax_C(GAP(W_q' x))^T (W_v' x))         W_q', W_v': C -> C/2;  A^sp (B, 1, H, W)
    Parallel composition:  y = A^ch * x + A^sp * x.
    All projections are 1x1 convs without bias with the authors' kaiming fan-in init; LN is LayerNorm over C. Both
    branches are evaluated through linearity (W_v applied to the pooled context rather than to the full map), which
    is exact and costs O(C H W). The authors' released code differs from the paper (no LayerNorm in PSA_p, softmax
    over H*W in the spatial branch): this follows the paper. Not Ultralytics' YOLOv10 ``PSA`` (another block).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gated(x, x * (self.channel_weights(x) + self.spatial_weights(x)))


class PSA_s(_PSA):
    """Polarized Self-Attention, sequential layout. Liu, Liu, Fan, Huang, "Polarized Self-Attention: Towards
    High-quality Pixel-wise Regression", arXiv 2107.00782, 2021.

    The branches of ``PSA_p`` (see there) in sequence, spatial on the channel-attended map:
        z = A^ch(x) * x,     y = A^sp(z) * z
    Evaluated without materialising z: GAP(z) = A^ch * GAP(x), and A^ch folds into the spatial branch's weights. The
    authors' released PSA_s also departs from the paper (W_z as a C/2 -> C/8 -> C bottleneck with LayerNorm and ReLU,
    softmax over H*W of W_v' x): this follows the paper. Not Ultralytics' YOLOv10 ``PSA`` (another block).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_ch = self.channel_weights(x)
        return self.gated(x, x * a_ch * self.spatial_weights(x, a_ch))


# ----------------------------------------------------------------------------------------------------------------
# Relation-Aware Global Attention
# ----------------------------------------------------------------------------------------------------------------
def _pool_matrix(n: int, g: int, like: torch.Tensor) -> torch.Tensor:
    """(g, n) matrix of adaptive average pooling along one axis: row i averages inputs floor(i n / g) ..
    ceil((i + 1) n / g) - 1, as ``F.adaptive_avg_pool2d`` does (also for g > n, where bins repeat inputs)."""
    i = torch.arange(g, device=like.device)
    start = torch.div(i * n, g, rounding_mode="floor")
    end = torch.div((i + 1) * n + g - 1, g, rounding_mode="floor")
    j = torch.arange(n, device=like.device)
    m = ((j >= start[:, None]) & (j < end[:, None])).to(like.dtype)
    return m / m.sum(1, keepdim=True)


def _to_grid(x: torch.Tensor, g: int) -> torch.Tensor:
    """Adaptive average pool (B, C, H, W) -> (B, C, g, g) as two small matmuls. No branch on H, W: an ONNX export
    with dynamic axes stays valid at every size; at H = W = g the matrices are identities and the result exact."""
    h, w = x.shape[-2:]
    return _pool_matrix(h, g, x) @ (x @ _pool_matrix(w, g, x).T)


def _to_map(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Attention map (B, 1, g, g) resized bilinearly to x's H x W (exact copy when H = W = g)."""
    return F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _conv_bn_relu(c1: int, c2: int) -> nn.Sequential:
    return nn.Sequential(Conv1x1(c1, c2, bias=False), nn.BatchNorm2d(c2), nn.ReLU())


def _rga_head(c1: int, s2: int) -> nn.Sequential:
    """W of RGA: 1x1 conv c1 -> c1 / s2, BN, ReLU, 1x1 conv -> 1, BN (the attention logit)."""
    c_ = max(c1 // s2, 1)
    return nn.Sequential(
        Conv1x1(c1, c_, bias=False),
        nn.BatchNorm2d(c_),
        nn.ReLU(),
        Conv1x1(c_, 1, bias=False),
        nn.BatchNorm2d(1),
    )


class RGASpatialRelation(nn.Module):
    """Spatial attention logits of RGA-S on a (B, C, g, g) map with N = g*g positions; (B, 1, g, g), before sigmoid.

        theta, phi, psi: 1x1 conv C -> C/s1 + BN + ReLU;   R = theta^T phi   (B, N, N)
        r_i = [R(i, :), R(:, i)]   (2N relation features per position)
        y_i = [mean_C(psi(x)_i), gg(r_i)]     gg: 1x1 conv 2N -> N/s1 + BN + ReLU
        logit_i = W(y_i)                       W: 1x1 conv (1 + N/s1) -> (1 + N/s1)/s2 + BN + ReLU + 1x1 conv -> 1 + BN
    """

    def __init__(self, c1: int, n: int, s1: int = 8, s2: int = 8):
        super().__init__()
        c_, n_ = max(c1 // s1, 1), max(n // s1, 1)
        self.theta = _conv_bn_relu(c1, c_)
        self.phi = _conv_bn_relu(c1, c_)
        self.psi = _conv_bn_relu(c1, c_)
        self.gg = _conv_bn_relu(2 * n, n_)
        self.w = _rga_head(1 + n_, s2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        rel = self.theta(x).flatten(2).transpose(1, 2) @ self.phi(x).flatten(2)  # (B, N, N)
        joint = torch.cat((rel.transpose(1, 2), rel), 1).view(b, 2 * h * w, h, w)  # at position i: [R(i,:), R(:,i)]
        own = self.psi(x).mean(1, keepdim=True)  # (B, 1, g, g)
        return self.w(torch.cat((own, self.gg(joint)), 1))


class RGAChannelRelation(nn.Module):
    """Channel attention logits of RGA-C on a (B, C, g, g) map: the C channels are the nodes, each an N = g*g
    feature; (B, C, 1, 1), before sigmoid.

        theta, phi, psi: 1x1 conv N -> N/s1 + BN + ReLU (over the node features);  R = theta^T phi   (B, C, C)
        r_i = [R(i, :), R(:, i)];   y_i = [mean(psi(x)_i), gg(r_i)]   gg: 1x1 conv 2C -> C/s1 + BN + ReLU
        logit_i = W(y_i)            W: 1x1 conv (1 + C/s1) -> (1 + C/s1)/s2 + BN + ReLU + 1x1 conv -> 1 + BN
    """

    def __init__(self, c1: int, n: int, s1: int = 8, s2: int = 8):
        super().__init__()
        c_, n_ = max(c1 // s1, 1), max(n // s1, 1)
        self.theta = _conv_bn_relu(n, n_)
        self.phi = _conv_bn_relu(n, n_)
        self.psi = _conv_bn_relu(n, n_)
        self.gg = _conv_bn_relu(2 * c1, c_)
        self.w = _rga_head(1 + c_, s2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        nodes = x.flatten(2).transpose(1, 2).unsqueeze(-1)  # (B, N, C, 1): N features of each channel node
        rel = self.theta(nodes).squeeze(-1).transpose(1, 2) @ self.phi(nodes).squeeze(-1)  # (B, C, C)
        joint = torch.cat((rel.transpose(1, 2), rel), 1).unsqueeze(-1)  # (B, 2C, C, 1)
        own = self.psi(nodes).mean(1, keepdim=True)  # (B, 1, C, 1)
        return self.w(torch.cat((own, self.gg(joint)), 1)).view(b, c, 1, 1)


def _check_rga(block: str, size, s1, s2) -> int:
    check_int(block, "s1", s1)
    check_int(block, "s2", s2)
    return check_int(block, "size", size, minimum=2)


class RGA_S(IdentityStart):
    """Spatial relation-aware global attention (RGA-S). Zhang, Lan, Zeng, Jin, Chen, "Relation-Aware Global Attention
    for Person Re-identification", CVPR 2020.

        a = sigmoid(W([mean_C(psi(x)), gg([R(i,:), R(:,i)])]))     (B, 1, H, W), see ``RGASpatialRelation``
        y = a * x
    Variable input size: the relation features have one entry per position (2N per position, N = H*W), so the
    weights depend on N and the paper trains at a fixed size. Here the relations are computed on the map adaptively
    average-pooled to a fixed ``size`` x ``size`` grid, and the attention map is resized back to H x W bilinearly.
    When H = W = size pooling and resizing are exact identities: the paper's block. Set size = imgsz / stride of
    the level (20 for P5 at imgsz 640).

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        size (int): Side of the relation grid (N = size^2); >= 2.
        s1 (int): Embedding reduction of theta/phi/psi and gg (paper: 8).
        s2 (int): Reduction inside W (paper: 8).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, size: int = 20, s1: int = 8, s2: int = 8):
        super().__init__()
        self.size = _check_rga("RGA_S", size, s1, s2)
        self.spatial = RGASpatialRelation(c1, size * size, s1, s2)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """a, (B, 1, H, W) in (0, 1)."""
        return _to_map(self.spatial(_to_grid(x, self.size)).sigmoid(), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gated(x, x * self.weights(x))


class RGA_C(IdentityStart):
    """Channel relation-aware global attention (RGA-C). Zhang, Lan, Zeng, Jin, Chen, "Relation-Aware Global Attention
    for Person Re-identification", CVPR 2020.

        a = sigmoid(W([mean(psi(x)_c), gg([R(c,:), R(:,c)])]))     (B, C, 1, 1), see ``RGAChannelRelation``
        y = a * x
    Variable input size: each channel node's features are its N = H*W values, so the weights depend on N and the
    paper trains at a fixed size. Here the relations are computed on the map adaptively average-pooled to a fixed
    ``size`` x ``size`` grid (the channel weights need no resizing). When H = W = size this is exactly the paper.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        size (int): Side of the grid that gives each channel node its N = size^2 features; >= 2.
        s1 (int): Embedding reduction of theta/phi/psi and gg (paper: 8).
        s2 (int): Reduction inside W (paper: 8).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, size: int = 20, s1: int = 8, s2: int = 8):
        super().__init__()
        self.size = _check_rga("RGA_C", size, s1, s2)
        self.channel = RGAChannelRelation(c1, size * size, s1, s2)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """a, (B, C, 1, 1) in (0, 1)."""
        return self.channel(_to_grid(x, self.size)).sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gated(x, x * self.weights(x))


class RGA(IdentityStart):
    """Relation-aware global attention, spatial then channel (RGA-SC, the paper's headline). Zhang, Lan, Zeng, Jin,
    Chen, "Relation-Aware Global Attention for Person Re-identification", CVPR 2020.

        z = a_s(x) * x,     y = a_c(z) * z          a_s: ``RGA_S``'s weights, a_c: ``RGA_C``'s (on z)
    Both relations are computed on the ``size`` x ``size`` adaptive average pool (of x, then of z); a_s is resized
    back to H x W bilinearly (see ``RGA_S``, ``RGA_C``). When H = W = size this is exactly the paper.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser.
        size (int): Side of the relation grid (N = size^2); >= 2.
        s1 (int): Embedding reduction (paper: 8).
        s2 (int): Reduction inside W (paper: 8).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, size: int = 20, s1: int = 8, s2: int = 8):
        super().__init__()
        self.size = _check_rga("RGA", size, s1, s2)
        self.spatial = RGASpatialRelation(c1, size * size, s1, s2)
        self.channel = RGAChannelRelation(c1, size * size, s1, s2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x * _to_map(self.spatial(_to_grid(x, self.size)).sigmoid(), x)
        return self.gated(x, z * self.channel(_to_grid(z, self.size)).sigmoid())


# ----------------------------------------------------------------------------------------------------------------
# Fully Attentional Networks
# ----------------------------------------------------------------------------------------------------------------
class FANValueMLP(nn.Module):
    """FAN's value MLP on a (B, C, H, W) map (the official ``Mlp`` with its depth-wise conv), tokens = pixels:
        z = fc1(u);   z = z + g * dw2(BN(GELU(dw1(z))));   out = fc2(z)
    fc1: 1x1 conv C -> hidden, fc2: hidden -> C (bias, trunc-normal std 0.02 init); dw1, dw2: 3x3 depth-wise convs
    with bias; g: per-channel scale initialised to 1.
    """

    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.fc1 = Conv1x1(c, hidden)
        self.dw1 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(hidden)
        self.dw2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.gamma = nn.Parameter(torch.ones(hidden))
        self.fc2 = Conv1x1(hidden, c)
        for fc in (self.fc1, self.fc2):  # the authors' init (nn.Linear there)
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)
        for dw in (self.dw1, self.dw2):
            nn.init.normal_(dw.weight, 0.0, (2.0 / 9) ** 0.5)  # normal(0, sqrt(2 / fan_out)), fan_out = 9 per group
            nn.init.zeros_(dw.bias)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = self.fc1(u)
        z = z + self.gamma.to(z.dtype)[:, None, None] * self.dw2(self.bn(self.act(self.dw1(z))))
        return self.fc2(z)


class FANChannelAttention(IdentityStart):
    """Attentional channel processing of Fully Attentional Networks, with its pre-norm and residual. Zhou, Yu, Xie,
    Xiao, Anandkumar, Feng, Alvarez, "Understanding The Robustness in Vision Transformers", ICML 2022.

    The second half of a FAN block (the channel-MLP replacement) on a CNN map, tokens = pixels (N = H*W):
        u = LN(x)                                         LayerNorm over C per pixel (eps 1e-6)
        per head h (C/heads channels each):  q = softmax_N(W_q u)_h   (d, N),   k = mean_d(softmax_N(u_h))   (N,)
        a_h = tau_h * sigmoid(q k)                        (d,): one weight per channel; keys are u itself
        v = LN_v(MLP_v(u))                                ``FANValueMLP`` (hidden = mlp_ratio * C), LN_v eps 1e-5
        y = x + gamma * (a * v)                           gamma per channel, initialised to eta
    W_q is a 1x1 conv C -> C (bias when qkv_bias), trunc-normal std 0.02 init; tau (temperature, init 1) scales after
    the sigmoid, as in the official code. Dropouts and drop-path (0 in the released configs) are left out; the
    token-mixing half of the FAN block is not included.

    Args:
        c1 (int): Input (= output) channels, filled in by the parser; divisible by num_heads.
        num_heads (int): Heads (official ChannelProcessing default and FAN-S/B: 8).
        mlp_ratio (float): Hidden width of the value MLP over C (paper: 4).
        qkv_bias (bool): Bias of W_q (FAN models: True).
        eta (float): Initial layer scale gamma (FAN models: 1.0).

    Shapes: x (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, c1: int, num_heads: int = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True, eta: float = 1.0):
        super().__init__()
        check_int("FANChannelAttention", "num_heads", num_heads)
        check_float("FANChannelAttention", "mlp_ratio", mlp_ratio)
        check_float("FANChannelAttention", "eta", eta, minimum=-float("inf"))
        if c1 % num_heads:
            raise BlockArgumentError(f"FANChannelAttention: width {c1} must divide by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = LayerNorm2d(c1, eps=1e-6)
        self.q = nn.Conv2d(c1, c1, 1, bias=bool(qkv_bias))
        nn.init.trunc_normal_(self.q.weight, std=0.02)
        if self.q.bias is not None:
            nn.init.zeros_(self.q.bias)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.mlp_v = FANValueMLP(c1, max(int(c1 * mlp_ratio), 1))
        self.norm_v = LayerNorm2d(c1, eps=1e-5)
        self.gamma = nn.Parameter(torch.full((c1,), float(eta)))

    def weights(self, u: torch.Tensor) -> torch.Tensor:
        """a, (B, C, 1, 1): the channel attention of the normalised map u."""
        b, c, h, w = u.shape
        shape = (b, self.num_heads, c // self.num_heads, h * w)
        q = self.q(u).reshape(shape).softmax(-1, dtype=acc_dtype(u.dtype))  # (B, heads, d, N)
        k = u.reshape(shape).softmax(-1, dtype=acc_dtype(u.dtype)).mean(2, keepdim=True)  # (B, heads, 1, N)
        a = torch.sigmoid(q @ k.transpose(-1, -2)) * self.temperature  # (B, heads, d, 1)
        return a.reshape(b, c, 1, 1).to(u.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.norm(x)
        v = self.norm_v(self.mlp_v(u))
        return self.gated(x, x + self.gamma.to(x.dtype)[:, None, None] * (self.weights(u) * v))
