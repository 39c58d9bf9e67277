"""Spatial / context attention family: Triplet Attention, Strip Pooling, LKA / VAN attention, STN, Residual Attention.

CASES feeds the generic contract tests of test_blocks.py; the tests here check each paper's equations with other
primitives (float64), parameter counts, bad arguments, ONNX export against onnxruntime and graph breaks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import trained_bn

from yolo_attn.modules._common import IdentityStart
from yolo_attn.modules.spatial import (
    LKA,
    STN,
    PreActBottleneck,
    ResidualAttention,
    StripPooling,
    TripletAttention,
    VANAttention,
    affine_grid,
)


def _same(c):
    return lambda b, h, w: torch.randn(b, c, h, w), lambda b, h, w: (b, c, h, w)


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "TripletAttention": (lambda: TripletAttention(32), *_same(32)),
    "StripPooling": (lambda: StripPooling(32), *_same(32)),
    "LKA": (lambda: LKA(32), *_same(32)),
    "VANAttention": (lambda: VANAttention(32), *_same(32)),
    "STN": (lambda: STN(32), *_same(32)),
    "ResidualAttention": (lambda: ResidualAttention(32), *_same(32)),
    "ResidualAttention-levels3": (lambda: ResidualAttention(16, levels=3), *_same(16)),
}


def _bn(bn, x):
    """Eval-mode batch norm written out with plain tensor ops."""
    shape = (1, -1, 1, 1)
    scale = bn.weight.view(shape) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return (x - bn.running_mean.view(shape)) * scale + bn.bias.view(shape)


def _params(m) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------------------------
# Triplet Attention
# ----------------------------------------------------------------------------------------------------------------
def test_triplet_attention_matches_the_rotated_branches():
    """The paper's form: rotate the map so the pooled dim comes first, Z-pool (max ; mean), conv, BN, sigmoid, scale,
    rotate back; average the three branches. C, H, W all differ and the kernels are random, so a wrongly oriented
    plane or kernel shows."""
    torch.manual_seed(0)
    m = trained_bn(TripletAttention(6), 0.1).double().eval()
    for gate in (m.cw, m.hc, m.hw):
        torch.nn.init.normal_(gate.conv.weight, std=0.3)
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64)

    def branch(gate, xr):
        z = torch.cat((xr.max(1, keepdim=True).values, xr.mean(1, keepdim=True)), 1)
        return xr * torch.sigmoid(_bn(gate.bn, F.conv2d(z, gate.conv.weight, padding=3)))

    out_cw = branch(m.cw, x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)  # (B, H, C, W): C-W interaction
    out_hc = branch(m.hc, x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)  # (B, W, H, C): H-C interaction
    out_hw = branch(m.hw, x)
    with torch.no_grad():
        assert torch.allclose(m(x), (out_cw + out_hc + out_hw) / 3, atol=1e-12)


def test_triplet_attention_parameters():
    # three 7x7 2 -> 1 convs without bias, each with a 1-channel BN: 3 * (98 + 2), whatever the width
    assert _params(TripletAttention(256)) == _params(TripletAttention(16)) == 300
    assert _params(TripletAttention(64, kernel_size=3)) == 3 * (18 + 2)
    assert TripletAttention(64).hw.conv.kernel_size == (7, 7)


# ----------------------------------------------------------------------------------------------------------------
# Strip Pooling
# ----------------------------------------------------------------------------------------------------------------
def test_strip_pooling_equations():
    torch.manual_seed(0)
    m = trained_bn(StripPooling(8), 0.1).double().eval()
    x = torch.randn(2, 8, 9, 6, dtype=torch.float64)
    h, w = x.shape[-2:]
    yh = _bn(m.bn1, F.conv2d(F.adaptive_avg_pool2d(x, (None, 1)), m.conv1.weight, padding=(1, 0)))  # (B, C, H, 1)
    yv = _bn(m.bn2, F.conv2d(F.adaptive_avg_pool2d(x, (1, None)), m.conv2.weight, padding=(0, 1)))  # (B, C, 1, W)
    fused = torch.relu(yh.expand(-1, -1, h, w) + yv.expand(-1, -1, h, w))
    weights = torch.sigmoid(F.conv2d(fused, m.conv3.weight, m.conv3.bias))
    with torch.no_grad():
        assert torch.allclose(m(x), x * weights, atol=1e-12)
        assert ((m.weights(x) > 0) & (m.weights(x) < 1)).all()


def test_strip_pooling_has_no_channel_reduction():
    m = StripPooling(256)
    assert m.conv1.out_channels == m.conv2.out_channels == m.conv3.in_channels == 256  # official SPBlock: mid = out
    assert m.conv1.kernel_size == (3, 1) and m.conv2.kernel_size == (1, 3)
    # two 3-tap 1D convs C -> C (no bias), their BNs, a 1x1 conv C -> C with bias
    assert _params(m) == 2 * 256 * 256 * 3 + 2 * 2 * 256 + 256 * 256 + 256 == 460032


# ----------------------------------------------------------------------------------------------------------------
# LKA / VAN attention
# ----------------------------------------------------------------------------------------------------------------
def test_lka_is_one_large_depthwise_kernel():
    """DW 5x5 then DW 7x7 dilation 3 is one 23x23 depth-wise kernel K[3a + i, 3b + j] = sum w7[a, b] w5[i, j]
    (with bias b7 + b5 * sum(w7)): exact away from the border, where the intermediate map's zero padding is not
    read. Then Attention = 1x1 conv of it and y = Attention * x."""
    torch.manual_seed(0)
    c = 4
    m = LKA(c).double().eval()
    w5, b5 = m.conv0.weight, m.conv0.bias  # (C, 1, 5, 5)
    w7, b7 = m.conv_spatial.weight, m.conv_spatial.bias  # (C, 1, 7, 7)
    assert w5.shape[-1] == 5 and w7.shape[-1] == 7 and m.conv_spatial.dilation == (3, 3)
    big = torch.zeros(c, 1, 23, 23, dtype=torch.float64)
    for a in range(7):
        for b in range(7):
            big[:, :, 3 * a : 3 * a + 5, 3 * b : 3 * b + 5] += w7[:, :, a : a + 1, b : b + 1] * w5
    bias = b7 + b5 * w7.sum((1, 2, 3))
    x = torch.randn(2, c, 30, 28, dtype=torch.float64)
    with torch.no_grad():
        spatial = F.conv2d(x, big, bias, padding=11, groups=c)
        attn = F.conv2d(spatial, m.conv1.weight, m.conv1.bias)
        inner = (slice(None), slice(None), slice(9, -9), slice(9, -9))
        assert torch.allclose(m.attention(x)[inner], attn[inner], atol=1e-10)
        assert torch.allclose(m(x), m.attention(x) * x, atol=1e-12)


def test_van_attention_unit_has_its_own_shortcut():
    torch.manual_seed(0)
    m = VANAttention(8).double().eval()
    x = torch.randn(2, 8, 11, 7, dtype=torch.float64)
    with torch.no_grad():
        u = F.gelu(F.conv2d(x, m.proj_1.weight, m.proj_1.bias))
        u = m.spatial_gating_unit.attention(u) * u
        assert torch.allclose(m(x), x + F.conv2d(u, m.proj_2.weight, m.proj_2.bias), atol=1e-12)


def test_lka_and_van_parameters():
    c = 256
    lka = c * 25 + c + c * 49 + c + c * c + c  # DW 5x5, DW-D 7x7, 1x1, all with bias: the official layer sizes
    assert _params(LKA(c)) == lka == 85248
    assert _params(VANAttention(c)) == lka + 2 * (c * c + c) == 216832
    small = LKA(16, kernel_size=10, dilation=2)  # DW (2d - 1) = 3x3, DW-D ceil(K / d) = 5x5 with dilation 2
    assert small.conv0.kernel_size == (3, 3) and small.conv_spatial.kernel_size == (5, 5)
    assert small.conv_spatial.padding == (4, 4)


# ----------------------------------------------------------------------------------------------------------------
# STN
# ----------------------------------------------------------------------------------------------------------------
def _stn_with_theta(c, theta) -> STN:
    """An STN whose localisation net outputs a fixed theta (zero last-layer weights, theta as bias)."""
    m = STN(c).double().eval()
    with torch.no_grad():
        m.fc2.bias.copy_(torch.tensor(theta, dtype=torch.float64).flatten())
    return m


def test_stn_starts_as_the_identity():
    m = STN(16)
    assert not isinstance(m, IdentityStart)  # a zero gate would freeze theta (see the docstring)
    for mode, shape in (("train", (2, 16, 13, 9)), ("train", (1, 16, 5, 4)), ("eval", (1, 16, 1, 1))):
        getattr(m, mode)()
        x = torch.randn(shape)
        assert torch.allclose(m(x), x, atol=1e-5)


def test_stn_grid_matches_torch_affine_grid():
    torch.manual_seed(0)
    for h, w in ((5, 7), (1, 1), (13, 9)):
        theta = torch.randn(3, 2, 3, dtype=torch.float64)
        ref = F.affine_grid(theta, (3, 1, h, w), align_corners=False)
        assert torch.allclose(affine_grid(theta, h, w), ref, atol=1e-12)


def test_stn_samples_bilinearly_with_zero_padding():
    theta = [[0.7, 0.2, 0.1], [-0.1, 0.9, -0.2]]
    m = _stn_with_theta(8, theta)
    x = torch.randn(2, 8, 10, 6, dtype=torch.float64)
    grid = F.affine_grid(torch.tensor(theta, dtype=torch.float64).expand(2, 2, 3), (2, 8, 10, 6), align_corners=False)
    with torch.no_grad():
        assert torch.allclose(m(x), F.grid_sample(x, grid, align_corners=False), atol=1e-12)
        # a flip about the vertical axis is exact with pixel-centre (align_corners=False) coordinates
        assert torch.allclose(_stn_with_theta(8, [[-1, 0, 0], [0, 1, 0]])(x), x.flip(3), atol=1e-12)
        # a shift by one pixel (2 / W in normalised units) reads the next column; outside the map reads 0
        y = _stn_with_theta(8, [[1, 0, 2 / 6], [0, 1, 0]])(x)
        assert torch.allclose(y[..., :-1], x[..., 1:], atol=1e-12)
        assert torch.equal(y[..., -1], torch.zeros_like(y[..., -1]))


def test_stn_regresses_theta_from_the_input_and_learns():
    torch.manual_seed(0)
    m = STN(16, reduction=2)
    assert m.loc[0].out_channels == 8 and m.fc2.out_features == 6
    x = torch.randn(2, 16, 12, 10)
    m(x).square().sum().backward()
    assert m.fc2.weight.grad.abs().sum() > 0  # the zero-initialised regressor gets a gradient
    torch.nn.init.normal_(m.fc2.weight, std=0.1)
    theta = m.theta(x)
    assert theta.shape == (2, 2, 3) and not torch.allclose(theta[0], theta[1])  # per-sample transforms


def test_stn_parameters():
    mid = 256 // 8
    expected = 256 * mid * 9 + 2 * mid + mid * mid * 9 + 2 * mid + (mid * mid + mid) + (mid * 6 + 6)
    assert _params(STN(256)) == expected == 84326


# ----------------------------------------------------------------------------------------------------------------
# Residual Attention
# ----------------------------------------------------------------------------------------------------------------
def test_pre_activation_bottleneck_equation():
    torch.manual_seed(0)
    u = trained_bn(PreActBottleneck(16), 0.1).double().eval()
    x = torch.randn(2, 16, 7, 5, dtype=torch.float64)
    y = F.conv2d(torch.relu(_bn(u.bn1, x)), u.conv1.weight)
    y = F.conv2d(torch.relu(_bn(u.bn2, y)), u.conv2.weight, padding=1)
    y = F.conv2d(torch.relu(_bn(u.bn3, y)), u.conv3.weight)
    with torch.no_grad():
        assert torch.allclose(u(x), x + y, atol=1e-12)
    assert u.conv1.out_channels == 4  # bottleneck width C / 4


def _n_units(seq) -> int:
    return sum(isinstance(m, PreActBottleneck) for m in seq.modules())


@pytest.mark.parametrize("levels, mask_units", [(3, 8), (2, 5), (1, 2)])
def test_residual_attention_structure_follows_the_official_prototxt(levels, mask_units):
    """Official Attention-56 (Caffe): stage 1 (3 pools) has mask units res1_1, res2_1, res3_1, res3_2, skip res1,
    skip res2, up res2_1, res1_1 (8); stage 2 (2 pools) 5; stage 3 (1 pool) res1_1, res1_2 (2)."""
    m = ResidualAttention(16, levels=levels)
    mask = _n_units(m.down) + _n_units(m.bottom) + _n_units(m.skip) + _n_units(m.up)
    assert mask == mask_units
    assert (_n_units(m.pre), _n_units(m.trunk), _n_units(m.post)) == (1, 2, 1)  # p = 1, t = 2
    assert (m.pool.kernel_size, m.pool.stride) == (3, 2)  # pool1_3x3_s2 ... max-pools
    assert _n_units(ResidualAttention(16, levels, p=2, t=1, r=2)) == 2 + 1 + 2 + 2 * (2 * levels) + (levels - 1)


def test_residual_attention_learning():
    """y = post((1 + M) * T) with M the soft mask in (0, 1) and T the trunk output."""
    torch.manual_seed(0)
    m = trained_bn(ResidualAttention(16, levels=2), 0.1).eval()
    got = {}
    m.trunk.register_forward_hook(lambda mod, i, o: got.__setitem__("T", o))
    m.mask_head.register_forward_hook(lambda mod, i, o: got.__setitem__("M", o))
    m.post.register_forward_pre_hook(lambda mod, i: got.__setitem__("H", i[0]))
    x = torch.randn(2, 16, 11, 9)
    with torch.no_grad():
        y = m(x)
        assert torch.allclose(got["H"], (1 + got["M"]) * got["T"], atol=1e-6)
        assert ((got["M"] > 0) & (got["M"] < 1)).all() and got["M"].shape == x.shape
        assert torch.allclose(y, m.post(got["H"]))
        # with the mask's last conv at zero, M = 1/2 everywhere: y = post(1.5 * trunk(pre(x)))
        torch.nn.init.zeros_(m.mask_head[-2].weight)
        assert torch.allclose(m(x), m.post(1.5 * m.trunk(m.pre(x))), atol=1e-6)


def test_residual_attention_mask_levels_and_exact_upsampling():
    """Each level is ceil(H / 2) x ceil(W / 2) of the one above (max-pool 3x3 stride 2); 1 x 1 stays 1 x 1, so more
    levels than the map can halve still work; top-down comes back to the exact (odd) size."""
    m = ResidualAttention(8, levels=4).train()
    sizes = []
    for d in m.down:
        d.register_forward_hook(lambda mod, i, o: sizes.append(tuple(o.shape[-2:])))
    x = torch.randn(1, 8, 13, 9, requires_grad=True)  # batch 1, training: the 1 x 1 levels need PooledBatchNorm2d
    y = m(x)
    assert sizes == [(7, 5), (4, 3), (2, 2), (1, 1)] and y.shape == x.shape
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    for b, h, w in ((1, 1, 1), (2, 4, 4), (1, 3, 2)):
        assert m(torch.randn(b, 8, h, w)).shape == (b, 8, h, w)


def test_residual_attention_parameters():
    c, mid = 256, 64
    unit = 2 * c + c * mid + 2 * mid + mid * mid * 9 + 2 * mid + mid * c  # BN, 1x1, BN, 3x3, BN, 1x1 (no bias)
    head = 2 * c + c * c + 2 * c + c * c  # BN, 1x1, BN, 1x1 (no bias, as the prototxt's linear_1 / linear_2)
    assert _params(ResidualAttention(c)) == (1 + 2 + 5 + 1) * unit + head == 765696
    assert _params(ResidualAttention(c, levels=3)) == (1 + 2 + 8 + 1) * unit + head


# ----------------------------------------------------------------------------------------------------------------
# Arguments, export, compile
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: TripletAttention(32, kernel_size=4), "TripletAttention: kernel_size must be odd"),
        (lambda: TripletAttention(32, kernel_size=0), "TripletAttention: kernel_size"),
        (lambda: LKA(32, kernel_size=8, dilation=2), "LKA: ceil"),
        (lambda: LKA(32, dilation=0), "LKA: dilation"),
        (lambda: VANAttention(32, kernel_size=2), "LKA: kernel_size"),
        (lambda: STN(32, reduction=0), "STN: reduction"),
        (lambda: STN(32, reduction=2.5), "STN: reduction"),
        (lambda: ResidualAttention(32, levels=0), "ResidualAttention: levels"),
        (lambda: ResidualAttention(32, p=-1), "ResidualAttention: p"),
        (lambda: ResidualAttention(32, t=0), "ResidualAttention: t"),
        (lambda: ResidualAttention(32, r=True), "ResidualAttention: r"),
        (lambda: StripPooling(0), "StripPooling: c1"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()
