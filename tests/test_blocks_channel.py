"""SE-style channel attention (yolo_attn.modules.channel): contract cases for tests/test_blocks.py, each paper's
equations rewritten with other primitives in float64, parameter counts, bad arguments, ONNX export, graph breaks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import n_params as _n_params
from conftest import trained_bn
from conftest import width_case as _width

from yolo_attn.modules._common import BlockArgumentError
from yolo_attn.modules.channel import BAM, ECA, GAM, SE, SEMLP, GCBlock, eca_kernel_size, scSE

torch.manual_seed(0)


def _trained_gc(c: int, reduction: int = 16) -> GCBlock:
    """A GC block whose zero-initialised last conv has moved (as after training), so its add branch is live."""
    m = GCBlock(c, reduction)
    torch.nn.init.normal_(m.transform.fc2.weight, std=0.2)
    torch.nn.init.normal_(m.transform.fc2.bias, std=0.2)
    return m


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "SE": (lambda: SE(32), *_width(32)),
    "ECA": (lambda: ECA(32), *_width(32)),
    "ECA-k5": (lambda: ECA(48, kernel_size=5), *_width(48)),
    "GAM": (lambda: GAM(32), *_width(32)),
    "GCBlock": (lambda: GCBlock(32), *_width(32)),
    "GCBlock-trained": (lambda: _trained_gc(64, 4), *_width(64)),
    "scSE": (lambda: scSE(32), *_width(32)),
    "scSE-add": (lambda: scSE(32, 2, "add"), *_width(32)),
    "scSE-mul": (lambda: scSE(16, 4, "mul"), *_width(16)),
    "BAM": (lambda: BAM(32), *_width(32)),
}


def _bn(t, bn):
    """Eval-mode batch norm written out: (t - mean) / sqrt(var + eps) * weight + bias, channels on dim 1."""
    shape = (1, -1) + (1,) * (t.dim() - 2)
    return (t - bn.running_mean.view(shape)) / (bn.running_var.view(shape) + bn.eps).sqrt() * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def _fc(t, conv):
    """A 1x1 conv as a fully connected layer over the last dim of t."""
    return F.linear(t, conv.weight.flatten(1), conv.bias)


# ----------------------------------------------------------------------------------------------------------------
# SE
# ----------------------------------------------------------------------------------------------------------------
def test_se_equation():
    m = SE(64).double().eval()
    x = torch.randn(2, 64, 7, 5, dtype=torch.float64)
    with torch.no_grad():
        z = x.sum((2, 3)) / 35
        s = torch.sigmoid(_fc(F.relu(_fc(z, m.fc.fc1)), m.fc.fc2))
        assert torch.allclose(m(x), x * s[:, :, None, None], atol=1e-12)
    assert m.fc.fc1.out_channels == 4  # r = 16


def test_se_parameter_count():
    # paper: 2 C^2 / r weights; the released models add C / r + C biases
    assert _n_params(SE(256)) == 2 * 256 * 256 // 16 + 16 + 256 == 8464
    assert SE(8).fc.fc1.out_channels == 1  # C < r keeps one hidden unit


# ----------------------------------------------------------------------------------------------------------------
# ECA
# ----------------------------------------------------------------------------------------------------------------
def test_eca_adaptive_kernel_size():
    # k = |log2(C) / 2 + 1 / 2|_odd
    expected = {16: 3, 32: 3, 64: 3, 128: 5, 256: 5, 512: 5, 1024: 5, 2048: 7}
    assert {c: eca_kernel_size(c) for c in expected} == expected
    assert {c: ECA(c).conv.kernel_size[0] for c in expected} == expected
    assert eca_kernel_size(256, gamma=1, b=0) == 9  # t = 8 is even -> 9
    assert _n_params(ECA(256)) == 5 and _n_params(ECA(256, kernel_size=3)) == 3
    assert ECA(256).conv.bias is None


def test_eca_equation():
    m = ECA(16, kernel_size=5).double().eval()
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64)
    w = m.conv.weight.flatten()
    with torch.no_grad():
        z = F.pad(x.mean((2, 3)), (2, 2))  # zero padding along channels
        logits = torch.stack([sum(w[j] * z[:, c + j] for j in range(5)) for c in range(16)], 1)
        assert torch.allclose(m(x), x * torch.sigmoid(logits)[:, :, None, None], atol=1e-12)


def test_eca_interaction_is_local():
    """Channel c's weight depends only on the k nearest channels' pooled values (no dimensionality reduction)."""
    m = ECA(16, kernel_size=3).double()
    z = torch.randn(16, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: m.weights(v.view(1, 16, 1, 1)).flatten(), z)
    i, j = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    assert (jac[(i - j).abs() > 1] == 0).all()
    assert (jac[(i - j).abs() <= 1] != 0).all()


# ----------------------------------------------------------------------------------------------------------------
# GAM
# ----------------------------------------------------------------------------------------------------------------
def test_gam_equation_with_3d_permutation():
    """The paper's channel submodule: permute to (B, H, W, C), a two-layer MLP, permute back, sigmoid."""
    m = trained_bn(GAM(16), 0.5).double().eval()
    x = torch.randn(2, 16, 9, 8, dtype=torch.float64)
    ch, sp = m.channel, m.spatial
    with torch.no_grad():
        xp = x.permute(0, 2, 3, 1)
        mc = torch.sigmoid(_fc(F.relu(_fc(xp, ch.fc1)), ch.fc2)).permute(0, 3, 1, 2)
        x1 = x * mc
        h = F.relu(_bn(F.conv2d(x1, sp[0].weight, padding=3), sp[1]))
        ms = torch.sigmoid(_bn(F.conv2d(h, sp[3].weight, padding=3), sp[4]))
        assert torch.allclose(m(x), x1 * ms, atol=1e-10)
    assert ch.fc1.out_channels == 4 and sp[0].kernel_size == (7, 7)  # r = 4, 7 x 7


def test_gam_has_no_global_pooling():
    """Two 7x7 convs and a per-pixel MLP: an output pixel sees only a 13 x 13 window of the input."""
    m = GAM(8).double().eval()
    x = torch.randn(1, 8, 20, 20, dtype=torch.float64, requires_grad=True)
    m(x)[0, :, 10, 10].sum().backward()
    g = x.grad[0].abs().sum(0)
    assert g[4:17, 4:17].sum() > 0
    g[4:17, 4:17] = 0
    assert (g == 0).all()


def test_gam_parameter_count():
    c, mid = 256, 64
    mlp = 2 * c * mid + mid + c
    spatial = 2 * 49 * c * mid + 2 * mid + 2 * c
    assert _n_params(GAM(256)) == mlp + spatial == 1_639_360


# ----------------------------------------------------------------------------------------------------------------
# GC block
# ----------------------------------------------------------------------------------------------------------------
def test_gc_starts_as_the_identity():
    m = GCBlock(32).train()
    x = torch.randn(2, 32, 7, 5)
    assert torch.equal(m(x), x)
    assert not m.transform.fc2.weight.any() and not m.transform.fc2.bias.any()
    assert m.mask.weight.any()


def test_gc_equation():
    m = _trained_gc(32, 4).double().eval()
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)
    t = m.transform
    with torch.no_grad():
        logits = torch.einsum("c,bchw->bhw", m.mask.weight.flatten(), x) + m.mask.bias
        a = torch.softmax(logits.flatten(1), 1).view(2, 6, 5)
        assert torch.allclose(m.weights(x)[:, 0], a, atol=1e-12)
        context = torch.einsum("bhw,bchw->bc", a, x)
        h = _fc(context, t.fc1)
        h = F.relu(F.layer_norm(h, (8,), t.norm.weight.flatten(), t.norm.bias.flatten(), t.norm.eps))
        assert torch.allclose(m(x), x + _fc(h, t.fc2)[:, :, None, None], atol=1e-12)


def test_gc_official_ratio_and_parameter_count():
    m = GCBlock(256)
    assert m.transform.fc1.out_channels == 16 and tuple(m.transform.norm.normalized_shape) == (16, 1, 1)
    # conv_mask C + 1, C -> C/16 conv, LayerNorm 2 * C/16, C/16 -> C conv
    assert _n_params(m) == (256 + 1) + (256 * 16 + 16) + 2 * 16 + (16 * 256 + 256) == 8753


def test_gc_identity_start_can_learn():
    """A zero gate around a zero-initialised branch would get no gradient, nor would the branch: arming re-inits it."""
    m = GCBlock(16).identity_start().train()
    assert m.transform.fc2.weight.any()
    x = torch.randn(2, 16, 5, 5)
    y = m(x)
    assert torch.equal(y, x)
    y.square().sum().backward()
    assert m.gate.grad.abs() > 0
    trained = _trained_gc(16)
    w = trained.transform.fc2.weight.clone()
    assert torch.equal(trained.identity_start().transform.fc2.weight, w)  # trained weights are kept


# ----------------------------------------------------------------------------------------------------------------
# scSE
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("aggregation", ["max", "add", "mul"])
def test_scse_equation(aggregation):
    m = scSE(16, aggregation=aggregation).double().eval()
    x = torch.randn(2, 16, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        c = torch.sigmoid(_fc(F.relu(_fc(x.mean((2, 3)), m.cse.fc1)), m.cse.fc2))[:, :, None, None]
        s = torch.sigmoid(torch.einsum("c,bchw->bhw", m.sse.weight.flatten(), x) + m.sse.bias)[:, None]
        x_c, x_s = x * c, x * s
        expected = {"max": torch.max(x_c, x_s), "add": x_c + x_s, "mul": x_c * x_s}[aggregation]
        assert torch.allclose(m(x), expected, atol=1e-12)


def test_scse_defaults_and_parameter_count():
    m = scSE(256)
    assert m.aggregation == "max" and m.cse.fc1.out_channels == 128  # max-out, r = 2
    assert _n_params(m) == (256 * 128 + 128 + 128 * 256 + 256) + (256 + 1) == 66177


# ----------------------------------------------------------------------------------------------------------------
# BAM
# ----------------------------------------------------------------------------------------------------------------
def test_bam_equation():
    m = trained_bn(BAM(32), 0.5).double().eval()
    x = torch.randn(2, 32, 9, 7, dtype=torch.float64)
    mlp, bn_c = m.channel
    s = m.spatial
    with torch.no_grad():
        mc = _bn(_fc(F.relu(_fc(x.mean((2, 3)), mlp.fc1)), mlp.fc2), bn_c)[:, :, None, None]
        h = F.relu(_bn(F.conv2d(x, s[0].weight), s[1]))
        h = F.relu(_bn(F.conv2d(h, s[3].weight, padding=4, dilation=4), s[4]))
        h = F.relu(_bn(F.conv2d(h, s[6].weight, padding=4, dilation=4), s[7]))
        ms = _bn(F.conv2d(h, s[9].weight), s[10])
        assert torch.allclose(m(x), x + x * torch.sigmoid(mc + ms), atol=1e-12)
    assert s[3].dilation == (4, 4) and s[0].out_channels == 2  # d = 4, r = 16


def test_bam_attention_is_a_sum_of_a_channel_and_a_spatial_map():
    """y = x (1 + sigmoid(Mc + Ms)): logit(y / x - 1) = Mc[c] + Ms[h, w], so its double differences vanish."""
    m = trained_bn(BAM(32), 0.5).double().eval()
    x = torch.rand(1, 32, 6, 5, dtype=torch.float64) + 0.5
    with torch.no_grad():
        r = m(x) / x
    assert ((r > 1) & (r < 2)).all()
    lg = torch.logit(r - 1)[0].flatten(1)  # (C, HW)
    dd = lg - lg[:1] - lg[:, :1] + lg[:1, :1]
    assert dd.abs().max() < 1e-9


def test_bam_parameter_count():
    c, mid = 256, 16
    channel = (c * mid + mid + mid * c + c) + 2 * c
    spatial = c * mid + 2 * mid + 2 * (9 * mid * mid + 2 * mid) + mid + 2
    assert _n_params(BAM(256)) == channel + spatial == 17794


# ----------------------------------------------------------------------------------------------------------------
# Arguments, export, compile
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SE(32, reduction=0), "SE: reduction"),
        (lambda: ECA(32, kernel_size=4), "ECA: kernel_size must be odd"),
        (lambda: ECA(32, kernel_size=0), "ECA: kernel_size"),
        (lambda: ECA(32, gamma=0), "ECA: gamma"),
        (lambda: ECA(32, b="1"), "ECA: b"),
        (lambda: GAM(32, reduction=-1), "GAM: reduction"),
        (lambda: GCBlock(32, reduction=1.5), "GCBlock: reduction"),
        (lambda: scSE(32, aggregation="concat"), "scSE: aggregation"),
        (lambda: scSE(32, reduction=True), "scSE: reduction"),
        (lambda: BAM(32, dilation=0), "BAM: dilation"),
        (lambda: BAM(32, reduction=0), "BAM: reduction"),
        (lambda: SEMLP(8, norm="batch"), "norm"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(BlockArgumentError, match=match):
        make()
