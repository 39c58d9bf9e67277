"""Self-attention blocks of yolo_attn/modules/selfattn.py: DANet (PAM, CAM, DABlock), Polarized Self-Attention
(PSA_p, PSA_s), RGA (RGA_S, RGA_C, RGA) and FAN's channel processing (FANChannelAttention).

The generic contract tests of tests/test_blocks.py run on CASES; below, each paper's equations written with other
primitives in float64, the official widths and parameter counts, argument checks, ONNX and torch.compile.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from yolo_attn.modules._common import BlockArgumentError
from yolo_attn.modules.selfattn import (
    CAM,
    PAM,
    RGA,
    RGA_C,
    RGA_S,
    DABlock,
    FANChannelAttention,
    PSA_p,
    PSA_s,
    _to_grid,
)


def _randomise(m: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """A 'trained' block: conv weights keep their init; every 1-D parameter (norm affines, biases, gamma/beta, layer
    scales, temperatures) and the BN running statistics get random values, so no term is trivially 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1 or p.shape[1:] == (1, 1):  # also the (heads, 1, 1) temperature
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
        for name, buf in m.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.2)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return m


def _attention_on(m: torch.nn.Module) -> torch.nn.Module:
    """PAM's gamma and CAM's beta moved off their zero init, so the contract tests exercise the attention paths (the
    zero init itself is tested below)."""
    with torch.no_grad():
        for sub in m.modules():
            if isinstance(sub, PAM):
                sub.gamma.fill_(0.5)
            elif isinstance(sub, CAM):
                sub.beta.fill_(0.5)
    return m


def _same(c):
    return lambda b, h, w: torch.randn(b, c, h, w), lambda b, h, w: (b, c, h, w)


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W)), as in tests/test_blocks.py
CASES = {
    "PAM": (lambda: _attention_on(PAM(32)), *_same(32)),
    "CAM": (lambda: _attention_on(CAM(32)), *_same(32)),
    "DABlock": (lambda: _attention_on(DABlock(64)), *_same(64)),
    "PSA_p": (lambda: PSA_p(32), *_same(32)),
    "PSA_s": (lambda: PSA_s(32), *_same(32)),
    "RGA_S": (lambda: RGA_S(32, size=6), *_same(32)),
    "RGA_C": (lambda: RGA_C(32, size=6), *_same(32)),
    "RGA": (lambda: RGA(32, size=6), *_same(32)),
    "FANChannelAttention": (lambda: FANChannelAttention(32, num_heads=4), *_same(32)),
}


def _nparams(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _conv1x1(x, conv):
    """A 1x1 conv as an einsum over channels (another primitive than F.conv2d)."""
    y = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    return y if conv.bias is None else y + conv.bias[:, None, None]


# ----------------------------------------------------------------------------------------------------------------
# DANet
# ----------------------------------------------------------------------------------------------------------------
def test_pam_equations():
    m = _randomise(PAM(16)).double().eval()
    x = torch.randn(2, 16, 7, 5, dtype=torch.float64)
    q, k, v = (_conv1x1(x, c).flatten(2) for c in (m.query, m.key, m.value))  # (B, C', N)
    s = torch.softmax(torch.einsum("bci,bcj->bij", q, k), -1)  # S_ij = softmax_j(Q_i . K_j), no scaling
    out = torch.einsum("bcj,bij->bci", v, s).reshape(x.shape)
    with torch.no_grad():
        assert torch.allclose(m(x), m.gamma * out + x, atol=1e-10)
    assert m.query.out_channels == m.key.out_channels == 2 and m.value.out_channels == 16  # C/8, C/8, C


def test_cam_equations():
    m = _randomise(CAM(16)).double()
    x = torch.randn(2, 16, 7, 5, dtype=torch.float64) * 2
    xs = x.flatten(2)
    e = xs @ xs.transpose(1, 2)
    # softmax is shift-invariant per row: softmax(max - E) = softmax(-E)
    out = (torch.softmax(-e, -1) @ xs).reshape(x.shape)
    with torch.no_grad():
        assert torch.allclose(m(x), m.beta * out + x, atol=1e-10)
    assert _nparams(CAM(256)) == 1


def test_cam_weights_hold_no_subnormals():
    """Realistic energies push most softmax weights below fp32's smallest normal number; CAM sets them to 0 (they
    slow the CPU's matrix product 30x) and the output stays that of the plain softmax."""
    m = _randomise(CAM(32))
    x = torch.randn(2, 32, 20, 20) * 2
    xs = x.flatten(2)
    e = xs @ xs.transpose(1, 2)
    plain = torch.softmax(e.amax(-1, keepdim=True) - e, -1)
    tiny = torch.finfo(torch.float32).tiny
    assert ((plain > 0) & (plain < tiny)).any()  # the input does produce subnormal weights
    with torch.no_grad():
        w = m.weights(x)
        assert not ((w > 0) & (w < tiny)).any()
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 32))
        torch.testing.assert_close(m(x), m.beta * (plain @ xs).view_as(x) + x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [PAM, CAM])
def test_zero_init_is_identity_but_learns(cls):
    m = cls(16).train()
    x = torch.randn(2, 16, 6, 5, requires_grad=True)
    y = m(x)
    assert torch.equal(y, x)
    y.square().sum().backward()
    scale = m.gamma if cls is PAM else m.beta
    assert scale.grad is not None and scale.grad.abs() > 0


def test_pam_and_cam_widths_and_parameters():
    # PAM at C = 256: 1x1 convs C -> C/8 (query, key) and C -> C (value), with bias, plus gamma
    assert _nparams(PAM(256)) == 2 * (256 * 32 + 32) + (256 * 256 + 256) + 1 == 82_241
    assert PAM(16, reduction=32).query.out_channels == 1  # at least one query channel


def test_dablock_structure_and_start():
    m = DABlock(256)
    c_ = 64  # C / 4
    for conv in (m.pam_in, m.cam_in):
        assert conv.conv.in_channels == 256 and conv.conv.out_channels == c_ and conv.conv.kernel_size == (3, 3)
    for conv in (m.pam_in, m.pam_out, m.cam_in, m.cam_out):
        assert isinstance(conv.act, torch.nn.ReLU) and conv.conv.bias is None
    assert m.pam.query.out_channels == 8 and m.proj.kernel_size == (1, 1) and m.proj.out_channels == 256
    conv3 = lambda ci, co: ci * co * 9 + 2 * co  # noqa: E731  (3x3 conv, no bias, + BN)
    expected = 2 * conv3(256, c_) + 2 * conv3(c_, c_) + _nparams(PAM(c_)) + 1 + (c_ * 256 + 256)
    assert _nparams(m) == expected == 390_994
    # gamma = beta = 0: PAM and CAM pass their input, the block is proj(conv51(conv5a x) + conv52(conv5c x))
    m = _randomise(DABlock(32)).eval()
    with torch.no_grad():
        m.pam.gamma.zero_(), m.cam.beta.zero_()
        x = torch.randn(2, 32, 9, 7)
        ref = m.proj(m.pam_out(m.pam_in(x)) + m.cam_out(m.cam_in(x)))
        assert torch.allclose(m(x), ref, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Polarized Self-Attention
# ----------------------------------------------------------------------------------------------------------------
def _psa_channel(m, x):
    """A^ch = sigmoid(LN(W_z(W_v(X) softmax_HW(W_q(X))^T))), the full-resolution W_v(X) of the paper."""
    b, c = x.shape[:2]
    v = _conv1x1(x, m.ch_wv).flatten(2)  # (B, C/2, N)
    p = torch.softmax(_conv1x1(x, m.ch_wq).flatten(2), -1)  # (B, 1, N)
    z = torch.einsum("oc,bc->bo", m.ch_wz.weight[:, :, 0, 0], (v * p).sum(-1))
    return torch.sigmoid(F.layer_norm(z, (c,), m.ch_norm.weight, m.ch_norm.bias, m.ch_norm.eps)).view(b, c, 1, 1)


def _psa_spatial(m, x):
    """A^sp = sigmoid(softmax_C(GAP(W_q(X))) W_v(X)), one weight per position."""
    q = torch.softmax(_conv1x1(x, m.sp_wq).mean((2, 3)), -1)  # (B, C/2)
    v = _conv1x1(x, m.sp_wv)  # (B, C/2, H, W)
    return torch.sigmoid(torch.einsum("bc,bchw->bhw", q, v)).unsqueeze(1)


def test_psa_equations():
    x = torch.randn(2, 16, 7, 5, dtype=torch.float64)
    p = _randomise(PSA_p(16)).double()
    s = _randomise(PSA_s(16)).double()
    with torch.no_grad():
        assert torch.allclose(p(x), _psa_channel(p, x) * x + _psa_spatial(p, x) * x, atol=1e-10)
        z = _psa_channel(s, x) * x
        assert torch.allclose(s(x), _psa_spatial(s, z) * z, atol=1e-10)  # spatial branch on the channel-attended map


def test_psa_widths_and_parameters():
    m = PSA_p(256)
    assert (m.ch_wq.out_channels, m.ch_wv.out_channels, m.ch_wz.out_channels) == (1, 128, 256)
    assert (m.sp_wq.out_channels, m.sp_wv.out_channels) == (128, 128)
    assert all(conv.bias is None for conv in (m.ch_wq, m.ch_wv, m.ch_wz, m.sp_wq, m.sp_wv))
    # W_q C->1, four C x C/2 projections, LayerNorm over C
    assert _nparams(m) == _nparams(PSA_s(256)) == 256 + 4 * 256 * 128 + 2 * 256 == 131_840


def test_psa_attention_ranges():
    m = PSA_p(16).eval()
    x = torch.randn(2, 16, 9, 6)
    with torch.no_grad():
        a_ch, a_sp = m.channel_weights(x), m.spatial_weights(x)
    assert a_ch.shape == (2, 16, 1, 1) and a_sp.shape == (2, 1, 9, 6)
    assert ((a_ch > 0) & (a_ch < 1)).all() and ((a_sp > 0) & (a_sp < 1)).all()


# ----------------------------------------------------------------------------------------------------------------
# RGA
# ----------------------------------------------------------------------------------------------------------------
def _stack_relations(r):
    """(B, M, M) relations -> (B, 2M, M): column i holds [R(i, :), R(:, i)] (node i's outgoing then incoming)."""
    return torch.cat((r, r.transpose(1, 2)), 2).transpose(1, 2)


def _rga_spatial_reference(sp, x):
    b, c, h, w = x.shape
    th, ph = sp.theta(x).flatten(2), sp.phi(x).flatten(2)
    r = torch.einsum("bci,bcj->bij", th, ph)  # R(i, j) = theta_i . phi_j over the positions
    joint = _stack_relations(r).reshape(b, 2 * h * w, h, w)
    y = torch.cat((sp.psi(x).mean(1, keepdim=True), sp.gg(joint)), 1)
    return torch.sigmoid(sp.w(y))  # (B, 1, H, W)


def _rga_channel_reference(ch, x):
    b, c, h, w = x.shape
    nodes = x.reshape(b, c, h * w).permute(0, 2, 1)[..., None]  # (B, N, C, 1)
    th, ph = ch.theta(nodes)[..., 0], ch.phi(nodes)[..., 0]  # (B, N/s1, C)
    r = torch.einsum("bki,bkj->bij", th, ph)  # R(i, j) over the channels
    joint = _stack_relations(r)[..., None]  # (B, 2C, C, 1)
    y = torch.cat((ch.psi(nodes).mean(1, keepdim=True), ch.gg(joint)), 1)
    return torch.sigmoid(ch.w(y)).reshape(b, c, 1, 1)


def test_rga_equations_at_the_grid_size():
    """H = W = size: no pooling, no resizing, the paper's RGA-S, RGA-C and RGA-SC."""
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    s = _randomise(RGA_S(16, size=6)).double().eval()
    c = _randomise(RGA_C(16, size=6), seed=2).double().eval()
    sc = RGA(16, size=6).double().eval()
    sc.spatial.load_state_dict(s.spatial.state_dict())
    sc.channel.load_state_dict(c.channel.state_dict())
    with torch.no_grad():
        ys = _rga_spatial_reference(s.spatial, x) * x
        assert torch.allclose(s(x), ys, atol=1e-10)
        assert torch.allclose(c(x), _rga_channel_reference(c.channel, x) * x, atol=1e-10)
        assert torch.allclose(sc(x), _rga_channel_reference(c.channel, ys) * ys, atol=1e-10)  # spatial, then channel


def test_rga_relations_are_asymmetric_and_both_directions_count():
    """theta != phi, so R(i, j) != R(j, i): swapping the two halves of the stacked relations changes the result."""
    torch.manual_seed(0)
    sp = _randomise(RGA_S(8, size=4)).double().eval().spatial
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        th, ph = sp.theta(x).flatten(2), sp.phi(x).flatten(2)
        r = th.transpose(1, 2) @ ph
        assert not torch.allclose(r, r.transpose(1, 2))
        ref = _rga_spatial_reference(sp, x)
        sp.gg[0].weight.copy_(sp.gg[0].weight.roll(16, 1))  # exchange the weights of outgoing and incoming parts
        assert not torch.allclose(ref, _rga_spatial_reference(sp, x))


@pytest.mark.parametrize("hw", [(13, 9), (4, 4), (1, 1), (40, 40), (6, 6)])
def test_rga_grid_pooling_is_adaptive_average_pooling(hw):
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    assert torch.allclose(_to_grid(x, 6), F.adaptive_avg_pool2d(x, 6), atol=1e-12)


def test_rga_variable_size_pools_then_resizes():
    m = _randomise(RGA_S(16, size=6)).eval()
    x = torch.randn(2, 16, 13, 9)
    with torch.no_grad():
        a = torch.sigmoid(m.spatial(F.adaptive_avg_pool2d(x, 6)))
        ref = x * F.interpolate(a, size=(13, 9), mode="bilinear", align_corners=False)
        assert torch.allclose(m(x), ref, atol=1e-6)
        c = _randomise(RGA_C(16, size=6)).eval()
        assert torch.allclose(c(x), x * torch.sigmoid(c.channel(F.adaptive_avg_pool2d(x, 6))), atol=1e-6)


def test_rga_widths_and_parameters():
    """The official module at C = 256 with N = 20 x 20 positions and s1 = s2 = 8 (1x1 convs without bias + BN)."""
    c, n, s = 256, 400, 8
    cbr = lambda ci, co: ci * co + 2 * co  # noqa: E731
    head = lambda ci: cbr(ci, ci // s) + (ci // s) + 2  # noqa: E731  (conv -> ci/s2 + BN, conv -> 1 + BN(1))
    spatial = 3 * cbr(c, c // s) + cbr(2 * n, n // s) + head(1 + n // s)
    channel = 3 * cbr(n, n // s) + cbr(2 * c, c // s) + head(1 + c // s)
    assert _nparams(RGA_S(c)) == spatial == 65_194
    assert _nparams(RGA_C(c)) == channel == 76_894
    assert _nparams(RGA(c)) == spatial + channel
    m = RGA(c)
    assert m.spatial.gg[0].in_channels == 800 and m.spatial.w[0].out_channels == 6
    assert m.channel.theta[0].in_channels == 400 and m.channel.w[0].out_channels == 4
    assert RGA_S(16, size=2).spatial.w[0].out_channels == 1  # tiny widths keep at least one channel


# ----------------------------------------------------------------------------------------------------------------
# FAN channel processing
# ----------------------------------------------------------------------------------------------------------------
def _fan_reference(m, x):
    """Token layout (B, N, C) with F.layer_norm / F.linear, the channel attention per head from softmax-normalised
    queries and keys over the tokens; the value MLP's depth-wise convs on the (H, W) token grid."""
    b, c, h, w = x.shape
    heads, d = m.num_heads, c // m.num_heads
    t = x.flatten(2).transpose(1, 2)  # (B, N, C)
    u = F.layer_norm(t, (c,), m.norm.weight, m.norm.bias, 1e-6)
    q = F.linear(u, m.q.weight[:, :, 0, 0], m.q.bias).softmax(1).reshape(b, h * w, heads, d)
    k = u.softmax(1).reshape(b, h * w, heads, d).mean(-1)  # (B, N, heads)
    a = torch.sigmoid(torch.einsum("bnhd,bnh->bhd", q, k)) * m.temperature.view(heads, 1)  # (B, heads, d)
    mlp = m.mlp_v
    z = F.linear(u, mlp.fc1.weight[:, :, 0, 0], mlp.fc1.bias)  # (B, N, hidden)
    zi = z.transpose(1, 2).reshape(b, -1, h, w)
    dw = F.conv2d(zi, mlp.dw1.weight, mlp.dw1.bias, padding=1, groups=zi.shape[1])
    dw = F.conv2d(mlp.bn(F.gelu(dw)), mlp.dw2.weight, mlp.dw2.bias, padding=1, groups=zi.shape[1])
    z = z + mlp.gamma * dw.flatten(2).transpose(1, 2)
    v = F.layer_norm(F.linear(z, mlp.fc2.weight[:, :, 0, 0], mlp.fc2.bias), (c,), m.norm_v.weight, m.norm_v.bias, 1e-5)
    y = t + m.gamma * (a.reshape(b, 1, c) * v)
    return y.transpose(1, 2).reshape(b, c, h, w)


def test_fan_channel_processing_equations():
    m = _randomise(FANChannelAttention(16, num_heads=4, mlp_ratio=2)).double().eval()
    x = torch.randn(2, 16, 7, 5, dtype=torch.float64) * 3 + 1
    with torch.no_grad():
        assert torch.allclose(m(x), _fan_reference(m, x), atol=1e-10)


def test_fan_attention_is_per_channel_and_temperature_scales_after_sigmoid():
    m = FANChannelAttention(16, num_heads=2).eval()
    with torch.no_grad():
        m.temperature.copy_(torch.tensor([2.0, 0.5]).view(2, 1, 1))
        a = m.weights(m.norm(torch.randn(3, 16, 6, 4)))
    # softmax-normalised queries and keys are positive, so q . k > 0 and sigmoid(q . k) lies in (1/2, 1)
    assert a.shape == (3, 16, 1, 1)
    assert ((a[:, :8] > 1) & (a[:, :8] < 2)).all()  # head 0: tau = 2
    assert ((a[:, 8:] > 0.25) & (a[:, 8:] < 0.5)).all()  # head 1: tau = 0.5


def test_fan_widths_parameters_and_init():
    m = FANChannelAttention(256)
    c, hid = 256, 1024
    # pre-norm LN, W_q (bias), temperature (8 heads), fc1, 2 depth-wise 3x3 (+bias), BN, MLP gamma, fc2, LN_v, gamma
    expected = 2 * c + (c * c + c) + 8 + (c * hid + hid) + 2 * (9 * hid + hid) + 2 * hid + hid + (hid * c + c)
    expected += 2 * c + c
    assert _nparams(m) == expected == 616_200
    assert m.num_heads == 8 and m.norm.eps == 1e-6 and m.norm_v.eps == 1e-5
    assert torch.all(m.gamma == 1) and torch.all(m.temperature == 1) and torch.all(m.mlp_v.gamma == 1)
    assert m.mlp_v.dw1.groups == hid and m.mlp_v.dw1.kernel_size == (3, 3)
    assert m.q.weight.std() < 0.03  # trunc-normal std 0.02
    assert _nparams(FANChannelAttention(256, qkv_bias=False)) == expected - c


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PAM(32, reduction=0), "PAM: reduction"),
        (lambda: DABlock(32, reduction=1.5), "DABlock: reduction"),
        (lambda: RGA_S(32, size=1), "RGA_S: size"),
        (lambda: RGA_C(32, s1=0), "RGA_C: s1"),
        (lambda: RGA(32, s2=True), "RGA: s2"),
        (lambda: FANChannelAttention(30, num_heads=8), "num_heads"),
        (lambda: FANChannelAttention(32, num_heads=0), "FANChannelAttention: num_heads"),
        (lambda: FANChannelAttention(32, mlp_ratio=0), "FANChannelAttention: mlp_ratio"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(BlockArgumentError, match=match):
        make()
