"""Local attention with 1-D / depth-wise convolutions (yolo_attn.modules.local: ELA, MLCA, CPCA): contract cases for
tests/test_blocks.py, equality with the official code's stored outputs (MLCA, CPCA; ELA has no official code), each
paper's equations rewritten with other primitives in float64, parameter counts, bad arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import case_id as _case_id
from conftest import n_params as _n_params
from conftest import official_cases as _official
from conftest import perturb_constants
from conftest import width_case as _width

from yolo_attn.modules._common import BlockArgumentError
from yolo_attn.modules.local import CPCA, ELA, MLCA, adaptive_pool_matrix, mlca_kernel_size

torch.manual_seed(0)

FIXTURES = Path(__file__).parent / "fixtures" / "official"


def _trained(m: torch.nn.Module) -> torch.nn.Module:
    """Constant-initialised parameters (GN affines) moved off their start: no part a no-op."""
    return perturb_constants(m, 0.2, torch.Generator().manual_seed(3))


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "ELA": (lambda: ELA(32), *_width(32)),  # ELA-B: k 7, depth-wise, GN 16
    "ELA-S-48": (lambda: ELA(48, 5, group_channels=8, num_groups=16), *_width(48)),  # ELA-S
    "ELA-T-64": (lambda: ELA(64, 5, num_groups=32), *_width(64)),  # ELA-T
    "MLCA": (lambda: MLCA(32), *_width(32)),
    "MLCA-s3-48": (lambda: MLCA(48, local_size=3, local_weight=0.3), *_width(48)),
    "CPCA": (lambda: CPCA(32), *_width(32)),
    "CPCA-r2-48": (lambda: CPCA(48, reduction=2), *_width(48)),
}


def _assert_matches(m: torch.nn.Module, state: dict, case: dict) -> None:
    """Load ``state`` (our key names); eval output (no autograd, and with autograd) equals the stored one to 1e-5."""
    m.load_state_dict(state)
    m.eval()
    ref = case["output"]
    tol = 1e-5 * max(1.0, ref.abs().max().item())
    with torch.no_grad():
        y = m(case["input"].clone())
    assert y.shape == ref.shape and (y - ref).abs().max() <= tol
    y = m(case["input"].clone().requires_grad_())
    assert (y.detach() - ref).abs().max() <= tol


# ----------------------------------------------------------------------------------------------------------------
# ELA
# ----------------------------------------------------------------------------------------------------------------
def _ela_literal(m: ELA, x: torch.Tensor) -> torch.Tensor:
    """The paper's listing: the same Conv1d and GroupNorm modules on both strips, sigmoid, x * y^h * y^w."""
    yh = torch.sigmoid(m.norm(m.conv(x.mean(3))))  # (B, C, H)
    yw = torch.sigmoid(m.norm(m.conv(x.mean(2))))  # (B, C, W)
    return x * yh[..., None] * yw[:, :, None]


@pytest.mark.parametrize(
    "make, size",
    [
        (lambda: ELA(32), (7, 5)),
        (lambda: ELA(48, 5, group_channels=8), (6, 9)),
        (lambda: ELA(64, 7, group_channels=8), (2, 11)),
        (lambda: ELA(64, 5, num_groups=32), (13, 3)),
    ],
)
def test_ela_equations(make, size):
    m = _trained(make()).double().eval()
    x = torch.randn(2, m.conv.in_channels, *size, dtype=torch.float64)
    ref = _ela_literal(m, x)
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=1e-10)
    assert torch.allclose(m(x.clone().requires_grad_()).detach(), ref, atol=1e-10)


def test_ela_factorises_over_h_and_w():
    """y / x = y^h(i) y^w(j) per channel: each channel's weight map has rank 1 (no channel reduction anywhere)."""
    m = _trained(ELA(16)).eval()
    x = torch.rand(1, 16, 9, 6) + 0.5
    with torch.no_grad():
        ratio = (m(x) / x)[0].double()
    for c in range(16):
        s = torch.linalg.svdvals(ratio[c])
        assert s[1] < 1e-5 * s[0]


def test_ela_variants_and_parameter_counts():
    """The paper's T / B / S / L settings at C = 64 (counts from its listing): kernel, conv groups, GN groups."""
    settings = {"T": (5, 1, 32, 448), "B": (7, 1, 16, 576), "S": (5, 8, 16, 2688), "L": (7, 8, 16, 3712)}
    for k, per_group, gn, count in settings.values():
        m = ELA(64, k, per_group, gn)
        assert m.conv.kernel_size == (k,) and m.conv.groups == 64 // per_group and m.norm.num_groups == gn
        assert m.conv.bias is None and _n_params(m) == count
    assert _n_params(ELA(256)) == 256 * 7 + 2 * 256 == 2304
    assert ELA(16, num_groups=32).norm.num_groups == 16  # ELA-T's 32 groups at a width of 16
    assert ELA(24, group_channels=16).conv.groups == 2  # 12 channels per group, the largest divisor <= 16


# ----------------------------------------------------------------------------------------------------------------
# MLCA
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", _official("MLCA"), ids=_case_id)
def test_mlca_matches_the_official_code(case):
    kw = dict(case["init_kwargs"])
    m = MLCA(kw.pop("in_size"), **kw)
    keys = {"conv.weight": "global_conv.weight", "conv_local.weight": "local_conv.weight"}
    _assert_matches(m, {keys[k]: v for k, v in case["state_dict"].items()}, case)
    assert _n_params(m) == case["num_params"]


def _mlca_literal(m: MLCA, x: torch.Tensor) -> torch.Tensor:
    """Adaptive pooling down to s x s, the local descriptor as one long sequence (cell by cell, channels within),
    the global one pooled from it, sigmoid, mix, adaptive pooling back to H x W (F.adaptive_avg_pool2d)."""
    b, c, h, w = x.shape
    s, lam = m.local_size, m.local_weight
    local = F.adaptive_avg_pool2d(x, s)
    glob = local.mean((2, 3))
    seq = torch.stack([local[:, :, i, j] for i in range(s) for j in range(s)], 1).reshape(b, 1, -1)
    k = m.local_conv.weight.shape[-1]
    yl = F.conv1d(seq, m.local_conv.weight, padding=k // 2).reshape(b, s, s, c).permute(0, 3, 1, 2)
    yg = F.conv1d(glob[:, None], m.global_conv.weight, padding=k // 2).reshape(b, c, 1, 1)
    att = lam * torch.sigmoid(yl) + (1 - lam) * torch.sigmoid(yg)
    return x * F.adaptive_avg_pool2d(att, (h, w))


@pytest.mark.parametrize(
    "c, kwargs, size",
    [
        (32, {}, (10, 15)),
        (48, {"local_size": 3, "local_weight": 0.3}, (7, 4)),
        (128, {}, (1, 1)),
        (16, {"local_size": 4, "local_weight": 1.0}, (13, 9)),
    ],
)
def test_mlca_equations(c, kwargs, size):
    m = MLCA(c, **kwargs).double().eval()
    torch.nn.init.normal_(m.local_conv.weight)
    torch.nn.init.normal_(m.global_conv.weight)
    x = torch.randn(2, c, *size, dtype=torch.float64)
    ref = _mlca_literal(m, x)
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=1e-10)
    assert torch.allclose(m(x.clone().requires_grad_()).detach(), ref, atol=1e-10)


def test_mlca_kernel_rule():
    # t = int(|log2 C + b| / gamma), odd: C = 16 / 32 / 64 -> 3, 128 / 256 -> 5 (official)
    assert {c: mlca_kernel_size(c) for c in (16, 32, 64, 128, 256, 1024)} == {16: 3, 32: 3, 64: 3, 128: 5, 256: 5,
                                                                             1024: 5}  # fmt: skip
    assert {c: MLCA(c).local_conv.kernel_size[0] for c in (16, 128)} == {16: 3, 128: 5}
    assert mlca_kernel_size(256, gamma=1, b=0) == 9
    assert _n_params(MLCA(64)) == 6 and _n_params(MLCA(256)) == 10


@pytest.mark.parametrize("n_in, n_out", [(16, 5), (13, 5), (5, 13), (3, 5), (1, 5), (5, 1), (7, 7)])
def test_adaptive_pool_matrix_is_adaptive_average_pooling(n_in, n_out):
    x = torch.randn(3, 4, n_in, dtype=torch.float64)
    p = adaptive_pool_matrix(n_in, n_out, x)
    assert torch.allclose(x @ p.t(), F.adaptive_avg_pool1d(x, n_out), atol=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# CPCA
# ----------------------------------------------------------------------------------------------------------------
def _cpca_key(k: str) -> str:
    """CPCANet's RepBlock names -> ours: conv -> proj, ca -> channel, dconv{a}_{b} -> dw{a}x{b}."""
    if k.startswith("conv."):
        return "proj." + k[5:]
    k = k.replace("ca.", "channel.")
    if k.startswith("dconv"):
        a, rest = k[5:].split("_", 1)
        b, param = rest.split(".")
        return f"dw{a}x{b}.{param}"
    return k


@pytest.mark.parametrize("case", _official("CPCA"), ids=_case_id)
def test_cpca_matches_the_official_code(case):
    kw = case["init_kwargs"]
    m = CPCA(kw["in_channels"], kw["channelAttention_reduce"])
    _assert_matches(m, {_cpca_key(k): v for k, v in case["state_dict"].items()}, case)
    assert _n_params(m) == case["num_params"]


def _cpca_literal(m: CPCA, x: torch.Tensor) -> torch.Tensor:
    """The block term by term with F.conv2d, the shared 1x1 conv P applied three times."""
    p = lambda t: F.conv2d(t, m.proj.weight, m.proj.bias)
    u = F.gelu(p(x))
    fc1, fc2 = m.channel.fc1, m.channel.fc2
    mlp = lambda z: F.conv2d(F.relu(F.conv2d(z, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    ca = torch.sigmoid(mlp(F.adaptive_avg_pool2d(u, 1))) + torch.sigmoid(mlp(F.adaptive_max_pool2d(u, 1)))
    f = ca * u
    c = x.shape[1]
    dw = lambda t, conv: F.conv2d(t, conv.weight, conv.bias, padding=conv.padding, groups=c)
    d = dw(f, m.dw5x5)
    s = d + sum(dw(dw(d, getattr(m, f"dw1x{k}")), getattr(m, f"dw{k}x1")) for k in (7, 11, 21))
    return p(p(s) * f)


@pytest.mark.parametrize("c, r, size", [(32, 4, (9, 7)), (16, 2, (1, 1)), (24, 64, (3, 25))])
def test_cpca_equations(c, r, size):
    m = CPCA(c, r).double().eval()
    x = torch.randn(2, c, *size, dtype=torch.float64)
    ref = _cpca_literal(m, x)
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=1e-10)
    assert torch.allclose(m(x.clone().requires_grad_()).detach(), ref, atol=1e-10)


def test_cpca_channel_weights_are_a_sum_of_two_sigmoids():
    m = CPCA(16).eval()
    torch.nn.init.normal_(m.channel.fc2.bias, 3.0)  # push both sigmoids towards 1
    u = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        ca = m.channel_weights(u)
    assert ca.shape == (2, 16, 1, 1) and (ca > 0).all() and (ca < 2).all() and ca.max() > 1.5


def test_cpca_parameter_count():
    # P (C^2 + C), MLP C -> C/r -> C with biases, DW 5x5 and the six strips (1 + 2 x (7 + 11 + 21)) with biases;
    # official RepBlock(64, 64): 13328
    assert _n_params(CPCA(64)) == 13328
    c, h = 256, 64
    assert _n_params(CPCA(256)) == (c * c + c) + (c * h + h + h * c + c) + c * (25 + 2 * 39) + 7 * c == 127_040
    assert CPCA(16, reduction=64).channel.fc1.out_channels == 1  # at least one hidden unit


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ELA(32, kernel_size=4), "ELA: kernel_size must be odd"),
        (lambda: ELA(32, kernel_size=0), "ELA: kernel_size"),
        (lambda: ELA(32, group_channels=0), "ELA: group_channels"),
        (lambda: ELA(32, num_groups=1.5), "ELA: num_groups"),
        (lambda: MLCA(32, local_size=0), "MLCA: local_size"),
        (lambda: MLCA(32, local_weight=1.5), "MLCA: local_weight must be in"),
        (lambda: MLCA(32, local_weight=-0.1), "MLCA: local_weight"),
        (lambda: MLCA(32, gamma=0), "MLCA: gamma"),
        (lambda: MLCA(32, b="1"), "MLCA: b"),
        (lambda: CPCA(32, reduction=0), "CPCA: reduction"),
        (lambda: CPCA(0), "CPCA: c1"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(BlockArgumentError, match=match):
        make()
