"""Grouped / multi-branch attention (yolo_attn.modules.grouped: EMA, ShuffleAttention, SKAttention): contract cases
for tests/test_blocks.py, equality with the official code's stored outputs (tests/fixtures/official), each paper's
equations rewritten with other primitives in float64, parameter counts, group adaptation, bad arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import case_id as _case_id
from conftest import n_params as _n_params
from conftest import official_cases as _official
from conftest import perturb_constants, trained_bn
from conftest import width_case as _width

from yolo_attn.modules._common import BlockArgumentError
from yolo_attn.modules.grouped import EMA, ShuffleAttention, SKAttention, fitting_groups

torch.manual_seed(0)

FIXTURES = Path(__file__).parent / "fixtures" / "official"


def _trained(m: torch.nn.Module) -> torch.nn.Module:
    """Constant-initialised parameters (SA's 0 / 1 gates, GN affines) moved, BN statistics random: no part a no-op."""
    perturb_constants(m, 0.2, torch.Generator().manual_seed(3))
    return trained_bn(m, 0.3)


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "EMA": (lambda: EMA(64), *_width(64)),  # 32 groups of 2 channels
    "EMA-f8-48": (lambda: EMA(48, factor=8), *_width(48)),  # 8 groups of 6
    "EMA-adapted-48": (lambda: EMA(48), *_width(48)),  # factor 32 does not divide 48: 24 groups of 2
    "EMA-c1-32": (lambda: EMA(32), *_width(32)),  # one channel per group
    "ShuffleAttention": (lambda: ShuffleAttention(64), *_width(64)),  # groups 64 -> 32 at C = 64
    "ShuffleAttention-g8-48": (lambda: ShuffleAttention(48, 8), *_width(48)),
    "ShuffleAttention-g3-48": (lambda: _trained(ShuffleAttention(48, 3)), *_width(48)),  # an odd group count
    "SKAttention": (lambda: SKAttention(32), *_width(32)),  # External-Attention layout, kernels 1, 3, 5, 7
    "SKAttention-paper-64": (lambda: SKAttention(64, (3, 5), groups=32, variant="paper"), *_width(64)),
}


def _assert_matches(m: torch.nn.Module, state: dict, case: dict) -> None:
    """Load ``state`` (our key names), compare eval (and training-mode, where stored) outputs to 1e-5 relative."""
    m.load_state_dict(state)
    modes = [("eval", "output")] + ([("train", "output_train")] if "output_train" in case else [])
    for mode, key in modes:
        getattr(m, mode)()
        with torch.no_grad():
            y = m(case["input"].clone())
        ref = case[key]
        assert y.shape == ref.shape
        err = (y - ref).abs().max().item()
        assert err <= 1e-5 * max(1.0, ref.abs().max().item()), (mode, err)
    m.load_state_dict(state)  # training mode moved the BN statistics
    m.eval()
    y = m(case["input"].clone().requires_grad_())  # the autograd path (no in-place or out= shortcuts)
    assert (y.detach() - case["output"]).abs().max() <= 1e-5 * max(1.0, case["output"].abs().max().item())


# ----------------------------------------------------------------------------------------------------------------
# EMA
# ----------------------------------------------------------------------------------------------------------------
EMA_KEYS = {
    "gn.weight": "norm.weight",
    "gn.bias": "norm.bias",
    "conv1x1.weight": "conv1x1.weight",
    "conv1x1.bias": "conv1x1.bias",
    "conv3x3.weight": "conv3x3.weight",
    "conv3x3.bias": "conv3x3.bias",
}


@pytest.mark.parametrize("case", _official("EMA"), ids=_case_id)
def test_ema_matches_the_official_code(case):
    kw = case["init_kwargs"]
    m = EMA(kw["channels"], factor=kw["factor"])
    assert m.groups == kw["factor"]
    _assert_matches(m, {EMA_KEYS[k]: v for k, v in case["state_dict"].items()}, case)
    assert _n_params(m) == case["num_params"]


def _ema_literal(m: EMA, x: torch.Tensor) -> torch.Tensor:
    """The paper's equations term by term: every group through the 1x1 and 3x3 branches, GroupNorm, both softmaxes
    and the cross-spatial products, written with einsum, F.group_norm and a full c -> c 3x3 conv."""
    b, ch, h, w = x.shape
    g = m.groups
    c = ch // g
    xg = x.reshape(b * g, c, h, w)
    w1, b1 = m.conv1x1.weight[:, :, 0, 0], m.conv1x1.bias
    zh = torch.einsum("oc,nch->noh", w1, xg.mean(3)) + b1[:, None]  # F1 on the H strip
    zw = torch.einsum("oc,ncw->now", w1, xg.mean(2)) + b1[:, None]  # F1 on the W strip (shared weights)
    x1 = F.group_norm(xg * zh.sigmoid()[..., None] * zw.sigmoid()[:, :, None], c, m.norm.weight, m.norm.bias,
                      m.norm.eps)  # fmt: skip
    x2 = F.conv2d(xg, m.conv3x3.weight, m.conv3x3.bias, padding=1)
    s1 = torch.softmax(x1.mean((2, 3)), 1)  # (BG, c)
    s2 = torch.softmax(x2.mean((2, 3)), 1)
    a = torch.einsum("nc,nchw->nhw", s1, x2) + torch.einsum("nc,nchw->nhw", s2, x1)
    return (xg * a.sigmoid()[:, None]).reshape(b, ch, h, w)


@pytest.mark.parametrize(
    "c, factor, size",
    [(64, 32, (7, 5)), (48, 8, (6, 9)), (32, 32, (5, 5)), (24, 4, (1, 1)), (16, 2, (1, 7)), (24, 1, (3, 4))],
)
def test_ema_equations(c, factor, size):
    m = _trained(EMA(c, factor)).double().eval()
    x = torch.randn(2, c, *size, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(m(x), _ema_literal(m, x), atol=1e-10)
    xg = x.clone().requires_grad_()
    assert torch.allclose(m(xg).detach(), _ema_literal(m, x), atol=1e-10)


def test_ema_gap_of_the_group_norm_is_its_bias():
    """What the closed form rests on: a channel normalised over H x W has mean 0, so GAP(GN(.)) = beta."""
    gn = _trained(torch.nn.GroupNorm(4, 4)).double()
    z = torch.randn(3, 4, 6, 7, dtype=torch.float64) * 5 + 2
    assert torch.allclose(gn(z).mean((2, 3)), gn.bias.expand(3, 4), atol=1e-12)


def test_ema_groups_adapt_to_the_width():
    assert [EMA(c).groups for c in (16, 32, 48, 64, 96, 256)] == [16, 32, 24, 32, 32, 32]
    assert [EMA(c, 8).groups for c in (16, 24, 40, 1024)] == [8, 8, 8, 8]
    assert EMA(36, 8).groups == 6 and EMA(7, 32).groups == 7 and EMA(64, 1).groups == 1


def test_ema_parameter_count():
    # F1 (c x c + c), F3 (9 c x c + c), GN (2 c), c = C / G; official at C = 64: 48 (factor 32), 672 (factor 8)
    assert _n_params(EMA(64)) == 48 and _n_params(EMA(64, 8)) == 672
    assert _n_params(EMA(256)) == 8 * 8 + 8 + 9 * 64 + 8 + 16 == 672


# ----------------------------------------------------------------------------------------------------------------
# Shuffle Attention
# ----------------------------------------------------------------------------------------------------------------
SA_KEYS = {"cweight": "channel_weight", "cbias": "channel_bias", "sweight": "spatial_weight",
           "sbias": "spatial_bias", "gn.weight": "norm.weight", "gn.bias": "norm.bias"}  # fmt: skip


@pytest.mark.parametrize("case", _official("ShuffleAttention"), ids=_case_id)
def test_shuffle_attention_matches_the_official_code(case):
    """sa_layer(channel, groups) of SA-Net and the External-Attention port ShuffleAttention(channel, reduction, G);
    the official (1, c, 1, 1) parameters are our (c,) vectors."""
    kw = case["init_kwargs"]
    groups = kw["groups"] if "groups" in kw else kw["G"]
    m = ShuffleAttention(kw["channel"], groups)
    assert m.groups == groups
    _assert_matches(m, {SA_KEYS[k]: v.reshape(-1) for k, v in case["state_dict"].items()}, case)
    assert _n_params(m) == case["num_params"]


def _sa_literal(m: ShuffleAttention, x: torch.Tensor) -> torch.Tensor:
    """SA-Net term by term: split into G groups and each into two halves, the channel and spatial gates (F.group_norm),
    concatenate, then shuffle with 2 groups by an explicit channel index."""
    b, ch, h, w = x.shape
    g = m.groups
    c = ch // (2 * g)
    v = lambda p: p.view(1, -1, 1, 1)
    xs = x.reshape(b * g, 2 * c, h, w)
    x0, x1 = xs[:, :c], xs[:, c:]
    y0 = x0 * torch.sigmoid(v(m.channel_weight) * x0.mean((2, 3), keepdim=True) + v(m.channel_bias))
    gn = F.group_norm(x1, c, m.norm.weight, m.norm.bias, m.norm.eps)
    y1 = x1 * torch.sigmoid(v(m.spatial_weight) * gn + v(m.spatial_bias))
    y = torch.cat((y0, y1), 1).reshape(b, ch, h, w)
    index = torch.tensor([(o % 2) * (ch // 2) + o // 2 for o in range(ch)])  # output 2k + s <- s C/2 + k
    return y[:, index]


@pytest.mark.parametrize("c, groups, size", [(64, 8, (7, 5)), (48, 3, (6, 9)), (32, 64, (1, 1)), (16, 1, (4, 3))])
def test_shuffle_attention_equations(c, groups, size):
    m = _trained(ShuffleAttention(c, groups)).double().eval()
    x = torch.randn(2, c, *size, dtype=torch.float64)
    ref = _sa_literal(m, x)
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=1e-10)
    assert torch.allclose(m(x.clone().requires_grad_()).detach(), ref, atol=1e-10)
    y = m.float()(x.float())  # the inference path that writes into the shuffled output (float32)
    assert torch.allclose(y.double(), ref, atol=1e-5)


def test_shuffle_attention_weights_each_channel_by_itself():
    """Every output channel is its own input channel (moved by the shuffle) times a weight that depends on that
    channel alone: the Jacobian, with the shuffle undone, is block-diagonal over channels."""
    m = _trained(ShuffleAttention(16, 2)).double()
    x = torch.randn(1, 16, 3, 2, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: m(t), x)[0].reshape(16, 6, 16, 6)
    touched = jac.abs().sum((1, 3)) > 0  # (out channel, in channel)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    for o in range(16):
        expected[o, (o % 2) * 8 + o // 2] = True
    assert torch.equal(touched, expected)


def test_shuffle_attention_starts_with_constant_gates():
    """Official init: W1 = W2 = 0, b1 = b2 = 1, so a new block is x * sigmoid(1), shuffled."""
    m = ShuffleAttention(32, 4)
    x = torch.randn(2, 32, 5, 4)
    index = [(o % 2) * 16 + o // 2 for o in range(32)]
    assert torch.allclose(m(x), x[:, index] * torch.sigmoid(torch.tensor(1.0)), atol=1e-6)


def test_shuffle_attention_groups_adapt_to_the_width():
    assert [ShuffleAttention(c).groups for c in (16, 32, 48, 64, 128, 256, 96)] == [8, 16, 24, 32, 64, 64, 48]
    assert [ShuffleAttention(c, 8).groups for c in (16, 24, 48, 1024)] == [8, 6, 8, 8]
    assert fitting_groups(12, 64, per_group=2) == 6 and fitting_groups(10, 4, per_group=2) == 1


def test_shuffle_attention_parameter_count():
    # four (c,) gate parameters and GN's two, c = C / (2 G); official at C = 64: 24 (G = 8), 6 (G = 32)
    assert _n_params(ShuffleAttention(64, 8)) == 24 and _n_params(ShuffleAttention(64, 32)) == 6
    assert _n_params(ShuffleAttention(64)) == 6 and _n_params(ShuffleAttention(256)) == 12


# ----------------------------------------------------------------------------------------------------------------
# SKAttention
# ----------------------------------------------------------------------------------------------------------------
def _sk_key(k: str) -> str:
    """External-Attention's names -> ours: convs.i -> branches.i (conv, bn), fc -> fuse, fcs.i -> select.i."""
    k = k.replace("convs.", "branches.").replace("fcs.", "select.")
    return "fuse." + k[3:] if k.startswith("fc.") else k


@pytest.mark.parametrize("case", _official("SKAttention"), ids=_case_id)
def test_sk_attention_matches_the_external_attention_port(case):
    kw = case["init_kwargs"]
    m = SKAttention(kw["channel"], kw["kernels"], kw["reduction"], kw["group"], kw["L"])
    _assert_matches(m, {_sk_key(k): v for k, v in case["state_dict"].items()}, case)
    assert _n_params(m) == case["num_params"]


def _sk_literal(m: SKAttention, x: torch.Tensor) -> torch.Tensor:
    """Split (conv, eval BN, ReLU per path), fuse (U = sum, s = GAP(U), z), select (softmax over the paths), term
    by term."""
    feats = []
    for br in m.branches:
        conv, bn = br.conv, br.bn
        t = F.conv2d(x, conv.weight, conv.bias, 1, conv.padding, conv.dilation, conv.groups)
        feats.append(F.relu(F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0, bn.eps)))
    u = sum(feats)
    z = F.linear(u.mean((2, 3)), m.fuse.weight, m.fuse.bias)
    if m.fuse_bn is not None:
        bn = m.fuse_bn
        z = F.relu((z - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.weight + bn.bias)
    logits = torch.stack([F.linear(z, h.weight, h.bias) for h in m.select], 1)  # (B, M, C)
    a = torch.softmax(logits, 1)
    return sum(a[:, i, :, None, None] * f for i, f in enumerate(feats))


@pytest.mark.parametrize(
    "make, size",
    [
        (lambda: SKAttention(16, (1, 3, 5, 7), reduction=4, L=4), (7, 6)),
        (lambda: SKAttention(32, (3, 5), groups=8, variant="paper"), (9, 7)),
        (lambda: SKAttention(16, (3, 5, 7), groups=4, variant="paper"), (1, 1)),
    ],
)
def test_sk_attention_equations(make, size):
    m = _trained(make()).double().eval()
    x = torch.randn(2, m.select[0].out_features, *size, dtype=torch.float64)
    ref = _sk_literal(m, x)
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=1e-10)  # BN folded into the convs where that is cheaper
    assert torch.allclose(m(x.clone().requires_grad_()).detach(), ref, atol=1e-10)


def test_sk_attention_selects_a_convex_mix_of_the_paths():
    """y = sum_m a_m U_m with a_m >= 0 summing to 1 per channel: y lies between the paths' min and max."""
    m = _trained(SKAttention(16, (1, 3), L=8)).eval()
    x = torch.randn(2, 16, 6, 5)
    with torch.no_grad():
        feats = [br(x) for br in m.branches]
        a = m.weights(feats)
        y = m(x)
    assert torch.allclose(a.sum(0), torch.ones(2, 16))
    lo, hi = torch.minimum(*feats), torch.maximum(*feats)
    assert (y >= lo - 1e-5).all() and (y <= hi + 1e-5).all()


def test_sk_attention_paper_layout():
    """SKNet's unit: 3x3 convs with dilation (k - 1) / 2, no biases, fc -> BN -> ReLU, bias-free heads."""
    m = SKAttention(64, (3, 5), groups=32, variant="paper")
    convs = [br.conv for br in m.branches]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3)] and [c.dilation for c in convs] == [(1, 1), (2, 2)]
    assert [c.padding for c in convs] == [(1, 1), (2, 2)] and all(c.groups == 32 and c.bias is None for c in convs)
    assert m.fuse.out_features == 32 and m.fuse.bias is None and m.fuse_bn is not None
    assert all(h.bias is None for h in m.select)
    # 2 x (9 * 64 * 2) convs, 2 x 128 BN, 64 * 32 fuse, 64 BN, 2 x 32 * 64 heads
    assert _n_params(m) == 2 * 9 * 64 * 2 + 2 * 128 + 64 * 32 + 64 + 2 * 32 * 64 == 8768


def test_sk_attention_parameter_count():
    # External-Attention defaults at C = 64 (official count): 355360; at 256: convs 84 C^2 + C biases each, BN,
    # fc C -> 32, four heads 32 -> C
    assert _n_params(SKAttention(64)) == 355360
    c, d = 256, 32
    assert _n_params(SKAttention(256)) == 84 * c * c + 4 * c + 4 * 2 * c + (c * d + d) + 4 * (d * c + c) == 5_550_112


def test_sk_attention_folded_bn_matches_the_bn_path():
    """Eval mode folds each path's BN into its conv when the weights are smaller than the map."""
    m = _trained(SKAttention(16, (1, 3), L=8)).eval()
    small, large = torch.randn(1, 16, 2, 2), torch.randn(2, 16, 9, 9)  # 16 * 16 * 9 weights: unfolded, folded
    for x in (small, large):
        with torch.no_grad():
            ref = _sk_literal(m.double(), x.double())
            assert torch.allclose(m(x.double()), ref, atol=1e-10)


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: EMA(32, factor=0), "EMA: factor"),
        (lambda: EMA(32, factor=2.0), "EMA: factor"),
        (lambda: EMA(32, factor=True), "EMA: factor"),
        (lambda: ShuffleAttention(33), "ShuffleAttention: the width must be even"),
        (lambda: ShuffleAttention(32, groups=0), "ShuffleAttention: groups"),
        (lambda: SKAttention(32, kernels=(3, 4)), "SKAttention: kernels must be odd"),
        (lambda: SKAttention(32, kernels=()), "SKAttention: kernels must be a non-empty list"),
        (lambda: SKAttention(32, kernels=3), "SKAttention: kernels must be a non-empty list"),
        (lambda: SKAttention(32, reduction=0), "SKAttention: reduction"),
        (lambda: SKAttention(32, groups=-1), "SKAttention: groups"),
        (lambda: SKAttention(32, L=0), "SKAttention: L"),
        (lambda: SKAttention(32, variant="caffe"), "SKAttention: variant"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(BlockArgumentError, match=match):
        make()
