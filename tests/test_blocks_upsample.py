"""Content-aware upsamplers DySample and CARAFE: contract cases for test_blocks.py, DySample against the official
outputs (tests/fixtures/official) and against bilinear sampling written out in float64, CARAFE against a loop over
the paper's reassembly equation in float64, parameter counts, starting points and argument checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from yolo_attn.modules._common import BlockArgumentError
from yolo_attn.modules.upsample import CARAFE, DySample

FIXTURES = Path(__file__).parent / "fixtures" / "official"


def _up(factory, c, s):
    return factory, lambda b, h, w: torch.randn(b, c, h, w), lambda b, h, w: (b, c, s * h, s * w)


def _trained_dysample(c, **kw):
    """A DySample whose offsets are large enough to move the samples by a good part of a pixel (as after
    training), so the contract tests see a sampler that is not bilinear upsampling."""
    m = DySample(c, **kw)
    torch.nn.init.normal_(m.offset.weight, 0, 0.3)
    return m


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "DySample": _up(lambda: _trained_dysample(16), 16, 2),
    "DySample-pl": _up(lambda: _trained_dysample(16, style="pl"), 16, 2),
    "DySample-dyscope": _up(lambda: _trained_dysample(16, dyscope=True), 16, 2),
    "DySample-pl-dyscope-s3": _up(lambda: _trained_dysample(18, scale=3, style="pl", groups=2, dyscope=True), 18, 3),
    "CARAFE": _up(lambda: CARAFE(16), 16, 2),
    "CARAFE-k3-g4-s3": _up(lambda: CARAFE(16, 3, 3, 1, 8, 4), 16, 3),
}


def _nparams(m) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------------------------
# DySample
# ----------------------------------------------------------------------------------------------------------------
def _fixture_cases(name: str):
    d = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    return [dict(d, name="main")] + d["variants"]


def test_dysample_matches_the_official_outputs():
    """lp / pl, static / dynamic scope, scale 2 and 3, odd sizes. The official ``init_pos`` buffer (the sub-pixel
    positions of bilinear upsampling) is not a state of ours: it is checked against the positions we use."""
    for case in _fixture_cases("DySample"):
        kw = case["init_kwargs"]
        s, g = kw["scale"], kw["groups"]
        m = DySample(kw["in_channels"], s, kw["style"], g, kw["dyscope"]).eval()
        sd = dict(case["state_dict"])
        init_pos = sd.pop("init_pos").view(2, g, s, s)  # (x | y, group, i, j) in input pixels
        sub = (torch.arange(s) + 0.5) / s - 0.5  # output pixel h s + i samples at h + 0.5 + sub[i]
        assert torch.allclose(init_pos[0], sub.view(1, 1, s).expand(g, s, s), atol=1e-7)
        assert torch.allclose(init_pos[1], sub.view(1, s, 1).expand(g, s, s), atol=1e-7)
        m.load_state_dict(sd)
        assert _nparams(m) == case["num_params"]
        with torch.no_grad():
            y = m(case["input"])
        ref = case["output"]
        assert y.shape == ref.shape
        assert ((y - ref).abs().max() / ref.abs().max()).item() <= 1e-5, case["name"]


def _bilinear_border(x: torch.Tensor, px: float, py: float) -> torch.Tensor:
    """x (C, H, W) at (px, py) in pixel units (pixel centres at i + 0.5), positions clamped to the border centres."""
    _, h, w = x.shape
    px = min(max(px - 0.5, 0.0), w - 1.0)
    py = min(max(py - 0.5, 0.0), h - 1.0)
    x0, y0 = math.floor(px), math.floor(py)
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    ax, ay = px - x0, py - y0
    return (1 - ay) * ((1 - ax) * x[:, y0, x0] + ax * x[:, y0, x1]) + ay * ((1 - ax) * x[:, y1, x0] + ax * x[:, y1, x1])


@pytest.mark.parametrize("style, dyscope, scale", [("lp", False, 2), ("pl", True, 2), ("lp", True, 3)])
def test_dysample_samples_each_output_pixel_at_its_offset_position(style, dyscope, scale):
    """The paper's point sampling, pixel by pixel in float64: output (i', j') of group g takes the bilinear value at
    ((j' + 0.5) / s + O_x, (i' + 0.5) / s + O_y), O = 0.25 linear(X) (or 0.5 sigmoid(linear_2(X)) linear(X)),
    predicted on X ('lp', 2 g s^2 per input pixel, pixel-shuffled) or on pixel_shuffle(X) ('pl')."""
    torch.manual_seed(0)
    c, g, s = 8, 2, scale
    m = DySample(c, s, style, g, dyscope).double()
    torch.nn.init.normal_(m.offset.weight, 0, 0.5)
    if dyscope:
        torch.nn.init.normal_(m.scope.weight, 0, 0.5)
    x = torch.randn(1, c, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)[0]
        src = F.pixel_shuffle(x, s) if style == "pl" else x
        o = F.conv2d(src, m.offset.weight, m.offset.bias)
        o = o * (0.5 * torch.sigmoid(F.conv2d(src, m.scope.weight)) if dyscope else 0.25)
        if style == "lp":
            o = F.pixel_shuffle(o, s)  # (1, 2 g, sH, sW)
        o = o[0].view(2, g, 5 * s, 4 * s)
        for grp in range(g):
            xs = x[0, grp * (c // g) : (grp + 1) * (c // g)]
            for i in range(5 * s):
                for j in range(4 * s):
                    px, py = (j + 0.5) / s + o[0, grp, i, j].item(), (i + 0.5) / s + o[1, grp, i, j].item()
                    expected = _bilinear_border(xs, px, py)
                    assert torch.allclose(y[grp * (c // g) : (grp + 1) * (c // g), i, j], expected, atol=1e-10)


@pytest.mark.parametrize("style, scale", [("lp", 2), ("pl", 2), ("lp", 3)])
def test_dysample_with_zero_offsets_is_bilinear_upsampling(style, scale):
    m = DySample(16, scale, style, 2)
    torch.nn.init.zeros_(m.offset.weight)
    x = torch.randn(2, 16, 7, 5)
    with torch.no_grad():
        ref = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        assert torch.allclose(m(x), ref, atol=1e-5)
        assert torch.allclose(DySample(16, scale, style, 2)(x), ref, atol=0.05)  # official init: N(0, 0.001)


def test_dysample_parameter_counts():
    """As the official class (FACTS: at C = 64, 2080 / 4128 / 136 / 264)."""
    assert _nparams(DySample(64)) == 64 * 32 + 32 == 2080
    assert _nparams(DySample(64, dyscope=True)) == 2080 + 64 * 32 == 4128
    assert _nparams(DySample(64, style="pl")) == 16 * 8 + 8 == 136
    assert _nparams(DySample(64, style="pl", dyscope=True)) == 136 + 16 * 8 == 264
    assert _nparams(DySample(256)) == 256 * 32 + 32 == 8224
    assert _nparams(DySample(256, style="pl")) == 64 * 8 + 8 == 520


def test_dysample_works_at_yolo_n_widths():
    """The widths an nn.Upsample sees in YOLOv8n / YOLO11n necks (and every multiple of 8) with the defaults."""
    for c in (8, 16, 32, 64, 128, 256):
        for style in ("lp", "pl"):
            assert DySample(c, style=style)(torch.randn(1, c, 3, 5)).shape == (1, c, 6, 10)


# ----------------------------------------------------------------------------------------------------------------
# CARAFE
# ----------------------------------------------------------------------------------------------------------------
def _carafe_loop(m: CARAFE, x: torch.Tensor) -> torch.Tensor:
    """The paper's kernel prediction and reassembly, eqs. (1)-(4), output pixel by output pixel (mmcv's layout: the
    encoder's k^2 G s^2 channels pixel-shuffled to (G k^2, sH, sW), softmax over each k^2)."""
    b, c, h, w = x.shape
    k, s, g = m.k, m.scale, m.groups
    r = k // 2
    logits = F.pixel_shuffle(m.encoder(m.compressor(x)), s).view(b, g, k * k, s * h, s * w)
    kernels = logits.softmax(2)
    out = torch.zeros(b, c, s * h, s * w, dtype=x.dtype)
    for n in range(b):
        for ch in range(c):
            grp = ch // (c // g)
            for yo in range(s * h):
                for xo in range(s * w):
                    i, j = yo // s, xo // s
                    acc = 0.0
                    for dy in range(-r, r + 1):
                        for dx in range(-r, r + 1):
                            if 0 <= i + dy < h and 0 <= j + dx < w:
                                acc += kernels[n, grp, (dy + r) * k + dx + r, yo, xo] * x[n, ch, i + dy, j + dx]
                    out[n, ch, yo, xo] = acc
    return out


@pytest.mark.parametrize("scale, up_kernel, groups", [(2, 5, 1), (3, 3, 2)])
def test_carafe_reassembly_equation(scale, up_kernel, groups):
    torch.manual_seed(0)
    m = CARAFE(4, scale, up_kernel, 3, 6, groups).double()
    torch.nn.init.normal_(m.encoder.weight, 0, 0.5)  # sharp, unequal kernels
    x = torch.randn(1, 4, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(m(x), _carafe_loop(m, x), atol=1e-12)


def test_carafe_with_flat_kernels_is_a_box_filter_then_nearest_upsampling():
    """Equal logits give k x k averages (zero padding counted), which every output pixel of the cell repeats; the
    mmcv init (encoder N(0, 0.001)) starts close to that."""
    m = CARAFE(8)
    x = torch.randn(2, 8, 7, 5)
    ref = F.interpolate(F.avg_pool2d(x, 5, 1, 2, count_include_pad=True), scale_factor=2, mode="nearest")
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=0.05)
        torch.nn.init.zeros_(m.encoder.weight)
        assert torch.allclose(m(x), ref, atol=1e-5)


def test_carafe_parameter_counts():
    """mmcv's CARAFEPack at C = 64, scale 2, defaults: compressor 64 * 64 + 64, encoder 64 * 100 * 9 + 100."""
    assert _nparams(CARAFE(64)) == 4160 + 57700 == 61860
    assert _nparams(CARAFE(256)) == 256 * 64 + 64 + 57700 == 74148


def test_carafe_kernels_are_normalised():
    m = CARAFE(16, 2, 5, 3, 8, 2)
    torch.nn.init.normal_(m.encoder.weight, 0, 1.0)
    w = m.kernels(torch.randn(2, 16, 5, 6))
    assert w.shape == (2, 2, 25, 4, 5, 6) and torch.allclose(w.sum(2), torch.ones(2, 2, 4, 5, 6), atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: DySample(30), "DySample: groups=4 must divide the input width 30"),
        (lambda: DySample(24, 3, "pl", 4), "DySample: style 'pl' .* scale\\^2 = 9"),
        (lambda: DySample(16, style="nearest"), "DySample: style"),
        (lambda: DySample(16, scale=1), "DySample: scale must be an integer >= 2"),
        (lambda: DySample(16, groups=0), "DySample: groups"),
        (lambda: DySample(16, dyscope=1), "DySample: dyscope"),
        (lambda: DySample(16, "lp"), "DySample: scale"),
        (lambda: CARAFE(16, up_kernel=4), "CARAFE: up_kernel must be odd"),
        (lambda: CARAFE(16, encoder_kernel=0), "CARAFE: encoder_kernel"),
        (lambda: CARAFE(16, groups=3), "CARAFE: groups=3 must divide"),
        (lambda: CARAFE(16, compressed=0), "CARAFE: compressed"),
        (lambda: CARAFE(16, scale=1.5), "CARAFE: scale"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(BlockArgumentError, match=match):
        make()
