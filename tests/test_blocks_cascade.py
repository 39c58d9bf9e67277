"""CFNet's cascade fusion blocks: the focal block and the transition block (yolo_attn/modules/cascade.py).

The generic contract tests of tests/test_blocks.py run on CASES; below, the papers' equations written with other
primitives in float64, the official widths and parameter counts, argument and input checks, ONNX and torch.compile.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from yolo_attn.modules._common import BlockArgumentError, BlockInputError
from yolo_attn.modules.cascade import CFNetFocal, CFNetTransition


def _up(n, k=1):
    for _ in range(k):
        n = math.ceil(n / 2)
    return n


def _pyramid(b, h, w, widths):
    return [torch.randn(b, c, _up(h, k), _up(w, k)) for k, c in enumerate(widths)]


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W)), as in tests/test_blocks.py
CASES = {
    "CFNetFocal": (lambda: CFNetFocal(32), lambda b, h, w: torch.randn(b, 32, h, w), lambda b, h, w: (b, 32, h, w)),
    "CFNetFocal-k5d2-noscale": (
        lambda: CFNetFocal(16, expansion=2, kernel_size=5, dilation=2, layer_scale=0),
        lambda b, h, w: torch.randn(b, 16, h, w),
        lambda b, h, w: (b, 16, h, w),
    ),
    "CFNetTransition": (
        lambda: CFNetTransition([16, 32, 64], 24),
        lambda b, h, w: _pyramid(b, h, w, (16, 32, 64)),
        lambda b, h, w: (b, 24, h, w),
    ),
    "CFNetTransition-2levels": (
        lambda: CFNetTransition([32, 48], 32),
        lambda b, h, w: _pyramid(b, h, w, (32, 48)),
        lambda b, h, w: (b, 32, h, w),
    ),
}


def _randomise(m: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial weights everywhere: norms' affine parameters, BN running statistics, layer scale."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() > 1 else 0.3) + (1.0 if p.dim() == 1 else 0))
        for name, buf in m.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.2)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return m


# ----------------------------------------------------------------------------------------------------------------
# Focal block
# ----------------------------------------------------------------------------------------------------------------
def _focal_reference(m: CFNetFocal, x: torch.Tensor) -> torch.Tensor:
    """The paper's focal block with other primitives: channels-last F.layer_norm, Linear point-wise layers (einsum)."""

    def ln(t, norm):
        return F.layer_norm(t.permute(0, 2, 3, 1), (t.shape[1],), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)

    c = x.shape[1]
    k = m.dw1.kernel_size[0]
    d = m.dw2.dilation[0]
    z = x + F.gelu(ln(F.conv2d(x, m.dw1.weight, m.dw1.bias, padding=k // 2, groups=c), m.norm1))
    z = z + F.gelu(ln(F.conv2d(z, m.dw2.weight, m.dw2.bias, padding=d * (k // 2), dilation=d, groups=c), m.norm2))
    h = F.gelu(torch.einsum("bchw,oc->bhwo", z, m.pw1.weight[:, :, 0, 0]) + m.pw1.bias)
    y = torch.einsum("bhwc,oc->bhwo", h, m.pw2.weight[:, :, 0, 0]) + m.pw2.bias
    if m.gamma is not None:
        y = y * m.gamma.view(-1)
    return x + y.permute(0, 3, 1, 2)


@pytest.mark.parametrize("kw", [{}, {"expansion": 2, "kernel_size": 5, "dilation": 2, "layer_scale": 0}])
def test_focal_block_equations(kw):
    m = _randomise(CFNetFocal(12, **kw)).double().eval()
    x = torch.randn(2, 12, 11, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(m(x), _focal_reference(m, x), atol=1e-10)


def test_focal_block_receptive_field():
    """Two stacked k x k depth-wise convs, the second dilated by d: an output pixel sees (k//2) * (1 + d) pixels to
    each side (7, 3: 12), and nothing further (the point-wise layers and the norms act per pixel)."""
    m = _randomise(CFNetFocal(4)).double()
    x = torch.randn(1, 4, 31, 31, dtype=torch.float64, requires_grad=True)
    m(x)[0, :, 15, 15].sum().backward()
    g = x.grad[0].abs().sum(0)
    assert g[15 + 12, 15] > 0 and g[15 - 12, 15] > 0 and g[15, 15 + 12] > 0
    mask = torch.ones(31, 31, dtype=torch.bool)
    mask[15 - 12 : 15 + 13, 15 - 12 : 15 + 13] = False
    assert g[mask].abs().max() == 0
    # and the dilated conv is what reaches that far: with k=7 and d=1 the reach is 6
    m1 = _randomise(CFNetFocal(4, dilation=1)).double()
    x.grad = None
    m1(x)[0, :, 15, 15].sum().backward()
    assert x.grad[0, :, 15 + 6, 15].abs().sum() > 0 and x.grad[0, :, 15 + 7, :].abs().sum() == 0


def test_focal_block_official_layout_and_parameters():
    m = CFNetFocal(256)
    assert m.dw1.kernel_size == (7, 7) and m.dw1.groups == 256 and m.dw1.padding == (3, 3)
    assert m.dw2.kernel_size == (7, 7) and m.dw2.dilation == (3, 3) and m.dw2.padding == (9, 9)
    assert m.pw1.out_channels == 4 * 256 and m.pw2.in_channels == 4 * 256
    assert torch.all(m.gamma == 1e-6) and m.norm1.eps == 1e-6
    # 2 depth-wise 7x7 (+bias), 2 LayerNorms, 1x1 C->4C and 4C->C (+bias), layer scale: 8 C^2 + 110 C
    c = 256
    assert sum(p.numel() for p in m.parameters()) == 8 * c * c + 110 * c == 552_448
    assert sum(p.numel() for p in CFNetFocal(256, layer_scale=0).parameters()) == 552_448 - 256


def test_focal_block_starts_close_to_the_identity():
    """Layer scale 1e-6 (the paper's init) makes a new block almost the identity: safe to insert and to repeat."""
    m = CFNetFocal(32).train()
    x = torch.randn(2, 32, 10, 10)
    with torch.no_grad():
        assert (m(x) - x).abs().max() < 1e-4


def test_focal_layernorm_keeps_bf16_and_uses_fp32_statistics():
    m = CFNetFocal(16).norm1
    x = (torch.randn(2, 16, 5, 5) * 100 + 1000).bfloat16()  # large mean: fp32 statistics keep it normalised
    y = m(x)
    assert y.dtype == torch.bfloat16
    assert y.float().mean(1).abs().max() < 0.05 and (y.float().std(1, unbiased=False) - 1).abs().max() < 0.05


# ----------------------------------------------------------------------------------------------------------------
# Transition block
# ----------------------------------------------------------------------------------------------------------------
def _bn_eval(t, bn):
    return (t - bn.running_mean.view(-1, 1, 1)) / torch.sqrt(bn.running_var.view(-1, 1, 1) + bn.eps) * bn.weight.view(
        -1, 1, 1
    ) + bn.bias.view(-1, 1, 1)


def test_transition_equations_on_even_sizes():
    """Paper: upsample 2x (bilinear) the 1x1-projected coarser level, add to the finer one, normalise, from C5 down to
    C3. Written the other way round (upsample first, then the 1x1 conv as an einsum): the two commute."""
    m = _randomise(CFNetTransition([8, 12, 20], 8)).double().eval()
    xs = _pyramid(2, 16, 12, (8, 12, 20))
    xs = [x.double() for x in xs]

    def step(coarse, fine, proj, bn):
        up = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
        return _bn_eval(fine + torch.einsum("bchw,oc->bohw", up, proj.weight[:, :, 0, 0]), bn)

    with torch.no_grad():
        p4 = step(xs[2], xs[1], m.proj[1], m.norm[1])
        p3 = step(p4, xs[0], m.proj[0], m.norm[0])
        assert torch.allclose(m(xs), p3, atol=1e-10)


def test_transition_output_width_and_odd_pyramids():
    m = _randomise(CFNetTransition([8, 12, 20], 16)).double().eval()
    assert m.align.kernel_size == (1, 1) and m.proj[0].out_channels == 16 and m.proj[1].out_channels == 12
    xs = [x.double() for x in _pyramid(1, 13, 9, (8, 12, 20))]  # 13x9 -> 7x5 -> 4x3
    with torch.no_grad():
        y = m(xs)
        p4 = _bn_eval(xs[1] + F.interpolate(m.proj[1](xs[2]), size=(7, 5), mode="bilinear"), m.norm[1])
        ref = _bn_eval(m.align(xs[0]) + F.interpolate(m.proj[0](p4), size=(13, 9), mode="bilinear"), m.norm[0])
    assert y.shape == (1, 16, 13, 9) and torch.allclose(y, ref, atol=1e-10)


def test_transition_widths_and_parameters():
    # the paper keeps C3's width; with equal widths: two bias-free 1x1 convs and two norms
    m = CFNetTransition([256, 256, 256], 256)
    assert sum(p.numel() for p in m.parameters()) == 2 * 256 * 256 + 2 * 2 * 256 == 132_096
    m = CFNetTransition([128, 256, 512], 128)  # a YOLO pyramid: C5 -> C4 width, C4 -> C3 width
    assert [p.weight.shape[:2] for p in m.proj] == [(128, 256), (256, 512)]
    assert sum(p.numel() for p in m.parameters()) == 128 * 256 + 256 * 512 + 2 * (128 + 256) == 164_608
    assert isinstance(m.align, torch.nn.Identity)


def test_transition_identity_start_passes_the_finest_level():
    m = CFNetTransition([16, 32, 64], 16).identity_start().train()
    xs = _pyramid(2, 8, 6, (16, 32, 64))
    y = m(xs)
    assert torch.equal(y, xs[0])
    y.sum().backward()
    assert m.gate.grad is not None and m.gate.grad.abs() > 0
    with pytest.raises(BlockArgumentError, match="identity start"):
        CFNetTransition([16, 32, 64], 24).identity_start()


def test_transition_input_contracts_name_the_layer():
    m = CFNetTransition([8, 8, 8], 8)
    m.i = 9  # as the YAML parser sets it
    with pytest.raises(BlockInputError, match=r"layer 9 \(CFNetTransition\).*expected a list of 3"):
        m([torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)])
    with pytest.raises(BlockInputError, match=r"layer 9 \(CFNetTransition\).*pyramid"):
        m([torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)])
    with pytest.raises(BlockInputError, match="pyramid"):  # coarsest first
        m([torch.randn(1, 8, 2, 2), torch.randn(1, 8, 4, 4), torch.randn(1, 8, 8, 8)])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CFNetFocal(32, kernel_size=4), "odd"),
        (lambda: CFNetFocal(32, expansion=0), "expansion"),
        (lambda: CFNetFocal(32, dilation=0), "dilation"),
        (lambda: CFNetFocal(32, layer_scale=-1.0), "layer_scale"),
        (lambda: CFNetFocal(32, kernel_size=3.0), "kernel_size"),
        (lambda: CFNetTransition([32], 32), "at least 2"),
        (lambda: CFNetTransition(32, 32), "at least 2"),
        (lambda: CFNetTransition([32, 64], 0), "c2"),
        (lambda: CFNetTransition([32, 0], 32), "input width"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(BlockArgumentError, match=match) as e:
        make()
    assert str(e.value).startswith("CFNet")
