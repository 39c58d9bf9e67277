"""Receptive-field attention convolutions RFAConv, RFCBAMConv, RFCAConv: contract cases for test_blocks.py, the
official outputs (tests/fixtures/official), the paper's expanded-map formulation recomputed in float64, parameter
counts against the official classes, Ultralytics' model.fuse() and argument checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import tensors_of, trained_bn

from yolo_attn.modules._common import BlockArgumentError, Conv1x1
from yolo_attn.modules.rfa import RFAConv, RFCAConv, RFCBAMConv

FIXTURES = Path(__file__).parent / "fixtures" / "official"


def _case(factory, c1, c2, s):
    return (
        factory,
        lambda b, h, w: torch.randn(b, c1, h, w),
        lambda b, h, w: (b, c2, math.ceil(h / s), math.ceil(w / s)),
    )


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "RFAConv": _case(lambda: RFAConv(16, 24, 3, 1), 16, 24, 1),
    "RFAConv-s2": _case(lambda: RFAConv(16, 32, 3, 2), 16, 32, 2),
    "RFAConv-k5-g2": _case(lambda: RFAConv(8, 16, 5, 1, g=2), 8, 16, 1),
    "RFCBAMConv": _case(lambda: RFCBAMConv(16, 24, 3, 1), 16, 24, 1),
    "RFCBAMConv-s2": _case(lambda: RFCBAMConv(16, 32, 3, 2), 16, 32, 2),
    "RFCAConv": _case(lambda: RFCAConv(16, 24, 3, 1), 16, 24, 1),
    "RFCAConv-s2": _case(lambda: RFCAConv(16, 32, 3, 2), 16, 32, 2),
}


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------------------------
# The official outputs
# ----------------------------------------------------------------------------------------------------------------
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _give_bias(m):
    """The official final conv has a bias (redundant before its BN in RFAConv / RFCBAMConv)."""
    conv = m.conv.conv
    conv.bias = nn.Parameter(torch.zeros(conv.out_channels))


def _as_official(name: str, c1: int, c2: int, k: int, s: int):
    """Ours built in the official YOLOv5 class's configuration, and the map official key -> our key."""
    if name == "RFAConv":
        m = RFAConv(c1, c2, k, s, act=nn.ReLU())  # official: conv (bias) + BN + ReLU at the end
        keys = {"get_weight.1.weight": "get_weight.weight", "generate_feature.0.weight": "generate.conv.weight"}
        keys.update({f"generate_feature.1.{a}": f"generate.bn.{a}" for a in _BN})
        keys.update({f"conv.1.{a}": f"conv.bn.{a}" for a in _BN})
    elif name == "RFCBAMConv":
        m = RFCBAMConv(c1, c2, k, s, act=nn.ReLU())
        m.se[0], m.se[2] = Conv1x1(c1, 16, bias=False), Conv1x1(16, c1, bias=False)  # official: hidden width 16
        keys = {"generate.0.weight": "generate.conv.weight", "get_weight.0.weight": "get_weight.weight",
                "se.fc.0.weight": "se.0.weight", "se.fc.2.weight": "se.2.weight"}  # fmt: skip
        keys.update({f"generate.1.{a}": f"generate.bn.{a}" for a in _BN})
        keys.update({f"conv.1.{a}": f"conv.bn.{a}" for a in _BN})
    else:
        m = RFCAConv(c1, c2, k, s, act=False)
        m.conv.bn = nn.Identity()  # official: a plain biased conv at the end
        keys = {"generate.0.weight": "generate.conv.weight"}
        keys.update({f"generate.1.{a}": f"generate.bn.{a}" for a in _BN})
        keys.update({f"bn1.{a}": f"bn1.{a}" for a in _BN})
        keys.update({f"{n}.{a}": f"{n}.{a}" for n in ("conv1", "conv_h", "conv_w") for a in ("weight", "bias")})
    _give_bias(m)
    keys.update({"conv.0.weight": "conv.conv.weight", "conv.0.bias": "conv.conv.bias"})
    return m, keys


def _fixture_cases(name: str):
    d = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    return [dict(d, name="main")] + d["variants"]


@pytest.mark.parametrize("name", ["RFAConv", "RFCBAMConv", "RFCAConv"])
def test_matches_the_official_outputs(name):
    """The official YOLOv5-integration classes' eval and train outputs (state dicts mapped key by key), stride 1 and
    stride 2 at an odd size."""
    for case in _fixture_cases(name):
        c1, c2, k, s = list(case["init_kwargs"].values())[:4]
        m, keys = _as_official(name, c1, c2, k, s)
        ours = m.state_dict()
        sd = {keys[key]: v.reshape(ours[keys[key]].shape) for key, v in case["state_dict"].items()}
        assert set(sd) == set(ours)
        m.load_state_dict(sd)
        assert _nparams(m) == case["num_params"]
        for mode, ref in (("eval", case["output"]), ("train", case["output_train"])):
            getattr(m, mode)()
            with torch.no_grad():
                y = m(case["input"])
            assert y.shape == ref.shape
            err = ((y - ref).abs().max() / ref.abs().max()).item()
            assert err <= 1e-5, (case["name"], mode, err)


def test_parameter_counts_against_the_official_classes():
    """At C = 64 (64 -> 64, k 3, s 1) the official classes have 43968, 45458 and 44952 parameters (FACTS). Ours in
    their configuration have exactly those; our defaults differ by the documented departures."""
    official = {"RFAConv": 43968, "RFCBAMConv": 45458, "RFCAConv": 44952}
    for name, n in official.items():
        assert _nparams(_as_official(name, 64, 64, 3, 1)[0]) == n
    generate = 64 * 9 * 9 + 2 * 576  # depth-wise 3x3 with 9 outputs per channel + BN
    final = 64 * 64 * 9 + 2 * 64  # RFConv: conv without bias + BN (official: + 64 conv biases)
    assert _nparams(RFAConv(64, 64)) == 576 + generate + final == 43968 - 64
    # SE hidden 64 // 16 = 4 (official: 16): 2 * 64 * 4 weights instead of 2 * 64 * 16
    assert _nparams(RFCBAMConv(64, 64)) == generate + 18 + 2 * 64 * 4 + final == 45458 - 64 - 2 * 64 * 12
    # coordinate attention mid = max(8, 64 // 32) = 8; BN after the final conv (official: bias only)
    ca = (64 * 8 + 8) + 2 * 8 + 2 * (8 * 64 + 64)
    assert _nparams(RFCAConv(64, 64)) == generate + ca + final == 44952 + 64
    assert _nparams(RFAConv(256, 256)) == 256 * 9 + 256 * 81 + 2 * 2304 + 256 * 256 * 9 + 512


# ----------------------------------------------------------------------------------------------------------------
# The paper's formulation: rearrange to the expanded map, then a k x k conv with stride k
# ----------------------------------------------------------------------------------------------------------------
def _expand(t: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, k^2, h, w) -> (B, C, h k, w k), feature j = n1 k + n2 of position (i, q) at (i k + n1, q k + n2),
    pixel by pixel."""
    b, c, _, h, w = t.shape
    out = t.new_zeros(b, c, h * k, w * k)
    for i in range(h):
        for q in range(w):
            for n1 in range(k):
                for n2 in range(k):
                    out[:, :, i * k + n1, q * k + n2] = t[:, :, n1 * k + n2, i, q]
    return out


def _bn(t, bn):
    shape = (1, -1, 1, 1)
    return (t - bn.running_mean.view(shape)) / (bn.running_var.view(shape) + bn.eps).sqrt() * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def _rf_features(m, x):
    """F_rf = ReLU(BN(grouped k x k conv)), (B, C, k^2, h, w), BN written out."""
    g = m.generate
    y = F.relu(_bn(F.conv2d(x, g.conv.weight, None, m.s, m.k // 2, 1, x.shape[1]), g.bn))
    return y.view(x.shape[0], x.shape[1], m.k * m.k, y.shape[2], y.shape[3])


def _final(m, expanded):
    return m.conv.act(_bn(F.conv2d(expanded, m.conv.conv.weight, None, m.k, 0, 1, m.conv.conv.groups), m.conv.bn))


@pytest.mark.parametrize("k, s, g", [(3, 1, 1), (3, 2, 2), (5, 2, 1)])
def test_rfaconv_is_a_stride_k_conv_over_attention_weighted_receptive_fields(k, s, g):
    torch.manual_seed(0)
    m = trained_bn(RFAConv(8, 12, k, s, g=g), 0.5).double().eval()
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        f = _rf_features(m, x)
        pooled = F.avg_pool2d(x, k, s, k // 2, count_include_pad=True)
        logits = F.conv2d(pooled, m.get_weight.weight, None, 1, 0, 1, 8)  # grouped 1x1 conv C -> C k^2
        a = logits.view_as(f).softmax(2)
        expected = _final(m, _expand(f * a, k))
        assert expected.shape[-2:] == (math.ceil(9 / s), math.ceil(7 / s))
        assert torch.allclose(m(x), expected, atol=1e-10)


def test_rfcbamconv_follows_its_equations():
    torch.manual_seed(0)
    m = trained_bn(RFCBAMConv(32, 16, 3, 2, reduction=8), 0.5).double().eval()
    assert m.se[0].out_channels == 4  # hidden = C // r
    x = torch.randn(2, 32, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        e = _expand(_rf_features(m, x), 3)
        z = x.mean((2, 3))
        mc = torch.sigmoid(F.linear(F.relu(F.linear(z, m.se[0].weight.flatten(1))), m.se[2].weight.flatten(1)))
        desc = torch.cat((e.max(1, keepdim=True).values, e.mean(1, keepdim=True)), 1)
        ms = torch.sigmoid(F.conv2d(desc, m.get_weight.weight, padding=1))
        expected = _final(m, e * mc[:, :, None, None] * ms)
        assert torch.allclose(m(x), expected, atol=1e-10)


def test_rfcaconv_follows_its_equations():
    torch.manual_seed(0)
    m = trained_bn(RFCAConv(16, 24, 3, 2, reduction=4), 0.5).double().eval()
    assert m.conv1.out_channels == 8  # max(8, 16 // 4)
    x = torch.randn(2, 16, 7, 10, dtype=torch.float64)
    with torch.no_grad():
        e = _expand(_rf_features(m, x), 3)  # (B, C, 12, 15)
        zh, zw = e.mean(3, keepdim=True), e.mean(2, keepdim=True).transpose(2, 3)
        y = _bn(F.conv2d(torch.cat((zh, zw), 2), m.conv1.weight, m.conv1.bias), m.bn1)
        y = y * F.relu6(y + 3) / 6  # h-swish
        yh, yw = y[:, :, :12], y[:, :, 12:]
        ah = torch.sigmoid(F.conv2d(yh, m.conv_h.weight, m.conv_h.bias))  # (B, C, 12, 1)
        aw = torch.sigmoid(F.conv2d(yw, m.conv_w.weight, m.conv_w.bias)).transpose(2, 3)  # (B, C, 1, 15)
        expected = _final(m, e * ah * aw)
        assert torch.allclose(m(x), expected, atol=1e-10)


def test_strided_output_size_is_conv_s():
    from ultralytics.nn.modules import Conv

    for h, w in ((13, 9), (4, 4), (1, 1), (2, 3)):
        x = torch.randn(1, 8, h, w)
        for cls in (RFAConv, RFCBAMConv, RFCAConv):
            assert cls(8, 16, 3, 2).eval()(x).shape == Conv(8, 16, 3, 2).eval()(x).shape


# ----------------------------------------------------------------------------------------------------------------
# Ultralytics' model.fuse() and the eval-mode BN folding
# ----------------------------------------------------------------------------------------------------------------
def test_eval_folding_and_ultralytics_fuse_give_the_same_outputs():
    """Eval mode (the BN of F_rf folded into its conv on the fly) and Ultralytics' fuse_conv_and_bn on both inner
    Convs (what BaseModel.fuse() does; the final RFConv keeps its 1x1 form in forward_fuse) agree."""
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    torch.manual_seed(0)
    x = torch.randn(2, 16, 11, 9)
    for cls in (RFAConv, RFCBAMConv, RFCAConv):
        m = trained_bn(cls(16, 24, 3, 2), 0.5).eval()
        with torch.no_grad():
            ref = m(x)
            for conv in (m.generate, m.conv):
                conv.conv = fuse_conv_and_bn(conv.conv, conv.bn)
                delattr(conv, "bn")
                conv.forward = conv.forward_fuse
            got = m(x)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5), cls.__name__


def test_a_yolo_model_with_rfa_convs_builds_trains_and_fuses():
    """The three blocks in place of a small DetectionModel's stride-2 Convs: a training step, then fuse()."""
    from ultralytics.nn.tasks import DetectionModel

    cfg = {
        "nc": 2,
        "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]],
                     [-1, 1, "Conv", [64, 3, 2]]],
        "head": [[[2, 3], 1, "Detect", ["nc"]]],
    }  # fmt: skip
    torch.manual_seed(0)
    model = DetectionModel(cfg, ch=3, verbose=False)
    for i, new in {1: RFAConv(16, 32, 3, 2), 2: RFCBAMConv(32, 32, 3, 2), 3: RFCAConv(32, 64, 3, 2)}.items():
        old = model.model[i]
        new.i, new.f, new.type, new.np = old.i, old.f, type(new).__name__, _nparams(new)
        model.model[i] = new
    x = torch.rand(2, 3, 64, 96)
    out = model.train()(x)
    sum(t.float().sum() for t in tensors_of(out)).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    trained_bn(model, 0.5).eval()
    with torch.no_grad():
        ref = model(x)[0]
        model.fuse(verbose=False)
        got = model(x)[0]
    assert not any(hasattr(model.model[i].conv, "bn") or hasattr(model.model[i].generate, "bn") for i in (1, 2, 3))
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RFAConv(16, 32, 4), "RFAConv: k must be odd"),
        (lambda: RFAConv(16, 32, 3, 0), "RFAConv: s must be an integer >= 1"),
        (lambda: RFAConv(16, 32, 3, 1, 0), "RFAConv: p must be None"),
        (lambda: RFAConv(16, 32, 3, 1, None, 3), "RFAConv: .*groups g=3"),
        (lambda: RFAConv(16, 32, 3, 1, None, 1, 2), "RFAConv: d must be 1"),
        (lambda: RFAConv(16, 32.0), "RFAConv: c2"),
        (lambda: RFCBAMConv(16, 32, 2), "RFCBAMConv: k must be odd"),
        (lambda: RFCBAMConv(16, 32, reduction=0), "RFCBAMConv: reduction"),
        (lambda: RFCAConv(16, 32, reduction=True), "RFCAConv: reduction"),
        (lambda: RFCAConv(16, 32, 3, 1, 2), "RFCAConv: p must be None"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(BlockArgumentError, match=match):
        make()


def test_conv_signature_and_automatic_padding_accepted():
    m = RFAConv(16, 32, 5, 2, 2, 1, 1, False)  # Conv's positional order, p = k // 2 written out
    assert isinstance(m.conv.act, nn.Identity) and m.conv.conv.stride == (5, 5) and m.generate.conv.stride == (2, 2)
