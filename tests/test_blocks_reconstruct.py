"""ScConv (yolo_attn.modules.reconstruct: SRU + CRU, CVPR 2023): contract cases for tests/test_blocks.py, the
most-used code's outputs reproduced (tests/fixtures/official), the paper's equations rewritten with other primitives
in float64, parameter counts, GroupNorm groups, bad arguments, and the distinction from SCConv (CVPR 2020)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import n_params as _n_params
from conftest import width_case as _width

from yolo_attn.modules._common import BlockArgumentError, IdentityStart
from yolo_attn.modules.reconstruct import CRU, SRU, ScConv, gn_groups

torch.manual_seed(0)

FIXTURES = Path(__file__).parent / "fixtures" / "official"


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "ScConv": (lambda: ScConv(32), *_width(32)),
    "ScConv-g16-alpha075-k5": (lambda: ScConv(48, group_num=16, alpha=0.75, group_kernel_size=5), *_width(48)),
    "ScConv-64-sq4-g4": (lambda: ScConv(64, squeeze_ratio=4, group_size=4), *_width(64)),
}


def _randomised(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter moved by N(0, 0.1) (GN's affine off its 1 / 0 start)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def _kwargs(official: dict) -> dict:
    """The most-used code's constructor kwargs (its spellings; group_num as given, else ScConv's 4) -> ours."""
    names = {"group_num": "group_num", "gate_treshold": "gate_threshold", "alpha": "alpha", "squeeze_radio":
             "squeeze_ratio", "group_size": "group_size", "group_kernel_size": "group_kernel_size"}  # fmt: skip
    kw = {names[k]: v for k, v in official.items() if k != "op_channel"}
    kw.setdefault("group_num", 4)  # ScConv's own default there (its SRU alone defaults to 16)
    return kw


# ----------------------------------------------------------------------------------------------------------------
# The most-used code's outputs (tests/fixtures/official, format in its README)
# ----------------------------------------------------------------------------------------------------------------
def _cases() -> list[dict]:
    fx = torch.load(FIXTURES / "ScConv.pt", weights_only=True)
    main = {k: v for k, v in fx.items() if k != "variants"}
    main.setdefault("name", "main")
    return [main, *fx.get("variants", [])]


_CASES = _cases()


@pytest.mark.parametrize("case", _CASES, ids=[c["name"] for c in _CASES])
def test_scconv_reproduces_the_most_used_code(case):
    """cheng-haha/ScConv (no official code exists), keys as there. The hard gate is discontinuous at the threshold,
    so: (1) our gate input r equals the stored one; (2) the output, away from every position whose r lies within
    1e-5 of 0.5 (the channel pair it feeds and the GWC window around it), equals the reference to 1e-5 relative;
    (3) with the stored r as the gate input, the whole output does (no position can flip)."""
    m = ScConv(case["init_kwargs"]["op_channel"], **_kwargs(case["init_kwargs"]))
    m.load_state_dict(case["state_dict"], strict=True)
    m.eval()
    x, ref, r_ref = case["input"].clone(), case["output"], case["sru_reweights"]
    scale = ref.abs().max()
    with torch.no_grad():
        r = m.SRU.reweights(x)
        y = m(x)
        y_same_gate = m.CRU(m.SRU.gated(x, r_ref))
    assert r.shape == r_ref.shape and (r - r_ref).abs().max() <= 1e-6
    near = (r_ref - 0.5).abs() < 1e-5  # (B, C, H, W)
    sides_differ = ((r > 0.5) != (r_ref > 0.5)) & ~near
    assert not sides_differ.any()
    k = m.CRU.GWC.kernel_size[0]
    touched = F.max_pool2d(near.any(1, keepdim=True).float(), k, 1, k // 2) > 0  # (B, 1, H, W): all channels mix
    if ((r > 0.5) != (r_ref > 0.5)).any():  # a flip moves the pooled softmax too: only the same-gate check is exact
        touched = torch.ones_like(touched)
    keep = ~touched.expand_as(ref)
    assert (y - ref)[keep].abs().max() <= 1e-5 * scale, (y - ref)[keep].abs().max()
    assert (y_same_gate - ref).abs().max() <= 1e-5 * scale, (y_same_gate - ref).abs().max()
    assert y.shape == ref.shape


def test_scconv_parameters_match_the_most_used_code():
    """cheng-haha/ScConv(64): 7616. GN affine 2C; squeezes (C/2)^2 / 2 each, no bias; GWC (C/4 / g) x C x k^2 + C
    bias; PWC1 C/4 x C; PWC2 C/4 x 3C/4."""

    def count(c, g=2, k=3):
        up = low = c // 2
        us, ls = up // 2, low // 2
        return 2 * c + up * us + low * ls + (us // g) * c * k * k + c + us * c + ls * (c - ls)

    assert _n_params(ScConv(64)) == count(64) == 7616
    assert _n_params(ScConv(256)) == count(256) == 119552


# ----------------------------------------------------------------------------------------------------------------
# The paper's equations
# ----------------------------------------------------------------------------------------------------------------
def _scconv_reference(m: ScConv, x: torch.Tensor) -> torch.Tensor:
    """Float64, term by term: GN written out (per-group mean / biased variance), W_gamma = gamma / sum gamma,
    r = sigmoid(GN(x) W_gamma), the soft gates, the cross reconstruction, then the CRU with einsum 1x1 convs and a
    softmax over the 2C pooled channels."""
    gn = m.SRU.gn
    b, c = x.shape[:2]
    g = gn.num_groups
    xg = x.view(b, g, -1)
    xn = ((xg - xg.mean(-1, keepdim=True)) / (xg.var(-1, unbiased=False, keepdim=True) + gn.eps).sqrt()).view_as(x)
    gnx = xn * gn.weight.view(1, -1, 1, 1) + gn.bias.view(1, -1, 1, 1)
    r = torch.sigmoid(gnx * (gn.weight / gn.weight.sum()).view(1, -1, 1, 1))
    t = m.SRU.gate_threshold
    w1 = torch.where(r > t, torch.ones_like(r), r)
    w2 = torch.where(r > t, torch.zeros_like(r), r)
    x1, x2 = w1 * x, w2 * x
    half = c // 2
    xs = torch.cat((x1[:, :half] + x2[:, half:], x1[:, half:] + x2[:, :half]), 1)

    cru = m.CRU
    up = cru.up_channel

    def pw(t, conv):
        y = torch.einsum("oc,bchw->bohw", conv.weight.flatten(1), t)
        return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)

    xu, xl = pw(xs[:, :up], cru.squeeze1), pw(xs[:, up:], cru.squeeze2)
    gwc = cru.GWC
    y1 = F.conv2d(xu, gwc.weight, gwc.bias, padding=gwc.padding, groups=gwc.groups) + pw(xu, cru.PWC1)
    y2 = torch.cat((pw(xl, cru.PWC2), xl), 1)
    both = torch.cat((y1, y2), 1)
    beta = torch.softmax(both.mean((2, 3)), 1)[:, :, None, None]
    return (beta * both)[:, :c] + (beta * both)[:, c:]


@pytest.mark.parametrize(
    "c, kw, size",
    [(16, {}, (9, 7)), (32, {"alpha": 0.75, "group_kernel_size": 5, "group_num": 8}, (13, 9)),
     (24, {"squeeze_ratio": 4, "group_size": 3, "gate_threshold": 0.4}, (6, 5)), (16, {}, (1, 1))],
)  # fmt: skip
def test_scconv_equation(c, kw, size):
    torch.manual_seed(0)
    m = _randomised(ScConv(c, **kw)).double().eval()
    x = torch.randn(2, c, *size, dtype=torch.float64)
    ref = _scconv_reference(m, x)
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=1e-12)
    assert torch.allclose(m(x.clone().requires_grad_()), ref, atol=1e-12)  # the autograd (out-of-place) path


def test_sru_gates_and_cross_reconstruction():
    """Gate above the threshold: W1 = 1, W2 = 0 (the informative part passes whole); below: both r (soft, as the most
    used code). The reconstruction swaps halves: X_s = [X11 + X22 ; X12 + X21]. The gates get gradients."""
    sru = SRU(4).double()
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 4, 1, 1)
    r = torch.tensor([0.9, 0.2, 0.3, 0.7], dtype=torch.float64).view(1, 4, 1, 1)
    y = sru.gated(x, r).flatten()
    # W1 x = [1, 0.4, 0.9, 4], W2 x = [0, 0.4, 0.9, 0]: [1 + 0.9, 0.4 + 0] ; [0.9 + 0, 4 + 0.4]
    assert torch.allclose(y, torch.tensor([1.9, 0.4, 0.9, 4.4], dtype=torch.float64))
    rg = r.clone().requires_grad_()
    sru.gated(x, rg).sum().backward()
    assert torch.allclose(rg.grad.flatten(), torch.tensor([0.0, 4.0, 6.0, 0.0], dtype=torch.float64))


def test_cru_softmax_runs_over_both_branches():
    """beta = softmax over the 2C pooled channels of [Y1 ; Y2]: a constant input map gives Y2's identity half back
    weighted by its own share, and the output is a convex-weighted sum of the two branches."""
    torch.manual_seed(0)
    cru = _randomised(CRU(16)).double().eval()
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    seen = {}
    cru.PWC2.register_forward_hook(lambda mod, i, o: seen.__setitem__("low", i[0]))
    with torch.no_grad():
        y = cru(x)
    assert y.shape == x.shape and "low" in seen and seen["low"].shape[1] == 4  # low = 8 -> 8 / 2
    assert cru.PWC2.out_channels == 16 - 4 and cru.GWC.out_channels == 16 and cru.GWC.groups == 2


def test_gn_groups_rule_works_at_every_width():
    """group_num is an upper bound: the largest divisor of C not above it, so every width from 16 to 256 builds,
    and the given group_num whenever it divides C (4 divides every Ultralytics width, a multiple of 8)."""
    for c in range(16, 257, 2):
        for group_num in (4, 16):
            g = gn_groups(c, group_num)
            assert c % g == 0 and g <= group_num and all(c % d for d in range(g + 1, group_num + 1))
            if c % group_num == 0:
                assert g == group_num
            if c % 8 == 0:  # an Ultralytics width: the defaults build (else C / 4 may be odd for group_size 2)
                assert ScConv(c, group_num=group_num).SRU.gn.num_groups == g
            assert ScConv(c, group_num=group_num, group_size=1).SRU.gn.num_groups == g
    assert gn_groups(48, 16) == 16 and gn_groups(40, 16) == 10 and gn_groups(18, 4) == 3


def test_scconv_is_not_scconv_of_2020():
    """ScConv (CVPR 2023) is a plain module that keeps the width; SCConv (CVPR 2020, dynconv.py) is Conv-like."""
    from yolo_attn.modules import reconstruct

    m = ScConv(32)
    assert not isinstance(m, IdentityStart) and "CVPR 2020" in ScConv.__doc__ and "self-calibrated" in ScConv.__doc__
    assert "SCConv" in reconstruct.__doc__ and m(torch.randn(1, 32, 5, 5)).shape == (1, 32, 5, 5)


def test_half_precision_keeps_the_gate_statistics_in_fp32():
    """Under bf16 autocast GN statistics and the gate are fp32: the gate decisions are fp32's on the same input."""
    torch.manual_seed(0)
    m = _randomised(ScConv(32)).eval()
    x = (4 * torch.randn(2, 32, 16, 16)).bfloat16()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        r_half = m.SRU.reweights(x)
    with torch.no_grad():
        r = m.SRU.reweights(x.float())
    assert r_half.dtype == torch.float32 and torch.allclose(r_half, r, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ScConv(33), "even"),
        (lambda: ScConv(0), "c1"),
        (lambda: ScConv(32, 0), "group_num"),
        (lambda: ScConv(32, gate_threshold=1.5), "gate_threshold"),
        (lambda: ScConv(32, gate_threshold=0), "gate_threshold"),
        (lambda: ScConv(32, alpha=1.0), "alpha"),
        (lambda: ScConv(32, alpha=0), "alpha"),
        (lambda: ScConv(32, squeeze_ratio=0), "squeeze_ratio"),
        (lambda: ScConv(8, squeeze_ratio=8), "no channel"),
        (lambda: ScConv(32, group_size=3), "group_size"),
        (lambda: ScConv(32, group_kernel_size=4), "odd"),
        (lambda: ScConv(32, group_kernel_size=True), "group_kernel_size"),
    ],
)
def test_bad_arguments_are_refused(make, match):
    with pytest.raises(BlockArgumentError, match=match):
        make()
