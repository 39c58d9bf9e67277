"""Every block: forward + backward, shape contract, batch 1, odd sizes, 1x1 maps, bf16; and checks of each paper's
equations written independently of the implementation (other primitives, properties the equations imply)."""

from __future__ import annotations

import importlib
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FULL, perturb_constants

from yolo_attn.modules import AFF, ASFF, CA, CBAM, DCN, MSCAM, SPD, C2f_DCN, C2fWith, C3k2With, SimAM, SPDConv, iAFF
from yolo_attn.modules._common import Conv1x1, ConvToOne, IdentityStart, max_along
from yolo_attn.modules.conv import space_to_depth

torch.manual_seed(0)


def up(n, k=1):
    """Size after k stride-2 steps with padding (ceil), as in a YOLO pyramid."""
    for _ in range(k):
        n = math.ceil(n / 2)
    return n


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "CA": (lambda: CA(32), lambda b, h, w: torch.randn(b, 32, h, w), lambda b, h, w: (b, 32, h, w)),
    "SimAM": (lambda: SimAM(32), lambda b, h, w: torch.randn(b, 32, h, w), lambda b, h, w: (b, 32, h, w)),
    "CBAM": (lambda: CBAM(32), lambda b, h, w: torch.randn(b, 32, h, w), lambda b, h, w: (b, 32, h, w)),
    "MSCAM": (lambda: MSCAM(32), lambda b, h, w: torch.randn(b, 32, h, w), lambda b, h, w: (b, 32, h, w)),
    "SPD": (lambda: SPD(16), lambda b, h, w: torch.randn(b, 16, h, w), lambda b, h, w: (b, 64, up(h), up(w))),
    "SPDConv": (
        lambda: SPDConv(16, 24, 3, 2),
        lambda b, h, w: torch.randn(b, 16, h, w),
        lambda b, h, w: (b, 24, up(h), up(w)),
    ),
    "DCN": (lambda: DCN(16, 24, 3, 1), lambda b, h, w: torch.randn(b, 16, h, w), lambda b, h, w: (b, 24, h, w)),
    "DCN-s2": (
        lambda: DCN(16, 24, 3, 2),
        lambda b, h, w: torch.randn(b, 16, h, w),
        lambda b, h, w: (b, 24, up(h), up(w)),
    ),
    "C2f_DCN": (
        lambda: C2f_DCN(16, 24, 2, True),
        lambda b, h, w: torch.randn(b, 16, h, w),
        lambda b, h, w: (b, 24, h, w),
    ),
    "AFF": (
        lambda: AFF([16, 24], 24),
        lambda b, h, w: [torch.randn(b, 16, h, w), torch.randn(b, 24, h, w)],
        lambda b, h, w: (b, 24, h, w),
    ),
    "AFF-equal": (
        lambda: AFF([24, 24]),
        lambda b, h, w: [torch.randn(b, 24, h, w), torch.randn(b, 24, h, w)],
        lambda b, h, w: (b, 24, h, w),
    ),
    # composites: a host (Ultralytics' C2f / C3k2, C3k blocks included) with a block in every bottleneck
    "C2f_CBAM": (
        lambda: C2fWith(CBAM, {"reduction": 4}, 16, 24, 2, True),
        lambda b, h, w: torch.randn(b, 16, h, w),
        lambda b, h, w: (b, 24, h, w),
    ),
    "C3k2_CA-c3k": (
        lambda: C3k2With(CA, {}, 16, 24, 1, True),
        lambda b, h, w: torch.randn(b, 16, h, w),
        lambda b, h, w: (b, 24, h, w),
    ),
    "iAFF": (
        lambda: iAFF([16, 24], 24),
        lambda b, h, w: [torch.randn(b, 16, h, w), torch.randn(b, 24, h, w)],
        lambda b, h, w: (b, 24, h, w),
    ),
}
for _level in range(3):
    CASES[f"ASFF-level{_level}"] = (
        lambda lv=_level: ASFF([16, 32, 64], 24, lv),
        lambda b, h, w: [torch.randn(b, c, up(h, k), up(w, k)) for k, c in enumerate((16, 32, 64))],
        lambda b, h, w, lv=_level: (b, 24, up(h, lv), up(w, lv)),
    )

# Blocks of the other families register their cases in tests/test_blocks_<family>.py (a CASES dict in the same
# format); the contract tests below run on all of them.
# The slower sweeps (torch.compile, autocast) take a representative set by default and every case with --full:
# compile the first case of each family file (one per file of blocks), autocast each block's own case.
FIRST_OF_FILE = {"CA", "AFF", "ASFF-level1", "DCN-s2", "C2f_DCN"}
for _path in sorted(Path(__file__).parent.glob("test_blocks_*.py")):
    _family = importlib.import_module(_path.stem).CASES
    assert not set(_family) & set(CASES), f"{_path.name} repeats case names: {set(_family) & set(CASES)}"
    CASES.update(_family)
    FIRST_OF_FILE.add(next(iter(_family)))


def _sweep(names) -> list:
    return [n if n in names else pytest.param(n, marks=FULL) for n in CASES]

SIZES = {"batch2": (2, 16, 12), "batch1": (1, 16, 12), "odd": (2, 13, 9), "tiny": (2, 4, 4)}


def _as_list(x):
    return x if isinstance(x, list) else [x]


@pytest.mark.parametrize("size", SIZES, ids=list(SIZES))
@pytest.mark.parametrize("name", CASES)
def test_forward_backward_shape(name, size):
    factory, make, expect = CASES[name]
    b, h, w = SIZES[size]
    m = factory().train()
    x = make(b, h, w)
    for t in _as_list(x):
        t.requires_grad_(True)
    y = m(x)
    assert tuple(y.shape) == expect(b, h, w)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for t in _as_list(x):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.parametrize("name", CASES)
def test_inference_fast_paths_match_autograd(name):
    """Eval mode: the output without autograd (where blocks work in place, write over their own buffers with out=,
    and run 1x1 convs as products) equals the output with autograd tracking the inputs, and leaves the inputs as
    they were."""
    factory, make, _ = CASES[name]
    torch.manual_seed(0)
    m = factory().eval()
    x = make(2, 16, 12)
    before = [t.clone() for t in _as_list(x)]
    with torch.no_grad():
        y_fast = m(x)
    for t, t0 in zip(_as_list(x), before):
        assert torch.equal(t, t0), f"{name}: inference changed its input"
    for t in _as_list(x):
        t.requires_grad_(True)
    y_ref = m(x)
    assert torch.allclose(y_fast, y_ref, rtol=1e-5, atol=1e-5), (y_fast - y_ref).abs().max()


@pytest.mark.parametrize("name", CASES)
def test_one_by_one_maps(name):
    """1x1 feature maps (the coarsest level of a tiny image): train with batch 2, eval with batch 1."""
    factory, make, expect = CASES[name]
    h = w = 4 if name.startswith("ASFF") else 1  # ASFF: the coarsest of its three inputs is 1x1
    m = factory()
    for mode, b in (("train", 2), ("eval", 1)):
        getattr(m, mode)()
        y = m(make(b, h, w))
        assert tuple(y.shape) == expect(b, h, w) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", CASES)
def test_bf16_matches_fp32(name):
    factory, make, expect = CASES[name]
    m = factory().eval()
    x = make(2, 13, 9)
    with torch.no_grad():
        ref = m(x)
        y = m.to(torch.bfloat16)([t.bfloat16() for t in x] if isinstance(x, list) else x.bfloat16())
    assert y.dtype == torch.bfloat16 and tuple(y.shape) == tuple(ref.shape)
    assert torch.isfinite(y.float()).all()
    assert (y.float() - ref).abs().max() <= 0.05 * ref.abs().max() + 0.05


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", _sweep({n for n in CASES if "-" not in n}))
def test_autocast(name, dtype):
    """Under autocast (what AMP runs) inputs arrive in the half type, as from a conv before the block, with the
    magnitudes of real activations on a 64x64 map, where sums of squares over H*W overflow fp16 (65504) unless
    accumulated in fp32. A training step is finite, the output keeps the half type (a block that promotes to fp32
    doubles the memory of what follows), and in eval mode the output matches fp32's within half precision (eval:
    training-mode BN over a batch of 2 pooled vectors amplifies any rounding, in every precision)."""
    factory, make, _ = CASES[name]
    dt = getattr(torch, dtype)
    torch.manual_seed(0)
    m = _nontrivial(factory())
    x = make(2, 64, 64)
    listed = isinstance(x, list)
    x = [4 * t for t in _as_list(x)]
    xh = [t.to(dt).requires_grad_(True) for t in x]
    m.train()
    with torch.autocast("cpu", dtype=dt):
        y = m(xh if listed else xh[0])
    assert y.dtype == dt, f"{name}: output {y.dtype} from {dtype} input under autocast"
    assert torch.isfinite(y).all(), f"{name}: non-finite output under {dtype} autocast"
    y.float().square().mean().backward()
    for t in xh:
        assert t.grad is not None and torch.isfinite(t.grad).all(), f"{name}: non-finite input gradient"
    for p_name, p in m.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"{name}: non-finite gradient of {p_name}"
    m.eval()
    with torch.no_grad():
        xr = [t.detach().float() for t in xh]  # fp32 on the same (rounded) inputs: the block's own precision
        ref = m(xr if listed else xr[0])
        with torch.autocast("cpu", dtype=dt):
            y = m([t.detach() for t in xh] if listed else xh[0].detach())
    assert y.dtype == dt and torch.isfinite(y).all(), f"{name}: eval output {y.dtype}, finite {torch.isfinite(y).all()}"
    err = (y.float() - ref).abs().max().item() / max(ref.abs().max().item(), 1.0)
    tol = 0.02 if dt == torch.float16 else 0.05  # bf16 keeps 8 bits: 0.4% per rounding, amplified by softmaxes
    assert err <= tol, f"{name}: {dtype} autocast differs from fp32 by {err:.3f} of the output's range"


@pytest.mark.parametrize("name", CASES)
def test_identity_start_is_the_identity(name):
    """Attention blocks with an armed gate pass their input through unchanged (fine-tuning starts from the base)."""
    factory, make, _ = CASES[name]
    m = factory()
    if not isinstance(m, IdentityStart):
        pytest.skip("not an identity-start block")
    x = make(2, 9, 7)
    if isinstance(x, list):
        pytest.skip("fusion block: identity start passes one input through, tested with the ready configs")
    m.identity_start().train()
    y = m(x)
    assert torch.equal(y, x)
    y.sum().backward()
    assert m.gate.grad is not None and m.gate.grad.abs() > 0


def _nontrivial(m: torch.nn.Module) -> torch.nn.Module:
    """Weights as after training: constant-initialised parameters (zero-init convs, scales at 0, identity regressors,
    layer scales, BN affine) moved off their start, BN running statistics random. Then no part is a no-op."""
    g = torch.Generator().manual_seed(1)
    perturb_constants(m, 0.1, g)
    with torch.no_grad():
        for b in m.modules():
            if isinstance(b, torch.nn.modules.batchnorm._BatchNorm) and b.running_mean is not None:
                b.running_mean.normal_(0, 0.1, generator=g)
                b.running_var.uniform_(0.5, 2, generator=g)
    return m


def _compiled_vs_eager(name: str, backend: str, mode: str) -> None:
    """Outputs and input gradients of torch.compile(block) equal eager's to 1e-5 (relative to the output's range)."""
    import torch._dynamo

    factory, make, _ = CASES[name]
    torch.manual_seed(0)
    m = _nontrivial(factory())
    getattr(m, mode)()
    x = make(2, 13, 9)
    xs = _as_list(x)
    torch._dynamo.reset()
    compiled = torch.compile(m, backend=backend, fullgraph=True)
    results = []
    for fn in (m, compiled):
        for t in xs:
            t.grad = None
            t.requires_grad_(mode == "train")
        state = {k: v.clone() for k, v in m.state_dict().items()}  # BN statistics move in training: same start
        y = fn(x)
        if mode == "train":
            y.square().mean().backward()
        results.append((y.detach(), [t.grad for t in xs]))
        m.load_state_dict(state)
    (ye, ge), (yc, gc) = results
    scale = max(1.0, ye.abs().max().item())
    assert (yc - ye).abs().max() <= 1e-5 * scale
    for a, b in zip(ge, gc):
        if a is not None:
            assert (b - a).abs().max() <= 1e-5 * max(1.0, a.abs().max().item())


@pytest.mark.parametrize("mode", ["train", pytest.param("eval", marks=FULL)])
@pytest.mark.parametrize("name", _sweep(FIRST_OF_FILE))
def test_compiled_graph_matches_eager(name, mode):
    """Every block is one graph for torch.compile (fullgraph=True fails on any graph break; the first case of each
    family file by default, every case with --full), in training (forward,
    backward and the BN statistics updates traced) and inference (--full), and the graph under autograd computes what
    eager does (aot_eager: the graph inductor would compile)."""
    _compiled_vs_eager(name, "aot_eager", mode)


INDUCTOR = ["SimAM", "CA", "CBAM", "SE", "ECA", "GCBlock", "AFF"]  # the most used blocks (--full); every block: --compile


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", [n if n in INDUCTOR else pytest.param(n, marks=pytest.mark.compile) for n in CASES])
def test_inductor_matches_eager(name, mode):
    """torch.compile with inductor (what Ultralytics' compile=True uses), CPU, about 10 s a case."""
    _compiled_vs_eager(name, "inductor", mode)


@pytest.mark.parametrize("name", CASES)
def test_onnx_export_matches_onnxruntime(name, tmp_path):
    """Exported alone (opset 19) with dynamic batch and H x W, run in onnxruntime at the export size and another."""
    import onnxruntime as ort

    from yolo_attn.export import register_deform_conv_symbolic

    register_deform_conv_symbolic()
    factory, make, _ = CASES[name]
    torch.manual_seed(0)
    m = _nontrivial(factory()).eval()
    x = make(2, 13, 9)
    n = len(_as_list(x))
    names = [f"x{i}" for i in range(n)]
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(path), opset_version=19, dynamo=False, input_names=names,
                          dynamic_axes={k: {0: "batch", 2: f"h{i}", 3: f"w{i}"} for i, k in enumerate(names)})  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b, h, w in ((2, 13, 9), (1, 20, 17)):
        x = make(b, h, w)
        got = sess.run(None, {k: t.numpy() for k, t in zip(names, _as_list(x))})[0]
        with torch.no_grad():
            ref = m(x).numpy()
        assert got.shape == ref.shape, (b, h, w)
        assert abs(got - ref).max() <= 1e-4 * max(1.0, abs(ref).max()), ((b, h, w), abs(got - ref).max())


def test_parameters_reach_gradients():
    """Every parameter of every block receives a gradient (no dead branch, which would also break DDP)."""
    for name, (factory, make, _) in CASES.items():
        m = factory().train()
        if not any(True for _ in m.parameters()):
            continue  # parameter-free (SimAM, SPD)
        m(make(2, 16, 12)).sum().backward()
        dead = [n for n, p in m.named_parameters() if p.grad is None]
        assert not dead, f"{name}: parameters without gradient: {dead}"


# ----------------------------------------------------------------------------------------------------------------
# The papers' equations
# ----------------------------------------------------------------------------------------------------------------
def test_simam_energy_formula():
    x = torch.randn(2, 8, 7, 5, dtype=torch.float64)
    lam = 1e-4
    n = 7 * 5 - 1
    # Paper eq. (5): e_t* = 4(var + lam) / ((t - mu)^2 + 2 var + 2 lam), with mu, var over the other n neurons
    # approximated by the whole channel; the block scales x by sigmoid(1 / e_t*).
    mu = x.mean((2, 3), keepdim=True)
    var = ((x - mu) ** 2).sum((2, 3), keepdim=True) / n
    e = 4 * (var + lam) / ((x - mu) ** 2 + 2 * var + 2 * lam)
    expected = x * torch.sigmoid(1 / e)
    assert torch.allclose(SimAM(8, lam)(x), expected, atol=1e-12)
    assert sum(p.numel() for p in SimAM(8).parameters()) == 0


def _simam_literal(x: torch.Tensor, lam: float) -> torch.Tensor:
    """The block's docstring formula, term by term in fp64."""
    x = x.double()
    n = max(x.shape[2] * x.shape[3] - 1, 1)
    d = (x - x.mean((2, 3), keepdim=True)) ** 2
    return x * torch.sigmoid(d / (4 * (d.sum((2, 3), keepdim=True) / n + lam)) + 0.5)


@pytest.mark.parametrize("shape", [(2, 8, 40, 40), (1, 3, 7, 9), (2, 4, 1, 1), (2, 4, 1, 6)])
def test_simam_fp32_paths_match_the_literal_formula(shape):
    """fp32, channel means far above the spread (the hard case for the statistics: mean 100, std 0.01 in some
    channels), through the inference path (written over its buffer), the autograd path, channels_last input and the
    term-by-term form that export traces; 1x1 maps give the constant weight sigmoid(0.5)."""
    torch.manual_seed(0)
    lam = 1e-4
    x = torch.randn(shape)
    x[:, ::2] = x[:, ::2] * 0.01 + 100
    ref = _simam_literal(x, lam)
    m = SimAM(shape[1], lam)
    with torch.no_grad():
        y_inf = m(x)
        y_cl = m(x.contiguous(memory_format=torch.channels_last))
        y_traced_form = x * m._literal_weights(x)  # what export records
    xg = x.clone().requires_grad_()
    y_grad = m(xg)
    y_grad.sum().backward()
    for y in (y_inf, y_cl, y_grad, y_traced_form):
        assert y.dtype == torch.float32
        assert torch.allclose(y.double(), ref, rtol=2e-4, atol=1e-5), (y.double() - ref).abs().max()
    xd = x.double().requires_grad_()
    _simam_literal(xd, lam).sum().backward()
    err = (xg.grad.double() - xd.grad).abs()
    assert err[:, 1::2].max() < 1e-5  # ordinary channels
    assert err.max() < 5e-3 * xd.grad.abs().max()  # mean 100, std 0.01: fp32's x - mu keeps ~3 digits (as before)
    if shape[2] * shape[3] == 1:
        assert torch.allclose(y_inf, x * torch.sigmoid(torch.tensor(0.5)))


def test_coordinate_attention_factorises_over_h_and_w():
    """y / x at (c, i, j) is g^h_c(i) * g^w_c(j): each channel's weight map has rank 1."""
    m = CA(16).eval()
    x = torch.rand(1, 16, 9, 6) + 0.5
    with torch.no_grad():
        ratio = (m(x) / x)[0]
    for c in range(16):
        s = torch.linalg.svdvals(ratio[c].double())
        assert s[1] < 1e-5 * s[0]


def test_coordinate_attention_widths_and_parameters():
    m = CA(64)  # mid = max(8, 64 // 32) = 8
    assert m.conv1.out_channels == 8 and m.conv_h.out_channels == 64
    assert sum(p.numel() for p in m.parameters()) == (64 * 8 + 8) + 2 * 8 + 2 * (8 * 64 + 64)
    assert CA(1024).conv1.out_channels == 32


def test_cbam_channel_then_spatial():
    m = CBAM(32).eval()
    x = torch.randn(2, 32, 10, 8)
    with torch.no_grad():
        mlp = m.channel.mlp
        mc = torch.sigmoid(mlp(F.adaptive_avg_pool2d(x, 1)) + mlp(F.adaptive_max_pool2d(x, 1)))
        x1 = x * mc
        desc = torch.stack((x1.mean(1), x1.max(1).values), 1)
        ms = torch.sigmoid(m.spatial.conv(desc))
        assert torch.allclose(m(x), x1 * ms, atol=1e-6)
    assert mlp[0].out_channels == 2  # r = 16
    assert m.spatial.conv.kernel_size == (7, 7)


def test_mscam_local_and_global_parts():
    m = MSCAM(32).eval()
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        w = m.weights(x)
        assert ((w > 0) & (w < 1)).all()
        # the global part is constant over H x W: removing the local part leaves a per-channel constant
        g = torch.logit(w.double()) - m.local_att(x).double()
        assert torch.allclose(g, g[..., :1, :1].expand_as(g), atol=1e-5)
        assert torch.allclose(m(x), x * w)


@pytest.mark.parametrize("cls", [AFF, iAFF])
def test_attentional_fusion_is_a_convex_mix(cls):
    m = cls([16, 16]).eval()
    x, y = torch.randn(2, 16, 7, 5), torch.randn(2, 16, 7, 5)
    with torch.no_grad():
        z = m([x, y])
        assert (z >= torch.minimum(x, y) - 1e-6).all() and (z <= torch.maximum(x, y) + 1e-6).all()
        assert torch.allclose(m([x, x]), x)
        if cls is AFF:
            mm = m.attention[0].weights(x + y)
            assert torch.allclose(z, mm * x + (1 - mm) * y, atol=1e-6)
    assert len(m.attention) == (2 if cls is iAFF else 1)


def _assert_same_conv(ref, m, x, bias, flops_pair):
    """m (a Conv2d subclass with its own CPU path) against ref, a plain nn.Conv2d with the same state dict: outputs,
    input and weight gradients, the dtype under bf16 autocast (with and without autograd), an unchanged output on a
    repeated call, and Ultralytics' FLOP count (thop) of the pair ``flops_pair`` (get_flops feeds a 3-channel image)."""
    from ultralytics.utils.torch_utils import get_flops

    m.load_state_dict(ref.state_dict())
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(xa), m(xb)
    assert ya.shape == yb.shape and torch.allclose(ya, yb, atol=1e-5)
    probe = torch.arange(ya.numel()).view_as(ya).sin()
    (ya * probe).sum().backward()
    (yb * probe).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-5)
    assert torch.allclose(ref.weight.grad, m.weight.grad, atol=1e-4)
    if bias:
        assert torch.allclose(ref.bias.grad, m.bias.grad, atol=1e-4)
    with torch.no_grad():
        assert torch.equal(m(x), m(x))  # an in-place bias leaves no trace on the next call
    for grad in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(grad):
            assert m(xb).dtype == ref(xa).dtype
    flops = [get_flops(torch.nn.Sequential(c), 64) for c in flops_pair]
    assert flops[0] > 0 and flops[0] == flops[1]


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


@pytest.mark.parametrize("shape", [(2, 16, 9, 7), (3, 16, 1, 1), (1, 16, 5, 1)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv1x1_is_a_pointwise_conv2d(shape, bias, layout):
    """Conv1x1 (a batched product on CPU) against nn.Conv2d(c1, c2, 1)."""
    torch.manual_seed(0)
    x = _layout(torch.randn(shape), layout)
    pair = (torch.nn.Conv2d(3, 5, 1, bias=bias), Conv1x1(3, 5, bias=bias))
    _assert_same_conv(torch.nn.Conv2d(16, 5, 1, bias=bias), Conv1x1(16, 5, bias=bias), x, bias, pair)


@pytest.mark.parametrize("shape", [(4, 2, 30, 40), (1, 2, 30, 40), (3, 2, 9, 7), (2, 3, 64, 10)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv_to_one_is_a_same_padded_conv2d(shape, bias, layout):
    """ConvToOne (on CPU, the batch folded into one depth-wise conv and summed) against nn.Conv2d(c1, 1, 7,
    padding=3)."""
    torch.manual_seed(0)
    c = shape[1]
    x = _layout(torch.randn(shape), layout)
    pair = (torch.nn.Conv2d(3, 1, 7, padding=3, bias=bias), ConvToOne(3, 7, bias=bias))
    _assert_same_conv(torch.nn.Conv2d(c, 1, 7, padding=3, bias=bias), ConvToOne(c, 7, bias=bias), x, bias, pair)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_max_along_matches_amax_and_passes_a_subgradient(dim):
    x = torch.randn(2, 5, 6, 7)
    x[:, :, 0] = x[:, :, 1]  # ties along dim 2
    with torch.no_grad():
        assert torch.equal(max_along(x, dim), x.amax(dim))
    xg = x.clone().requires_grad_()
    y = max_along(xg, dim)
    assert torch.equal(y, x.amax(dim))
    g = torch.rand_like(y) + 0.5
    y.backward(g)
    assert torch.allclose(xg.grad.sum(dim), g)  # all of each output's gradient goes to its maxima
    assert (xg.grad[x < x.amax(dim, keepdim=True)] == 0).all()


@pytest.mark.parametrize("cls", [AFF, iAFF])
@pytest.mark.parametrize("widths", [[16, 24], [24, 24]])
def test_fusion_inference_buffers_match_the_autograd_path(cls, widths):
    """In plain eager inference AFF and iAFF write their weights and output over buffers they made (out=): the result
    equals the path taken with autograd on, and the inputs are left as they were."""
    m = _nontrivial(cls(widths, 24)).eval()
    x, y = torch.randn(2, widths[0], 7, 5), torch.randn(2, widths[1], 7, 5)
    x0, y0 = x.clone(), y.clone()
    with torch.no_grad():
        fast = m([x, y])
    slow = m([x, y])  # the parameters require grad: no out= buffers
    assert slow.requires_grad and torch.equal(x, x0) and torch.equal(y, y0)
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-5, atol=1e-6)


def test_asff_resizing_follows_the_paper():
    m = ASFF([16, 32, 64], 24, level=0)
    # level 0 target: 2x finer input needs nothing, P4 (1 octave coarser) and P5 (2) are 1x1 conv + upsample
    assert isinstance(m.resize[0], torch.nn.Identity)
    assert m.resize[1].conv.kernel_size == (1, 1) and m.resize[2].conv.kernel_size == (1, 1)
    m = ASFF([16, 32, 64], 24, level=2)
    # level 2 target: P4 via 3x3 stride-2 conv; P3 via stride-2 max-pool then 3x3 stride-2 conv
    assert m.resize[1][-1].conv.stride == (2, 2) and len(m.resize[1]) == 1
    assert isinstance(m.resize[0][0], torch.nn.MaxPool2d) and m.resize[0][1].conv.stride == (2, 2)
    assert m.weight_levels.out_channels == 3 and m.weight_feats[0].conv.out_channels == 16


def test_asff_fuses_with_per_pixel_softmax_weights():
    """fused = sum_n a^n * x^{n->l} with a = softmax over levels of the weight logits, per pixel."""
    m = ASFF([8, 16, 32], 12, level=1).eval()
    xs = [torch.randn(2, 8, 12, 10), torch.randn(2, 16, 6, 5), torch.randn(2, 32, 3, 3)]
    got = {}
    m.weight_levels.register_forward_hook(lambda mod, i, o: got.__setitem__("logits", o))
    m.expand.register_forward_hook(lambda mod, i, o: got.__setitem__("fused", i[0]))
    with torch.no_grad():
        y = m(xs)
        feats = [m.resize[0](xs[0]), xs[1], F.interpolate(m.resize[2](xs[2]), size=(6, 5), mode="nearest")]
        a = torch.softmax(got["logits"], 1)
        expected = sum(a[:, j : j + 1] * feats[j] for j in range(3))
    assert got["logits"].shape == (2, 3, 6, 5)
    assert torch.allclose(got["fused"], expected, atol=1e-6)
    assert tuple(y.shape) == (2, 12, 6, 5)


def test_space_to_depth_order_and_odd_sizes():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    y = space_to_depth(x)
    parts = y.split(3, 1)
    for part, (i, j) in zip(parts, [(0, 0), (1, 0), (0, 1), (1, 1)]):  # f_00, f_10, f_01, f_11
        assert torch.equal(part, x[..., i::2, j::2])
    assert torch.equal(y.flatten().sort().values, x.flatten().sort().values)  # no pixel lost
    odd = torch.randn(1, 3, 7, 5)
    conv = torch.nn.Conv2d(3, 3, 3, 2, 1)
    assert space_to_depth(odd).shape[-2:] == conv(odd).shape[-2:] == (4, 3)


def test_spdconv_is_a_drop_in_for_a_strided_conv():
    m = SPDConv(16, 32, 3, 2)
    assert m.conv.conv.stride == (1, 1) and m.conv.conv.in_channels == 64
    with pytest.raises(ValueError, match="s"):
        SPDConv(16, 32, 3, 1)


def _conv_twin(dcn: DCN):
    from ultralytics.nn.modules import Conv

    c = Conv(dcn.conv.in_channels, dcn.conv.out_channels, dcn.conv.kernel_size[0], dcn.conv.stride[0])
    missing, unexpected = dcn.load_state_dict(c.state_dict(), strict=False)
    assert not unexpected and set(missing) == {"offset_mask.weight", "offset_mask.bias"}
    return c


@pytest.mark.parametrize("stride", [1, 2])
def test_dcn_starts_as_the_plain_convolution(stride):
    dcn = DCN(8, 16, 3, stride)
    conv = _conv_twin(dcn)
    x = torch.randn(2, 8, 11, 9)
    for mode in ("train", "eval"):
        getattr(dcn, mode)(), getattr(conv, mode)()
        assert torch.allclose(dcn(x), conv(x), atol=1e-4)


def test_dcn_fused_forward_and_learned_offsets():
    from ultralytics.nn.tasks import DetectionModel  # noqa: F401  (ensures Ultralytics' fuse helpers import)
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    dcn = DCN(8, 16, 3, 1).eval()
    torch.nn.init.normal_(dcn.offset_mask.weight, std=0.1)  # a trained DCN: nonzero offsets and masks
    torch.nn.init.normal_(dcn.bn.running_mean)
    dcn.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        ref = dcn(x)
        conv = _conv_twin(DCN(8, 16, 3, 1))
        conv.conv.weight.copy_(dcn.conv.weight)
        assert (ref - conv.eval()(x)).abs().max() > 1e-3  # offsets really move the samples
        dcn.conv = fuse_conv_and_bn(dcn.conv, dcn.bn)  # what Ultralytics' model.fuse() does to a Conv subclass
        del dcn.bn
        assert torch.allclose(dcn.forward_fuse(x), ref, atol=1e-5)
    dcn = DCN(8, 16, 3, 1).train()
    dcn(x).square().sum().backward()
    assert dcn.offset_mask.weight.grad.abs().sum() > 0  # zero-initialised offsets still learn


def test_dcn_survives_non_finite_input(tmp_path):
    """NaN input (Ultralytics' FLOPs probe uses torch.empty) once crashed torchvision's CPU kernel: run it in a child."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from yolo_attn.modules import DCN\n"
        "m = DCN(8, 8, 3, 1)\n"
        "torch.nn.init.normal_(m.offset_mask.weight)\n"
        "x = torch.randn(1, 8, 64, 64)\n"
        "x[0, :, ::3, ::5] = float('nan')\n"
        "x[0, 0, 1, 1] = float('inf')\n"
        "y = m.eval()(x)\n"
        "from ultralytics.utils.torch_utils import fuse_conv_and_bn\n"
        "m.conv = fuse_conv_and_bn(m.conv, m.bn)\n"
        "y = m.forward_fuse(x)\n"
        "print('OK', tuple(y.shape))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 0 and "OK (1, 8, 64, 64)" in p.stdout, (p.returncode, p.stderr[-2000:])


def test_c2f_dcn_loads_c2f_weights_and_matches_it():
    from ultralytics.nn.modules import C2f

    ref = C2f(16, 32, 2, True).eval()
    m = C2f_DCN(16, 32, 2, True).eval()
    missing, unexpected = m.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected and all("offset_mask" in k for k in missing)
    x = torch.randn(1, 16, 12, 12)
    with torch.no_grad():
        assert torch.allclose(m(x), ref(x), atol=1e-4)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CA(32, reduction=0), "reduction"),
        (lambda: SimAM(8, e_lambda=-1), "e_lambda"),
        (lambda: CBAM(32, kernel_size=4), "odd"),
        (lambda: ASFF([8, 16, 32], 16, level=3), "level"),
        (lambda: ASFF([8], 16), "at least 2"),
        (lambda: AFF([8, 16]), "give an output width"),
        (lambda: AFF([8, 8, 8], 8), "exactly 2"),
        (lambda: SPD(8, scale=1), "scale"),
        (lambda: DCN(8, 16, 3, 1, g=3), "groups"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_forward_input_contracts():
    with pytest.raises(ValueError, match="same H x W"):
        AFF([8, 8])([torch.randn(1, 8, 4, 4), torch.randn(1, 8, 8, 8)])
    with pytest.raises(ValueError, match="pyramid"):
        ASFF([8, 8, 8], 8, level=0)([torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8), torch.randn(1, 8, 2, 2)])


def test_every_registered_block_has_contract_cases():
    """A block in the registry must have cases here or in tests/test_blocks_<family>.py (so the generic contract,
    ONNX and compile tests above run on it)."""
    from yolo_attn.registry import BLOCKS

    covered = {type(factory()) for factory, _, _ in CASES.values()}
    missing = [name for name, spec in BLOCKS.items() if spec.cls not in covered]
    assert not missing, f"no test cases for {missing}"
