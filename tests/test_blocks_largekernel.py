"""Large-kernel blocks (yolo_attn.modules.largekernel: LSKA, LSKBlock, WTConv): contract cases for
tests/test_blocks.py, the official code's outputs reproduced (tests/fixtures/official), each paper's equations
rewritten with other primitives in float64, parameter counts, bad arguments."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import n_params as _n_params
from conftest import width_case as _width

from yolo_attn.modules._common import BlockArgumentError, IdentityStart
from yolo_attn.modules.largekernel import LSKA, LSKA_KERNELS, LSKBlock, WTConv, haar_filters

torch.manual_seed(0)

FIXTURES = Path(__file__).parent / "fixtures" / "official"


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "LSKA": (lambda: LSKA(32), *_width(32)),
    "LSKA-k23": (lambda: LSKA(48, kernel_size=23), *_width(48)),
    "LSKA-k53": (lambda: LSKA(64, kernel_size=53), *_width(64)),
    "LSKBlock": (lambda: LSKBlock(32), *_width(32)),
    "LSKBlock-64": (lambda: LSKBlock(64), *_width(64)),
    "WTConv": (lambda: WTConv(32), *_width(32)),
    "WTConv-L2": (lambda: WTConv(48, wt_levels=2), *_width(48)),
    "WTConv-L3-k3-s2": (
        lambda: WTConv(64, kernel_size=3, stride=2, wt_levels=3),
        lambda b, h, w: torch.randn(b, 64, h, w),
        lambda b, h, w: (b, 64, math.ceil(h / 2), math.ceil(w / 2)),
    ),
}


def _randomised(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter moved by N(0, 0.1): no zero / one initialisation (WTConv's scales) hides a path."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _dw_shifts(x, weight, bias=None, dilation=(1, 1)):
    """A depth-wise conv with 'same' zero padding written as a sum of shifted copies of the map (no conv op):
    y[c] = b[c] + sum_{i, j} w[c, i, j] * x_pad[c, i d_h + p, j d_w + q]."""
    kh, kw = weight.shape[-2:]
    dh, dw = dilation
    ph, pw = dh * (kh // 2), dw * (kw // 2)
    h, w = x.shape[-2:]
    xp = F.pad(x, (pw, pw, ph, ph))
    y = torch.zeros_like(x)
    for i in range(kh):
        for j in range(kw):
            y = y + weight[:, 0, i, j].view(1, -1, 1, 1) * xp[..., i * dh : i * dh + h, j * dw : j * dw + w]
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def _pw(t, conv):
    """A 1x1 conv as an einsum over channels (bias if any)."""
    y = torch.einsum("oc,bchw->bohw", conv.weight.flatten(1), t)
    return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)


# ----------------------------------------------------------------------------------------------------------------
# The official code's outputs (tests/fixtures/official, format in its README)
# ----------------------------------------------------------------------------------------------------------------
def _cases(block: str) -> list[dict]:
    fx = torch.load(FIXTURES / f"{block}.pt", weights_only=True)
    main = {k: v for k, v in fx.items() if k != "variants"}
    main.setdefault("name", "main")
    return [main, *fx.get("variants", [])]


def _close(y: torch.Tensor, ref: torch.Tensor, name: str) -> None:
    assert y.shape == ref.shape, (name, y.shape, ref.shape)
    err = (y - ref).abs().max()
    assert err <= 1e-5 * ref.abs().max(), (name, err)


def _assert_reproduces(m: torch.nn.Module, case: dict, state: dict) -> None:
    """Load the mapped official state (strict), then eval and (when stored) train outputs to 1e-5 relative."""
    m.load_state_dict(state, strict=True)
    with torch.no_grad():
        _close(m.eval()(case["input"].clone()), case["output"], case["name"])
        if "output_train" in case:
            _close(m.train()(case["input"].clone()), case["output_train"], case["name"] + " (train)")


class _AttentionUnit(torch.nn.Module):
    """The attention unit of VAN / LSKNet around a spatial gating module, as in their official code (``Attention``):
    x + proj_2(gating(GELU(proj_1(x)))). Built here only to load the official wrapper cases."""

    def __init__(self, c: int, gating: torch.nn.Module):
        super().__init__()
        self.proj_1 = torch.nn.Conv2d(c, c, 1)
        self.activation = torch.nn.GELU()
        self.spatial_gating_unit = gating
        self.proj_2 = torch.nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))


_LSKA_CASES = _cases("LSKA")


@pytest.mark.parametrize("case", _LSKA_CASES, ids=[c["name"] for c in _LSKA_CASES])
def test_lska_reproduces_the_official_code(case):
    """Every kernel of the table, odd map sizes, and VAN's attention unit (proj_1, GELU, LSKA, proj_2, shortcut)
    around our LSKA. State-dict keys are the official ones."""
    kw = case["init_kwargs"]
    if "d_model" in kw:
        m = _AttentionUnit(kw["d_model"], LSKA(kw["d_model"], kw["k_size"]))
    else:
        m = LSKA(kw["dim"], kw["k_size"])
    _assert_reproduces(m, case, dict(case["state_dict"]))


_LSK_CASES = _cases("LSKBlock")


@pytest.mark.parametrize("case", _LSK_CASES, ids=[c["name"] for c in _LSK_CASES])
def test_lsk_block_reproduces_the_official_code(case):
    """LSKNet's LSKblock (also inside its attention unit), odd sizes. State-dict keys are the official ones."""
    kw = case["init_kwargs"]
    m = _AttentionUnit(kw["d_model"], LSKBlock(kw["d_model"])) if "d_model" in kw else LSKBlock(kw["dim"])
    _assert_reproduces(m, case, dict(case["state_dict"]))


_WT_CASES = _cases("WTConv")


@pytest.mark.parametrize("case", _WT_CASES, ids=[c["name"] for c in _WT_CASES])
def test_wtconv_reproduces_the_official_code(case):
    """WTConv2d at 1-3 levels, kernels 3 and 5, odd sizes, stride 2, 'haar' = 'db1'. The official fixed filters
    (pywt's float32 1/sqrt 2, squared: +-0.49999997) equal ours (exactly +-0.5) to float32 rounding; the output is
    reproduced with ours and with theirs loaded."""
    kw = dict(case["init_kwargs"])
    assert kw.pop("wt_type") in ("db1", "haar") and kw.pop("in_channels") == kw.pop("out_channels")
    c = case["state_dict"]["base_conv.weight"].shape[0]
    m = WTConv(c, **kw)
    for key in ("wt_filter", "iwt_filter"):
        theirs, ours = case["state_dict"][key], getattr(m, key)
        assert theirs.shape == ours.shape and theirs.dtype == ours.dtype
        assert (theirs - ours).abs().max() <= 1e-7 and ours.abs().eq(0.5).all()
    mine = {k: v for k, v in case["state_dict"].items() if not k.endswith("wt_filter")}
    missing, unexpected = m.load_state_dict(mine, strict=False)
    assert set(missing) == {"wt_filter", "iwt_filter"} and not unexpected
    with torch.no_grad():
        _close(m.eval()(case["input"].clone()), case["output"], case["name"] + " (our filters)")
    _assert_reproduces(m, case, dict(case["state_dict"]))


def test_wtconv_parameters_match_the_official_counts():
    """Official WTConv2d(64, 64): 8384 trainable at L=1, k=5, and 21696 at L=3, plus 2 x 4C x 2 x 2 = 2048 fixed
    filter entries, which are buffers here (saved in the state dict, seen by no optimizer)."""
    for levels, trainable in ((1, 8384), (3, 21696)):
        m = WTConv(64, wt_levels=levels)
        assert _n_params(m) == trainable
        assert sum(b.numel() for b in m.buffers()) == 2048
        assert set(m.state_dict()) >= {"wt_filter", "iwt_filter"}
    # base DW k x k + bias, its scale; per level a DW k x k on 4C channels, no bias, and its scale
    c, k = 256, 5
    assert _n_params(WTConv(c)) == c * k * k + c + c + 4 * c * k * k + 4 * c == 33536


# ----------------------------------------------------------------------------------------------------------------
# LSKA
# ----------------------------------------------------------------------------------------------------------------
def test_lska_kernel_table_follows_the_papers_rule():
    """k0 = 2d - 1, k1 = floor(k / d), d = 2 up to 11 and 3 above: receptive field k0 + d (k1 - 1) = k."""
    assert sorted(LSKA_KERNELS) == [7, 11, 23, 35, 41, 53]
    for k, (k0, k1, d) in LSKA_KERNELS.items():
        assert d == (2 if k <= 11 else 3) and k0 == 2 * d - 1 and k1 == k // d and k0 + d * (k1 - 1) == k
        m = LSKA(8, k)
        assert m.conv0h.kernel_size == (1, k0) and m.conv0v.kernel_size == (k0, 1)
        assert m.conv_spatial_h.kernel_size == (1, k1) and m.conv_spatial_v.kernel_size == (k1, 1)
        assert m.conv_spatial_h.dilation[1] == d and m.conv_spatial_v.dilation[0] == d  # along the kernel's long axis


@pytest.mark.parametrize("k", [7, 23])
def test_lska_equation(k):
    """A = Conv1x1(DW-D_{k1 x 1}(DW-D_{1 x k1}(DW_{k0 x 1}(DW_{1 x k0}(x))))), y = A * x: shifted sums in float64."""
    torch.manual_seed(0)
    m = _randomised(LSKA(6, k)).double().eval()
    _, _, d = LSKA_KERNELS[k]
    x = torch.randn(2, 6, 13, 9, dtype=torch.float64)
    a = _dw_shifts(x, m.conv0h.weight, m.conv0h.bias)
    a = _dw_shifts(a, m.conv0v.weight, m.conv0v.bias)
    a = _dw_shifts(a, m.conv_spatial_h.weight, m.conv_spatial_h.bias, (1, d))
    a = _dw_shifts(a, m.conv_spatial_v.weight, m.conv_spatial_v.bias, (d, 1))
    a = _pw(a, m.conv1)
    with torch.no_grad():
        assert torch.allclose(m.attention(x), a, atol=1e-12)
        assert torch.allclose(m(x), a * x, atol=1e-12)


@pytest.mark.parametrize("k", sorted(LSKA_KERNELS))
def test_lska_receptive_field_is_k_by_k(k):
    """The attention at one pixel depends on exactly the k x k window around it (through the separable and dilated
    cascade): the input gradient of one output is non-zero there and zero outside."""
    torch.manual_seed(0)
    m = _randomised(LSKA(2, k)).double()
    n = k + 6
    x = torch.randn(1, 2, n, n, dtype=torch.float64, requires_grad=True)
    m.attention(x)[0, 0, n // 2, n // 2].backward()
    support = x.grad[0].abs().sum(0) > 0
    rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
    assert rows.min() == n // 2 - k // 2 and rows.max() == n // 2 + k // 2
    assert cols.min() == n // 2 - k // 2 and cols.max() == n // 2 + k // 2


def test_lska_parameters_match_the_official_counts():
    """Official LSKA(64, k): 5184 (7), 5440 (11), 5952 (23), 6464 (35), 6720 (41), 7232 (53)."""
    counts = {7: 5184, 11: 5440, 23: 5952, 35: 6464, 41: 6720, 53: 7232}
    for k, n in counts.items():
        k0, k1, _ = LSKA_KERNELS[k]
        assert _n_params(LSKA(64, k)) == n == 64 * (2 * k0 + 2 * k1 + 4) + 64 * 64 + 64
    assert _n_params(LSKA(256)) == 256 * (2 * 3 + 2 * 3 + 4) + 256 * 256 + 256 == 69888


def test_lska_identity_start_and_class():
    m = LSKA(16)
    assert isinstance(m, IdentityStart) and m.gate is None
    x = torch.randn(2, 16, 7, 5)
    assert torch.equal(m.identity_start()(x), x)


# ----------------------------------------------------------------------------------------------------------------
# LSKBlock
# ----------------------------------------------------------------------------------------------------------------
def test_lsk_block_equation():
    """U1 = DW5(x), U2 = DW7_d3(U1); V1, V2 = 1x1 convs to C/2; SA = [mean; max] over the 2 x C/2 channels of [V1; V2];
    [s1; s2] = sigmoid(conv7(SA)); y = x * conv1x1(s1 V1 + s2 V2). Float64, shifted sums for the depth-wise convs."""
    torch.manual_seed(0)
    m = _randomised(LSKBlock(8)).double().eval()
    x = torch.randn(2, 8, 11, 13, dtype=torch.float64)
    u1 = _dw_shifts(x, m.conv0.weight, m.conv0.bias)
    u2 = _dw_shifts(u1, m.conv_spatial.weight, m.conv_spatial.bias, (3, 3))
    v1, v2 = _pw(u1, m.conv1), _pw(u2, m.conv2)
    both = torch.cat((v1, v2), 1)
    sa = torch.stack((both.mean(1), both.max(1).values), 1)
    s = torch.sigmoid(F.conv2d(sa, m.conv_squeeze.weight, m.conv_squeeze.bias, padding=3))
    attn = _pw(v1 * s[:, :1] + v2 * s[:, 1:], m.conv)
    with torch.no_grad():
        assert torch.allclose(m.attention(x), attn, atol=1e-12)
        assert torch.allclose(m(x), x * attn, atol=1e-12)
    xg = x.clone().requires_grad_()
    assert torch.allclose(m(xg), x * attn, atol=1e-12)  # the autograd path (no in-place combination)


def test_lsk_block_cascade_reaches_23():
    """The second branch's kernel sees the first's output: a receptive field 5 + 3 (7 - 1) = 23 (the paper's
    decomposition of a 23 x 23 kernel); the selection mixes it with the 5 x 5 branch."""
    torch.manual_seed(0)
    m = _randomised(LSKBlock(4)).double()
    assert m.conv0.kernel_size == (5, 5) and m.conv_spatial.kernel_size == (7, 7) and m.conv_spatial.dilation == (3, 3)
    n = 35
    x = torch.randn(1, 4, n, n, dtype=torch.float64, requires_grad=True)
    m.conv2(m.conv_spatial(m.conv0(x)))[0, 0, n // 2, n // 2].backward()
    rows = (x.grad[0].abs().sum((0, 2)) > 0).nonzero().flatten()
    assert rows.min() == n // 2 - 11 and rows.max() == n // 2 + 11


def test_lsk_block_parameters_match_the_official_counts():
    """Official LSKblock(64): 11334. DW 5x5 + DW 7x7 (bias), two 1x1 C -> C/2, the 2 -> 2 7x7 squeeze, 1x1 C/2 -> C."""

    def count(c):
        return c * 26 + c * 50 + 2 * (c * c // 2 + c // 2) + (2 * 2 * 49 + 2) + (c // 2 * c + c)

    assert _n_params(LSKBlock(64)) == count(64) == 11334
    assert _n_params(LSKBlock(256)) == count(256) == 118470


# ----------------------------------------------------------------------------------------------------------------
# WTConv
# ----------------------------------------------------------------------------------------------------------------
def test_haar_filters_are_the_orthonormal_db1_bands():
    f = haar_filters(3, torch.float64)
    assert f.shape == (12, 1, 2, 2) and f.abs().eq(0.5).all()
    bands = f[:4, 0].flatten(1)  # (band, tap)
    assert torch.equal(bands @ bands.t(), torch.eye(4, dtype=torch.float64))
    assert torch.equal(f[:4, 0, 0, 0], torch.full((4,), 0.5, dtype=torch.float64))  # top-left tap: all +0.5
    assert torch.equal(f[1, 0, 1], torch.tensor([-0.5, -0.5], dtype=torch.float64))  # LH: +top, -bottom
    assert torch.equal(f[2, 0, :, 1], torch.tensor([-0.5, -0.5], dtype=torch.float64))  # HL: +left, -right
    assert torch.equal(f[3, 0], torch.tensor([[0.5, -0.5], [-0.5, 0.5]], dtype=torch.float64))
    assert torch.equal(torch.cat([f[4 * i : 4 * i + 4] for i in range(3)]), f)  # repeated per channel
    assert haar_filters(2).dtype == torch.float32 and haar_filters(2).abs().eq(0.5).all()


def test_wavelet_transform_is_inverted_exactly():
    """IWT(WT(x)) = x (the transposed conv of the same orthonormal filters), through the module's own transform."""
    m = WTConv(5).double()
    x = torch.randn(2, 5, 8, 6, dtype=torch.float64)
    bands = m._wt(x)
    assert bands.shape == (2, 20, 4, 3)
    assert torch.allclose(bands, F.conv2d(x, m.wt_filter, stride=2, groups=5), atol=1e-14)
    assert torch.allclose(m._iwt(bands), x, atol=1e-14)
    assert torch.allclose(F.conv_transpose2d(bands, m.iwt_filter, stride=2, groups=5), x, atol=1e-14)


def _wtconv_reference(m: WTConv, x: torch.Tensor) -> torch.Tensor:
    """The paper's WTConv with the official code's primitives: WT = stride-2 depth-wise conv with the Haar filters,
    IWT = its transposed conv, zero-padding of odd levels at the bottom / right and cropping back, s * DW(X) on each
    level, the deeper synthesis added to the LL band, y = s_0 DW(x) + Z^(1), then subsampled by the stride."""
    c, k = m.c1, m.k
    lows, ys, sizes = x, [], []
    for conv, scale in zip(m.wavelet_convs, m.wavelet_scale):
        h, w = lows.shape[-2:]
        sizes.append((h, w))
        bands = F.conv2d(F.pad(lows, (0, w % 2, 0, h % 2)), m.wt_filter, stride=2, groups=c)  # (B, 4C, h', w')
        lows = bands[:, ::4]
        ys.append(scale.weight * F.conv2d(bands, conv.weight, padding=k // 2, groups=4 * c))
    z = None
    for y, (h, w) in zip(reversed(ys), reversed(sizes)):
        if z is not None:
            y = y.clone()
            y[:, ::4] = y[:, ::4] + z
        z = F.conv_transpose2d(y, m.iwt_filter, stride=2, groups=c)[..., :h, :w]
    base = m.base_conv
    out = m.base_scale.weight * F.conv2d(x, base.weight, base.bias, padding=k // 2, groups=c) + z
    return out[..., :: m.stride, :: m.stride]


@pytest.mark.parametrize(
    "levels, k, stride, size",
    [(1, 5, 1, (16, 12)), (2, 3, 1, (13, 9)), (3, 5, 1, (9, 7)), (2, 5, 2, (13, 9)), (3, 3, 2, (16, 12)),
     (2, 3, 3, (11, 10)), (4, 3, 4, (17, 9)), (3, 5, 1, (1, 1)), (2, 3, 2, (1, 3))],
)  # fmt: skip
def test_wtconv_equation(levels, k, stride, size):
    """Float64, against the reference above: levels 1-4, kernels 3 and 5, odd sizes, maps down to 1 x 1, strides
    1-4 (the module samples the strided positions directly); the autograd path too."""
    torch.manual_seed(0)
    m = _randomised(WTConv(3, k, stride, levels)).double().eval()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    ref = _wtconv_reference(m, x)
    assert ref.shape[-2:] == (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=1e-12)
    assert torch.allclose(m(x.clone().requires_grad_()), ref, atol=1e-12)


def test_wtconv_starts_near_its_base_conv_and_widens_the_receptive_field():
    """Wavelet scales start at 0.1, the base scale at 1 (the official init). With L levels the output at one pixel
    reads a window of about k 2^L (the paper's receptive-field argument), against k for the base conv alone."""
    m = WTConv(4, 5, wt_levels=2)
    assert m.base_scale.weight.eq(1).all() and all(s.weight.eq(0.1).all() for s in m.wavelet_scale)
    for conv in m.wavelet_convs:
        torch.nn.init.zeros_(conv.weight)
    x = torch.randn(2, 4, 10, 10)
    with torch.no_grad():
        assert torch.allclose(m(x), m.base_conv(x), atol=1e-6)
    torch.manual_seed(0)
    m = _randomised(WTConv(2, 3, wt_levels=3)).double()
    n = 64
    x = torch.randn(1, 2, n, n, dtype=torch.float64, requires_grad=True)
    m(x)[0, 0, 32, 32].backward()
    rows = (x.grad[0].abs().sum((0, 2)) > 0).nonzero().flatten()
    assert rows.max() - rows.min() + 1 >= 3 * 2**3  # 3 taps at the 8x coarser level


def test_wtconv_is_a_depthwise_layer_that_keeps_the_width():
    """Channels do not mix (the paper's drop-in for a depth-wise conv): perturbing channel 1 only changes channel 1."""
    m = _randomised(WTConv(4, wt_levels=2)).eval()
    x = torch.randn(1, 4, 12, 10)
    x2 = x.clone()
    x2[:, 1] += torch.randn(12, 10)
    with torch.no_grad():
        d = (m(x2) - m(x)).abs().amax((0, 2, 3))
    assert d[1] > 0 and d[[0, 2, 3]].eq(0).all()


# ----------------------------------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: LSKA(16, 9), "7, 11, 23, 35, 41, 53"),
        (lambda: LSKA(16, 21), "kernel_size must be one of"),
        (lambda: LSKA(16, True), "kernel_size"),
        (lambda: LSKA(16, 7.0), "kernel_size"),
        (lambda: LSKA(0), "c1"),
        (lambda: LSKBlock(33), "even"),
        (lambda: LSKBlock(1), "c1"),
        (lambda: WTConv(16, 4), "odd"),
        (lambda: WTConv(16, 0), "kernel_size"),
        (lambda: WTConv(16, 5, 0), "stride"),
        (lambda: WTConv(16, 5, 1, 0), "wt_levels"),
        (lambda: WTConv(16, 5, 1, 1.5), "wt_levels"),
        (lambda: WTConv(16, 5, 1, 1, "yes"), "bias"),
        (lambda: WTConv(16.0), "c1"),
    ],
)
def test_bad_arguments_are_refused(make, match):
    with pytest.raises(BlockArgumentError, match=match):
        make()
