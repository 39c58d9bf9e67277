"""Slim-neck (yolo_attn.modules.slimneck: GSConv, GSBottleneck, VoVGSCSP): contract cases for tests/test_blocks.py,
the three official copies' outputs reproduced (tests/fixtures/official), the equations rewritten with other
primitives in float64, parameter counts, strides on odd sizes, bad arguments."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import n_params as _n_params
from conftest import trained_bn
from ultralytics.nn.modules import C2f, Conv

from yolo_attn.modules._common import BlockArgumentError
from yolo_attn.modules.slimneck import GSBottleneck, GSConv, VoVGSCSP

torch.manual_seed(0)

FIXTURES = Path(__file__).parent / "fixtures" / "official"


def _up(n: int) -> int:
    return math.ceil(n / 2)


def _inputs(c):
    return lambda b, h, w: torch.randn(b, c, h, w)


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "GSConv": (lambda: GSConv(16, 32, 3, 1), _inputs(16), lambda b, h, w: (b, 32, h, w)),
    "GSConv-s2": (lambda: GSConv(16, 24, 3, 2), _inputs(16), lambda b, h, w: (b, 24, _up(h), _up(w))),
    "GSConv-k1-s2-g2": (lambda: GSConv(48, 64, 1, 2, 2), _inputs(48), lambda b, h, w: (b, 64, _up(h), _up(w))),
    "VoVGSCSP": (lambda: VoVGSCSP(16, 32, 2), _inputs(16), lambda b, h, w: (b, 32, h, w)),
    "VoVGSCSP-e025": (lambda: VoVGSCSP(48, 64, 1, False, 1, 0.25), _inputs(48), lambda b, h, w: (b, 64, h, w)),
}


def _randomised(m: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return trained_bn(m, 0.2, seed)


@pytest.fixture
def mish():
    """The network-wide activation a YAML's ``activation: nn.Mish()`` sets (Ultralytics' parser sets
    Conv.default_act), as in the paper's detectors and the authors' models_inPaper.py / YOLOv5 copies."""
    old = Conv.default_act
    Conv.default_act = nn.Mish()
    yield
    Conv.default_act = old


# ----------------------------------------------------------------------------------------------------------------
# The authors' three copies (tests/fixtures/official)
# ----------------------------------------------------------------------------------------------------------------
def _cases(block: str) -> dict[str, dict]:
    fx = torch.load(FIXTURES / f"{block}.pt", weights_only=True)
    main = {k: v for k, v in fx.items() if k != "variants"}
    return {"main": main, **{v["name"]: v for v in fx.get("variants", [])}}


def _check(m: nn.Module, case: dict, state: dict, perm: torch.Tensor | None = None) -> None:
    """Strict load, then eval and train outputs to 1e-5 relative; ``perm``: official channel j is our channel
    perm[j]."""
    m.load_state_dict(state, strict=True)
    for mode, key in (("eval", "output"), ("train", "output_train")):
        if key not in case:
            continue
        with torch.no_grad():
            y = copy.deepcopy(m).train(mode == "train")(case["input"].clone())
        if perm is not None:
            y = y[:, perm]
        ref = case[key]
        assert y.shape == ref.shape and (y - ref).abs().max() <= 1e-5 * ref.abs().max(), (mode, (y - ref).abs().max())


def _v5_order(c: int) -> torch.Tensor:
    """The YOLOv5 copy's shuffle as indices into our output: it puts cat[x1, x2]'s even channels first, then its odd
    ones; ours interleaves (channel 2i = x1_i, 2i + 1 = x2_i)."""
    half = c // 2
    ours = torch.tensor([2 * m if m < half else 2 * (m - half) + 1 for m in range(c)])  # cat index -> our channel
    return ours[torch.cat((torch.arange(0, c, 2), torch.arange(1, c, 2)))]


_GS = _cases("GSConv")


def test_gsconv_reproduces_the_ultralytics_copy():
    for name in ("main", "v8_k1_s1_odd"):
        case = _GS[name]
        kw = case["init_kwargs"]
        _check(GSConv(kw["c1"], kw["c2"], kw["k"], kw["s"]), case, case["state_dict"])


def test_gsconv_reproduces_the_paper_copy_with_mish(mish):
    case = _GS["inPaper_mish_k3"]
    kw = case["init_kwargs"]
    _check(GSConv(kw["c1"], kw["c2"], kw["k"], kw["s"]), case, case["state_dict"])


def test_gsconv_yolov5_copy_is_a_channel_permutation_of_ours(mish):
    case = _GS["yolov5_mish_evenodd_shuffle_k3"]
    kw = case["init_kwargs"]
    _check(GSConv(kw["c1"], kw["c2"], kw["k"], kw["s"]), case, case["state_dict"], perm=_v5_order(kw["c2"]))


_VOV = _cases("VoVGSCSP")


def test_vovgscsp_ultralytics_copy_is_ours_with_its_two_branches_swapped_in():
    """The authors' Ultralytics copy runs a C2f(c_, c_, 1, True) where the paper has GS bottlenecks and a 3x3 GSConv
    as the second branch: built so from our parts, it reproduces that copy (same aggregation, same GSConv)."""
    case = _VOV["main"]
    kw = case["init_kwargs"]
    c_ = int(kw["c2"] * kw["e"])
    m = VoVGSCSP(kw["c1"], kw["c2"], kw["n"], kw["shortcut"], kw["g"], kw["e"])
    m.cv2, m.m = GSConv(kw["c1"], c_, 3, 1), C2f(c_, c_, 1, True)
    state = {k.replace("gc2.", "cv2.", 1) if k.startswith("gc2.") else k: v for k, v in case["state_dict"].items()}
    _check(m, case, state)


def test_vovgscsp_reproduces_the_paper_copy(mish):
    """models_inPaper.py: one GS bottleneck (hidden c_ / 2), Mish; its unused ``res`` conv is not part of ours."""
    case = _VOV["inPaper_mish"]
    kw = case["init_kwargs"]
    state = {k.replace("gsb.", "m.0.", 1): v for k, v in case["state_dict"].items() if not k.startswith("res.")}
    _check(VoVGSCSP(kw["c1"], kw["c2"], kw["n"]), case, state)


def _absorb_v5_shuffles(state: dict, c_: int, n: int) -> tuple[dict, torch.Tensor]:
    """The YOLOv5 copy's VoV-GSCSP (n GS bottlenecks of hidden width c_, e = 1.0) with its even / odd shuffle: every
    GSConv output feeding a dense conv is our output permuted, so the consumer's input channels are permuted; a GS
    bottleneck's sum is kept in the permuted order by permuting its shortcut conv's outputs, and the next bottleneck
    and cv3 read it permuted. Returns our state and nothing else to permute at the output."""
    o = _v5_order(c_)  # official channel j of a width-c_ GSConv output is our channel o[j]
    inv = torch.argsort(o)  # our channel i is official channel inv[i]
    out = {k.replace("gsb.", "m.", 1): v.clone() for k, v in state.items() if not k.startswith("res.")}
    for i in range(n):
        p = f"m.{i}."
        w = out[p + "conv_lighting.1.cv1.conv.weight"]  # reads GSConv 0's (permuted) output
        out[p + "conv_lighting.1.cv1.conv.weight"] = w[:, inv]
        for key in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
            t = out[p + "shortcut." + key]  # its outputs join GSConv 1's permuted output
            out[p + "shortcut." + key] = t[inv]
        if i > 0:  # reads the previous bottleneck's permuted output
            for key in ("conv_lighting.0.cv1.conv.weight", "shortcut.conv.weight"):
                out[p + key] = out[p + key][:, inv]
    w = out["cv3.conv.weight"]
    out["cv3.conv.weight"] = torch.cat((w[:, :c_], w[:, c_:][:, inv]), 1)
    return out, o


def test_vovgscsp_reproduces_the_yolov5_copy_stacking_n_bottlenecks(mish):
    """The YOLOv5 copy honours n (here 2) with GS bottlenecks of e = 1.0, and its GSConvs shuffle even / odd: ours,
    with its bottlenecks built at e = 1.0 and the permutations absorbed by the weights that read them."""
    case = _VOV["yolov5_mish_n2"]
    kw = case["init_kwargs"]
    m = VoVGSCSP(kw["c1"], kw["c2"], kw["n"])
    c_ = m.cv1.conv.out_channels
    m.m = nn.Sequential(*(GSBottleneck(c_, c_, e=1.0) for _ in range(kw["n"])))
    state, _ = _absorb_v5_shuffles(case["state_dict"], c_, kw["n"])
    _check(m, case, state)


# ----------------------------------------------------------------------------------------------------------------
# Equations
# ----------------------------------------------------------------------------------------------------------------
def _conv(x, c: Conv, act=F.silu, stride=1, groups=1):
    """An Ultralytics Conv written out: conv (no bias), eval BN, activation."""
    k = c.conv.kernel_size[0]
    y = F.conv2d(x, c.conv.weight, None, stride, k // 2, 1, groups)
    y = (y - c.bn.running_mean.view(1, -1, 1, 1)) / (c.bn.running_var.view(1, -1, 1, 1) + c.bn.eps).sqrt()
    y = y * c.bn.weight.view(1, -1, 1, 1) + c.bn.bias.view(1, -1, 1, 1)
    return act(y)


def _gsconv(m: GSConv, x, act=F.silu):
    x1 = _conv(x, m.cv1, act, m.cv1.conv.stride[0], m.cv1.conv.groups)
    x2 = _conv(x1, m.cv2, act, 1, x1.shape[1])
    y = torch.empty(x1.shape[0], 2 * x1.shape[1], *x1.shape[2:], dtype=x.dtype)
    y[:, 0::2], y[:, 1::2] = x1, x2  # the shuffle: SC and DSC channels alternate
    return y


@pytest.mark.parametrize("k, s, g", [(1, 1, 1), (3, 2, 1), (3, 1, 2), (5, 2, 4)])
def test_gsconv_equation(k, s, g):
    m = _randomised(GSConv(16, 24, k, s, g)).double().eval()
    x = torch.randn(2, 16, 13, 9, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(m(x), _gsconv(m, x), atol=1e-12)
    assert m.cv2.conv.kernel_size == (5, 5) and m.cv2.conv.groups == 12  # the DSC half: 5x5 depth-wise


def test_gsconv_strides_like_conv_on_odd_sizes():
    for k in (1, 3, 5):
        x = torch.randn(1, 8, 13, 9)
        assert GSConv(8, 16, k, 2)(x).shape[-2:] == Conv(8, 16, k, 2)(x).shape[-2:] == (7, 5)


def test_gsconv_activation_is_the_hosts(mish):
    assert isinstance(GSConv(8, 16).cv1.act, nn.Mish)  # a YAML's `activation: nn.Mish()`, the paper's choice
    assert isinstance(GSConv(8, 16, act=False).cv2.act, nn.Identity)


def test_gsconv_default_activation_is_silu():
    m = GSConv(8, 16)
    assert isinstance(m.cv1.act, nn.SiLU) and isinstance(m.cv2.act, nn.SiLU)


def test_vovgscsp_equation_with_n_bottlenecks():
    m = _randomised(VoVGSCSP(16, 32, 3)).double().eval()
    x = torch.randn(2, 16, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        t = _conv(x, m.cv1)
        for b in m.m:  # GS bottleneck: GSConv 1x1, GSConv 3x3 without activation, plus a 1x1 Conv branch
            g0, g1 = b.conv_lighting
            t = _gsconv(g1, _gsconv(g0, t), act=lambda v: v) + _conv(t, b.shortcut, act=lambda v: v)
        expected = _conv(torch.cat((_conv(x, m.cv2), t), 1), m.cv3)
        assert torch.allclose(m(x), expected, atol=1e-12)
    assert len(m.m) == 3  # n honoured
    assert m.m[0].conv_lighting[0].cv1.conv.out_channels == 4  # GSConv(c_, c_ / 2): 16 -> 8 -> halves of 4


def test_vovgscsp_ignores_shortcut_and_g_as_the_official_copies():
    a, b = VoVGSCSP(16, 32, 2, True, 1), VoVGSCSP(16, 32, 2, False, 4)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


# ----------------------------------------------------------------------------------------------------------------
# Parameter counts
# ----------------------------------------------------------------------------------------------------------------
def test_parameter_counts():
    # FACTS.md: GSConv(64, 64, 3, 1) 19360 in all copies
    assert _n_params(GSConv(64, 64, 3, 1)) == (64 * 32 * 9 + 64) + (32 * 25 + 64) == 19360
    # VoVGSCSP(64, 64): the paper copy's 22072 counts its unused `res` Conv(32, 32, 3) (9216 + 64), left out here
    assert _n_params(VoVGSCSP(64, 64)) == 22072 - (32 * 32 * 9 + 64) == 12792
    gsb = _n_params(GSBottleneck(32, 32))
    assert gsb == ((32 * 8 + 16) + (8 * 25 + 16)) + ((16 * 16 * 9 + 32) + (16 * 25 + 32)) + (32 * 32 + 64) == 4344
    assert _n_params(VoVGSCSP(64, 64, 3)) == 12792 + 2 * gsb
    # the YOLOv5 copy's n=1 (24864) with its e = 1.0 bottleneck, again without `res`
    assert _n_params(GSBottleneck(32, 32, e=1.0)) + 12792 - gsb == 24864 - 9280
    assert _n_params(GSConv(256, 256, 3, 1)) == 256 * 128 * 9 + 256 + 128 * 25 + 256


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: GSConv(16, 15), "GSConv: output width c2 must be even"),
        (lambda: GSConv(16, 32, g=3), "GSConv: input width 16 and half the output width 16 must divide by g=3"),
        (lambda: GSConv(16, 32, k=0), "GSConv: k"),
        (lambda: GSConv(16, 32, s=True), "GSConv: s"),
        (lambda: GSBottleneck(16, 16, e=0.1), "GSBottleneck: hidden width"),
        (lambda: VoVGSCSP(16, 24, e=0.25), "VoVGSCSP: hidden width"),
        (lambda: VoVGSCSP(16, 32, n=0), "VoVGSCSP: n"),
        (lambda: VoVGSCSP(16, 32, e=0), "VoVGSCSP: e"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(BlockArgumentError, match=match):
        make()


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (8, 8)])
def test_gsconv_takes_channels_last_and_tiny_maps(hw):
    """A conv's output may be channels-last (its input was, or a 1x1 map in a fused YOLO26 neck): the interleave of the
    two halves must not assume a contiguous layout (it did: `view` failed in the yolo26-slimneck ONNX check)."""
    torch.manual_seed(0)
    m = GSConv(16, 32, 3, 1).eval()
    x = torch.randn(2, 16, *hw)
    with torch.no_grad():
        ref = m(x)
        got = m(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, ref, atol=1e-6)
