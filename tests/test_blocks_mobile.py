"""Efficient mobile blocks (yolo_attn.modules.mobile: PConv, FasterBlock, C2f_Faster, StarBlock, C2f_Star, iRMB):
contract cases for tests/test_blocks.py, the official code's outputs reproduced (tests/fixtures/official), each
paper's equations rewritten with other primitives in float64, parameter counts, C2f weights, bad arguments."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import n_params as _n_params
from conftest import trained_bn
from conftest import width_case as _width

from yolo_attn.modules._common import BlockArgumentError
from yolo_attn.modules.mobile import C2f_Faster, C2f_Star, FasterBlock, PConv, StarBlock, iRMB, irmb_heads

torch.manual_seed(0)

FIXTURES = Path(__file__).parent / "fixtures" / "official"


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "PConv": (lambda: PConv(32), *_width(32)),
    "PConv-ndiv2": (lambda: PConv(48, n_div=2), *_width(48)),
    "FasterBlock": (lambda: FasterBlock(32), *_width(32)),
    "FasterBlock-gelu-layerscale": (lambda: FasterBlock(48, 2, 3.0, "gelu", 0.1), *_width(48)),
    "C2f_Faster": (
        lambda: C2f_Faster(16, 24, 2, True),
        lambda b, h, w: torch.randn(b, 16, h, w),
        lambda b, h, w: (b, 24, h, w),
    ),
    "StarBlock": (lambda: StarBlock(32), *_width(32)),
    "StarBlock-r4": (lambda: StarBlock(48, mlp_ratio=4), *_width(48)),
    "C2f_Star": (
        lambda: C2f_Star(16, 24, 2, True),
        lambda b, h, w: torch.randn(b, 16, h, w),
        lambda b, h, w: (b, 24, h, w),
    ),
    "iRMB": (lambda: iRMB(32), *_width(32)),
    "iRMB-grid-pre-bias": (
        lambda: iRMB(64, 2.0, dim_head=16, window_size=4, qkv_bias=True, attn_pre=True, act="silu",
                     window_layout="grid"),  # fmt: skip
        *_width(64),
    ),
    "iRMB-conv-se": (lambda: iRMB(48, 2.0, dw_ks=5, se_ratio=0.25, attn_s=False, act="gelu"), *_width(48)),
}


def _bn(t, bn):
    """Eval-mode batch norm written out, channels on dim 1."""
    shape = (1, -1) + (1,) * (t.dim() - 2)
    return (t - bn.running_mean.view(shape)) / (bn.running_var.view(shape) + bn.eps).sqrt() * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def _pw(t, conv):
    """A 1x1 conv as an einsum over channels (bias if any)."""
    y = torch.einsum("oc,bchw->bohw", conv.weight.flatten(1), t)
    return y if conv.bias is None else y + conv.bias.view(1, -1, 1, 1)


def _randomised(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter moved by N(0, 0.1) (no zero / one initialisations hide a path) and BNs as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return trained_bn(m, 0.2, seed)


# ----------------------------------------------------------------------------------------------------------------
# The official code's outputs (tests/fixtures/official, format in its README)
# ----------------------------------------------------------------------------------------------------------------
def _cases(block: str) -> list[dict]:
    fx = torch.load(FIXTURES / f"{block}.pt", weights_only=True)
    main = {k: v for k, v in fx.items() if k != "variants"}
    main.setdefault("name", "main")
    return [main, *fx.get("variants", [])]


def _renamed(sd: dict, pairs: list[tuple[str, str]]) -> dict:
    """Official key prefixes -> ours."""
    out = {}
    for k, v in sd.items():
        for a, b in pairs:
            if k == a or k.startswith(a + "."):
                k = b + k[len(a) :]
                break
        out[k] = v
    return out


def _assert_reproduces(m: torch.nn.Module, case: dict, state: dict) -> None:
    """Load the mapped official state (strict), then eval and (when stored) train outputs to 1e-5 relative."""
    m.load_state_dict(state, strict=True)
    with torch.no_grad():
        y = m.eval()(case["input"].clone())
        ref = case["output"]
        assert y.shape == ref.shape
        assert (y - ref).abs().max() <= 1e-5 * ref.abs().max(), (case["name"], (y - ref).abs().max())
        if "output_train" in case:
            yt = copy.deepcopy(m).train()(case["input"].clone())
            ref = case["output_train"]
            assert (yt - ref).abs().max() <= 1e-5 * ref.abs().max(), (case["name"], (yt - ref).abs().max())


_PCONV_CASES = _cases("PConv")


@pytest.mark.parametrize("case", _PCONV_CASES, ids=[c["name"] for c in _PCONV_CASES])
def test_pconv_and_faster_block_reproduce_the_official_code(case):
    """Partial_conv3 (both forward modes) is PConv; MLPBlock (ReLU, and GELU with layer scale) is FasterBlock."""
    kw = case["init_kwargs"]
    if "mlp_ratio" not in kw:
        m, pairs = PConv(kw["dim"], kw["n_div"]), [("partial_conv3", "conv")]
    else:
        assert kw["drop_path"] == 0 and kw["norm_layer"] == "nn.BatchNorm2d" and kw["pconv_fw_type"] == "split_cat"
        act = {"partial(nn.ReLU, inplace=True)": "relu", "nn.GELU": "gelu"}[kw["act_layer"]]
        m = FasterBlock(kw["dim"], kw["n_div"], kw["mlp_ratio"], act, kw["layer_scale_init_value"])
        pairs = [("spatial_mixing.partial_conv3", "spatial.conv"), ("mlp.0", "fc1"), ("mlp.1", "bn"), ("mlp.3", "fc2"),
                 ("layer_scale", "gamma")]  # fmt: skip
    state = _renamed(case["state_dict"], pairs)
    if "gamma" in state:
        state["gamma"] = state["gamma"].view(-1, 1, 1)  # (C,) scale, broadcast over the map
    _assert_reproduces(m, case, state)


_STAR_CASES = _cases("StarBlock")


@pytest.mark.parametrize("case", _STAR_CASES, ids=[c["name"] for c in _STAR_CASES])
def test_star_block_reproduces_the_official_code(case):
    kw = case["init_kwargs"]
    assert kw["drop_path"] == 0
    pairs = [("dwconv.conv", "dw1"), ("dwconv.bn", "bn1"), ("f1.conv", "f1"), ("f2.conv", "f2"), ("g.conv", "g"),
             ("g.bn", "bn2"), ("dwconv2.conv", "dw2")]  # fmt: skip
    _assert_reproduces(StarBlock(kw["dim"], kw["mlp_ratio"]), case, _renamed(case["state_dict"], pairs))


_IRMB_CASES = _cases("iRMB")
_IRMB_PAIRS = [("qk.conv", "qk"), ("v.conv", "v"), ("conv_local.conv", "conv_local"), ("conv_local.norm", "bn_local"),
               ("proj.conv", "proj")]  # fmt: skip


@pytest.mark.parametrize("case", _IRMB_CASES, ids=[c["name"] for c in _IRMB_CASES])
def test_irmb_reproduces_the_official_code(case):
    """In the official code's configuration: its windows (window_layout="grid", padded zeros unmasked) and its default
    dim_head 64 where the case leaves it. The stride-2 case without skips is EMO's stage transition, a width-changing
    down-sampler, which this channel-preserving block is not: it must be the only case left out."""
    kw = dict(case["init_kwargs"])
    c1, c2 = kw.pop("dim_in"), kw.pop("dim_out")
    if case["name"] == "downsample_s2_no_skip":
        assert c2 != c1 and kw["stride"] == 2 and kw["has_skip"] is False
        pytest.skip("EMO's stride-2 stage transition (16 -> 32 channels, no skip): not a channel-preserving block")
    assert c2 == c1 and set(kw) <= {"exp_ratio", "dim_head", "window_size", "qkv_bias", "attn_s", "attn_pre", "dw_ks",
                                    "se_ratio"}  # fmt: skip
    kw.setdefault("dim_head", 64)  # the official default
    for layout in ("grid", "local") if kw.get("window_size") == 0 or not kw.get("attn_s", True) else ("grid",):
        _assert_reproduces(iRMB(c1, window_layout=layout, **kw), case, _renamed(case["state_dict"], _IRMB_PAIRS))


def test_irmb_local_windows_differ_from_the_official_grid_only_in_the_partition():
    """The official fixture's map (9 x 11, window 7) under the paper's local windows gives other outputs than the
    grid (another partition and masked padding), with the same weights and the same parameter names."""
    case = _IRMB_CASES[0]
    state = _renamed(case["state_dict"], _IRMB_PAIRS)
    grid, local = iRMB(64, dim_head=64, window_layout="grid"), iRMB(64, dim_head=64)
    grid.load_state_dict(state), local.load_state_dict(state)
    with torch.no_grad():
        a, b = grid.eval()(case["input"]), local.eval()(case["input"])
    assert torch.allclose(a, case["output"], atol=1e-5) and (a - b).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------------------------
# PConv / FasterNet block
# ----------------------------------------------------------------------------------------------------------------
def test_pconv_is_a_full_conv_with_identity_on_the_untouched_channels():
    """y = Conv(x, W') where W' holds the partial kernel in its top-left block and a centre-tap identity for the
    other channels (a block-diagonal 3 x 3 kernel)."""
    m = _randomised(PConv(16)).double()
    x = torch.randn(2, 16, 7, 9, dtype=torch.float64)
    full = torch.zeros(16, 16, 3, 3, dtype=torch.float64)
    full[:4, :4] = m.conv.weight
    full[torch.arange(4, 16), torch.arange(4, 16), 1, 1] = 1.0
    with torch.no_grad():
        assert torch.allclose(m(x), F.conv2d(x, full, padding=1), atol=1e-12)
        assert torch.equal(m(x)[:, 4:], x[:, 4:])  # three quarters pass through untouched
    assert m.conv.kernel_size == (3, 3) and m.conv.groups == 1 and m.conv.bias is None  # dense, not depth-wise


@pytest.mark.parametrize("act, fn", [("relu", F.relu), ("gelu", F.gelu), ("silu", F.silu)])
def test_faster_block_equation(act, fn):
    m = _randomised(FasterBlock(16, 4, 2.0, act, layer_scale=0.5)).double().eval()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        h = x.clone()
        h[:, :4] = F.conv2d(x[:, :4], m.spatial.conv.weight, padding=1)
        y = _pw(fn(_bn(_pw(h, m.fc1), m.bn)), m.fc2)
        assert torch.allclose(m(x), x + m.gamma * y, atol=1e-12)
    assert m.fc1.out_channels == 32 and m.fc1.bias is None and m.fc2.bias is None  # r = 2, no biases


def _faster_reference(m, x, fn=F.relu):
    """The FasterNet block with training-mode BN (batch statistics), written out."""
    cp = m.spatial.cp
    h = torch.cat((F.conv2d(x[:, :cp], m.spatial.conv.weight, padding=1), x[:, cp:]), 1)
    t = _pw(h, m.fc1)
    mu, var = t.mean((0, 2, 3), keepdim=True), t.var((0, 2, 3), unbiased=False, keepdim=True)
    t = (t - mu) / (var + m.bn.eps).sqrt() * m.bn.weight.view(1, -1, 1, 1) + m.bn.bias.view(1, -1, 1, 1)
    return x + _pw(fn(t), m.fc2)


@pytest.mark.parametrize("c", [16, 128])  # 128: the wide path (the 1x1 convs as convolutions)
def test_faster_block_training_step_matches_the_equation(c):
    """Training mode (batch statistics) under autograd, where the ReLU runs in place on the BN output: output and
    the gradients of the input and of every parameter equal the written-out block's."""
    m = _randomised(FasterBlock(c)).double().train()
    x = torch.randn(2, c, 7, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, c, 7, 6, dtype=torch.float64)
    y = m(x)
    grads = torch.autograd.grad(y, [x, *m.parameters()], g)
    ref = _faster_reference(m, x)
    ref_grads = torch.autograd.grad(ref, [x, *m.parameters()], g)
    assert torch.allclose(y, ref, atol=1e-10)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-10)


def test_faster_block_defaults_follow_the_paper():
    m = FasterBlock(64)
    assert m.spatial.cp == 16 and m.fc1.out_channels == 128 and isinstance(m.act, torch.nn.ReLU) and m.gamma is None
    assert not any(isinstance(x, torch.nn.Dropout) for x in m.modules())  # no stochastic depth: train == eval path


def test_fasternet_parameter_counts():
    # FACTS.md: Partial_conv3(64, 4) 2304, MLPBlock(64, ratio 2) 18944
    assert _n_params(PConv(64)) == 16 * 16 * 9 == 2304
    assert _n_params(FasterBlock(64)) == 2304 + 64 * 128 + 2 * 128 + 128 * 64 == 18944
    assert _n_params(FasterBlock(64, layer_scale=1e-2)) == 18944 + 64
    assert _n_params(PConv(256)) == 64 * 64 * 9 and _n_params(FasterBlock(256)) == 36864 + 2 * 256 * 512 + 1024


# ----------------------------------------------------------------------------------------------------------------
# StarNet block
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [8, 128])  # 128: the wide path (separate 1x1 convs, no joint product)
def test_star_block_equation(c):
    m = _randomised(StarBlock(c, mlp_ratio=3)).double().eval()
    x = torch.randn(2, c, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        h = _bn(F.conv2d(x, m.dw1.weight, m.dw1.bias, padding=3, groups=c), m.bn1)
        z = torch.clamp(_pw(h, m.f1), 0, 6) * _pw(h, m.f2)
        y = F.conv2d(_bn(_pw(z, m.g), m.bn2), m.dw2.weight, m.dw2.bias, padding=3, groups=c)
        assert torch.allclose(m(x), x + y, atol=1e-12)
        xg = x.requires_grad_()
        assert torch.allclose(m(xg), x + y, atol=1e-12)  # the autograd path (two 1x1 convs, no fused product)


def test_star_block_is_a_product_of_two_linear_branches():
    """Doubling the input of the star (h) quadruples z before ReLU6 clips: with zero biases and small h, z(2h) = 4 z(h)
    where the first branch is positive (a degree-2 polynomial in h, the paper's implicit high-dimensional map)."""
    m = StarBlock(8).double().eval()
    with torch.no_grad():
        m.f1.bias.zero_(), m.f2.bias.zero_()
        h = 0.01 * torch.randn(1, 8, 5, 5, dtype=torch.float64)
        z1, z2 = m._star(h), m._star(2 * h)
        pos = _pw(h, m.f1) > 0
        assert torch.allclose(z2[pos], 4 * z1[pos], atol=1e-14)


def test_starnet_parameter_counts():
    # FACTS.md: Block(64) 43968 (ratio 3), Block(64, mlp_ratio=4) 56384; every conv keeps its bias
    def count(c, r):
        return (49 * c + c) + 2 * c + 2 * (c * r * c + r * c) + (r * c * c + c) + 2 * c + (49 * c + c)

    assert _n_params(StarBlock(64)) == count(64, 3) == 43968
    assert _n_params(StarBlock(64, mlp_ratio=4)) == count(64, 4) == 56384
    assert _n_params(StarBlock(256)) == count(256, 3)


# ----------------------------------------------------------------------------------------------------------------
# C2f hosts
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, inner", [(C2f_Faster, FasterBlock), (C2f_Star, StarBlock)])
def test_c2f_hosts_load_a_plain_c2f_by_name(cls, inner):
    from ultralytics.nn.modules import C2f

    ref = _randomised(C2f(16, 32, 2, True))
    m = cls(16, 32, 2, True)
    missing, unexpected = m.load_state_dict(ref.state_dict(), strict=False)
    assert all(k.startswith("m.") for k in missing) and all(k.startswith("m.") for k in unexpected)
    theirs = ref.state_dict()
    for k, v in m.state_dict().items():
        if k.startswith(("cv1.", "cv2.")):
            assert torch.equal(v, theirs[k]), k  # every cv1 / cv2 tensor placed
    assert len(m.m) == 2 and all(type(b) is inner for b in m.m) and m.cv2.conv.in_channels == (2 + 2) * 16


@pytest.mark.parametrize("cls", [C2f_Faster, C2f_Star])
def test_c2f_hosts_compute_c2f_with_their_blocks(cls):
    m = _randomised(cls(16, 24, 2)).eval()
    x = torch.randn(2, 16, 7, 6)
    with torch.no_grad():
        a, b = m.cv1(x).chunk(2, 1)
        y1 = m.m[0](b)
        expected = m.cv2(torch.cat((a, b, y1, m.m[1](y1)), 1))
        assert torch.allclose(m(x), expected, atol=1e-6)


def test_c2f_host_parameter_counts():
    from ultralytics.nn.modules import C2f

    plain = C2f(64, 64, 1)
    convs = _n_params(plain.cv1) + _n_params(plain.cv2)
    assert _n_params(C2f_Faster(64, 64, 1)) == convs + _n_params(FasterBlock(32))
    assert _n_params(C2f_Star(64, 64, 1)) == convs + _n_params(StarBlock(32))


# ----------------------------------------------------------------------------------------------------------------
# iRMB
# ----------------------------------------------------------------------------------------------------------------
def test_irmb_heads_rule():
    # c / dim_head where it divides (the official assert), else the largest divisor below c // dim_head
    assert [irmb_heads(c, c, 32) for c in (16, 32, 48, 64, 96, 112, 128, 256, 512)] == [1, 1, 1, 2, 3, 2, 4, 8, 16]
    assert irmb_heads(64, 64, 64) == 1 and irmb_heads(16, 32, 8) == 2
    assert irmb_heads(64, 96, 16) == 4 and irmb_heads(64, 72, 16) == 4 and irmb_heads(64, 80, 16) == 4
    assert irmb_heads(64, 68, 16) == 4 and irmb_heads(64, 66, 16) == 2  # the values' width must divide too
    m = iRMB(80)
    assert (m.heads, m.dim_head) == (2, 40) and m.scale == 40**-0.5


def _irmb_reference(m: iRMB, x: torch.Tensor) -> torch.Tensor:
    """iRMB with the paper's local windows, written pixel set by pixel set: each window's real pixels attend to each
    other only (no padding at all), per head, in float64."""
    b, c, hh, ww = x.shape
    ws = m.window_size if m.window_size > 0 else max(hh, ww)
    heads, d = m.heads, m.dim_head
    h = _bn(x, m.norm)
    qk = _pw(h, m.qk)
    q, k = qk[:, :c], qk[:, c:]
    act = {torch.nn.ReLU: F.relu, torch.nn.GELU: F.gelu, torch.nn.SiLU: F.silu}[type(m.v_act)]
    vals = h if m.attn_pre else act(_pw(h, m.v))
    out = torch.zeros(b, vals.shape[1], hh, ww, dtype=x.dtype)
    dv = vals.shape[1] // heads
    for i in range(0, hh, ws):
        for j in range(0, ww, ws):
            rows, cols = slice(i, min(i + ws, hh)), slice(j, min(j + ws, ww))
            for n in range(heads):
                qw = q[:, n * d : (n + 1) * d, rows, cols].flatten(2)  # (B, d, L)
                kw = k[:, n * d : (n + 1) * d, rows, cols].flatten(2)
                vw = vals[:, n * dv : (n + 1) * dv, rows, cols].flatten(2)
                a = torch.softmax(torch.einsum("bdi,bdj->bij", qw, kw) / d**0.5, -1)
                o = torch.einsum("bij,bdj->bdi", a, vw)
                out[:, n * dv : (n + 1) * dv, rows, cols] = o.view(b, dv, rows.stop - i, cols.stop - j)
    if m.attn_pre:
        out = act(_pw(out, m.v))
    u = out + F.silu(_bn(F.conv2d(out, m.conv_local.weight, padding=m.conv_local.padding, groups=out.shape[1]),
                         m.bn_local))  # fmt: skip
    return x + _pw(u, m.proj)


@pytest.mark.parametrize("shape", [(2, 9, 11), (1, 14, 7), (2, 3, 2), (1, 1, 1), (1, 20, 17)])
@pytest.mark.parametrize("variant", ["default", "pre-bias-exp2"])
def test_irmb_local_window_attention_equation(shape, variant):
    """Local windows of the paper, each real pixel attending to the real pixels of its window (the padding of maps
    that do not divide into windows is masked), through the fused kernel, the autograd path and the export path."""
    kw = {"default": {}, "pre-bias-exp2": dict(exp_ratio=2.0, qkv_bias=True, attn_pre=True, dim_head=8)}[variant]
    m = _randomised(iRMB(16, window_size=4, **kw)).double().eval()
    b, hh, ww = shape
    x = torch.randn(b, 16, hh, ww, dtype=torch.float64)
    ref = _irmb_reference(m, x)
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=1e-10)
    assert torch.allclose(m(x.clone().requires_grad_()), ref, atol=1e-10)


def test_irmb_global_attention_and_windows_larger_than_the_map():
    m = _randomised(iRMB(16, dim_head=8, window_size=0)).double().eval()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        ref = _irmb_reference(m, x)
        assert torch.allclose(m(x), ref, atol=1e-10)
        for ws, layout in ((7, "local"), (6, "local"), (0, "grid")):  # one window covers the map: the same block
            other = iRMB(16, dim_head=8, window_size=ws, window_layout=layout).double().eval()
            other.load_state_dict(m.state_dict())
            assert torch.allclose(other(x), ref, atol=1e-10)


def test_irmb_local_windows_are_contiguous_patches():
    """Local windows: the output over the first window of a 9 x 9 map equals that of its 7 x 7 crop where the
    depth-wise conv sees only that window (rows / cols 0..5): the window is the 7 x 7 patch, whatever else the map
    holds (the padded windows of the larger map are tested against the reference above)."""
    m = _randomised(iRMB(16, dim_head=8)).eval()
    x = torch.randn(1, 16, 9, 9)
    with torch.no_grad():
        assert torch.allclose(m(x)[..., :6, :6], m(x[..., :7, :7])[..., :6, :6], atol=1e-5)


def test_irmb_grid_windows_are_strided():
    """The official grid partition: on a 14 x 14 map with window 7 a pixel attends to the pixels of its parity class
    (rows and columns with its own remainder mod 2), not to its neighbours. Checked on the attention's input
    gradient."""
    m = _randomised(iRMB(16, dim_head=8, window_layout="grid")).eval()
    x = torch.randn(1, 16, 14, 14, requires_grad=True)
    h = m.norm(x)
    v = m._attend(h)
    v[0, :, 4, 6].sum().backward()
    touched = x.grad[0].abs().sum(0) > 0
    rows, cols = torch.meshgrid(torch.arange(14), torch.arange(14), indexing="ij")
    assert torch.equal(touched, (rows % 2 == 0) & (cols % 2 == 0))


def test_irmb_parameter_counts():
    # FACTS.md at C=64: defaults 17216; attn_s=False 9024; exp_ratio 4, attn_s=False 35712 (the heads do not count)
    assert _n_params(iRMB(64)) == _n_params(iRMB(64, dim_head=64)) == 17216
    assert _n_params(iRMB(64, attn_s=False)) == 9024
    assert _n_params(iRMB(64, 4.0, attn_s=False)) == 35712
    assert _n_params(iRMB(64, qkv_bias=True)) == 17216 + 128 + 64
    # SE (timm SqueezeExcite, rd = round(lambda C * r)): C -> rd -> C with biases
    assert _n_params(iRMB(64, se_ratio=0.25)) == 17216 + (64 * 16 + 16) + (16 * 64 + 64)
    assert _n_params(iRMB(256)) == 2 * 256 + 3 * 256 * 256 + 9 * 256 + 2 * 256 + 256 * 256


def test_irmb_uses_eps_1e6_and_silu_in_the_local_conv():
    m = iRMB(32, act="gelu")
    assert m.norm.eps == m.bn_local.eps == 1e-6 and isinstance(m.act_local, torch.nn.SiLU)
    assert isinstance(m.v_act, torch.nn.GELU) and m.conv_local.groups == 32 and m.proj.bias is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("masked", [False, True])
def test_irmb_attention_accumulates_half_inputs_in_fp32(dtype, masked):
    """The attention on half q, k, v (what autocast feeds it) is as accurate as a softmax taken in fp32 on the same
    rounded inputs, far better than a softmax in the half type, with and without the key mask of padded windows."""
    m = iRMB(64)
    g = torch.Generator().manual_seed(0)
    q, k, v = (4 * torch.randn(16, 2, 49, 32, generator=g) for _ in range(3))
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    mask = (torch.rand(16, 1, 1, 49, generator=g) > 0.3) if masked else None
    mask = None if mask is None else mask.index_fill(-1, torch.tensor([0]), True)  # a real key in every window

    def manual(dt):
        logits = (q.to(dt) * m.scale) @ k.to(dt).transpose(-2, -1)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        return logits.softmax(-1).to(dt) @ v.to(dt)

    exact = manual(torch.float64)
    with torch.no_grad():
        got = m._attention(q, k, v, mask)
    err = lambda t: (t.double() - exact).abs().max().item()  # noqa: E731
    assert got.dtype == dtype
    assert err(got) <= 2 * err(manual(torch.float32).to(dtype)) + 1e-3 and err(got) < 0.2 * err(manual(dtype))


def test_irmb_half_attention_softmax_in_fp32():
    """bf16 autocast: the attention's softmax accumulates in fp32 (the fused kernel upcasts), the output stays bf16
    and near the fp32 result."""
    m = _randomised(iRMB(64)).eval()
    x = 4 * torch.randn(2, 64, 20, 17)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() <= 0.05 * ref.abs().max()


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PConv(8, n_div=9), "PConv: n_div=9 leaves no channel"),
        (lambda: PConv(8, n_div=0), "PConv: n_div"),
        (lambda: FasterBlock(32, act="tanh"), "FasterBlock: act must be one of"),
        (lambda: FasterBlock(32, mlp_ratio=0), "FasterBlock: mlp_ratio"),
        (lambda: FasterBlock(32, layer_scale=-1), "FasterBlock: layer_scale"),
        (lambda: FasterBlock(32, n_div=64), "FasterBlock: n_div"),
        (lambda: C2f_Faster(16, 4, 1), "C2f_Faster: hidden width"),
        (lambda: C2f_Faster(16, 32, 0), "C2f_Faster: n"),
        (lambda: StarBlock(32, mlp_ratio=0), "StarBlock: mlp_ratio"),
        (lambda: StarBlock(32, mlp_ratio=2.5), "StarBlock: mlp_ratio"),
        (lambda: C2f_Star(16, 32, 0), "C2f_Star: n"),
        (lambda: iRMB(32, dw_ks=4), "iRMB: dw_ks must be odd"),
        (lambda: iRMB(32, exp_ratio=0), "iRMB: exp_ratio"),
        (lambda: iRMB(32, se_ratio=1.0), "iRMB: se_ratio"),
        (lambda: iRMB(32, dim_head=0), "iRMB: dim_head"),
        (lambda: iRMB(32, window_size=7.0), "iRMB: window_size"),
        (lambda: iRMB(32, attn_s=1), "iRMB: attn_s"),
        (lambda: iRMB(32, window_layout="swin"), "iRMB: window_layout"),
        (lambda: iRMB(32, act="relu6"), "iRMB: act"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(BlockArgumentError, match=match):
        make()
