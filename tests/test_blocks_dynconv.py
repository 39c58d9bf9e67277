"""Convolution replacements ODConv, RefConv, SCConv, ACmix: contract cases for test_blocks.py, each paper's
equations recomputed with other primitives in float64, parameter counts against the official numbers, Ultralytics'
model.fuse(), ONNX and torch.compile."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import trained_bn

from yolo_attn.modules.dynconv import ACmix, ODConv, RefConv, SCConv, odconv_temperature


def _up(n, s):
    return math.ceil(n / s)


def _case(factory, c1, c2, s):
    return factory, lambda b, h, w: torch.randn(b, c1, h, w), lambda b, h, w: (b, c2, _up(h, s), _up(w, s))


# name -> (factory, inputs(B, H, W) -> input, expected output shape(B, H, W))
CASES = {
    "ODConv": _case(lambda: ODConv(16, 24, 3, 1), 16, 24, 1),
    "ODConv-1x-s2": _case(lambda: ODConv(16, 24, 3, 2, kernel_num=1), 16, 24, 2),
    "ODConv-dw": _case(lambda: ODConv(16, 16, 3, 1, g=16), 16, 16, 1),
    "ODConv-pw": _case(lambda: ODConv(16, 24, 1, 1), 16, 24, 1),
    "RefConv": _case(lambda: RefConv(16, 24, 3, 1), 16, 24, 1),
    "RefConv-dw-s2": _case(lambda: RefConv(16, 16, 3, 2, g=16), 16, 16, 2),
    "SCConv": _case(lambda: SCConv(16, 24, 3, 1), 16, 24, 1),
    "SCConv-odd-s2": _case(lambda: SCConv(17, 24, 3, 2), 17, 24, 2),
    "ACmix": _case(lambda: ACmix(16, 24, 3, 1), 16, 24, 1),
    "ACmix-s2": _case(lambda: ACmix(32, 16, 3, 2), 32, 16, 2),
}


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------------------------
# ODConv
# ----------------------------------------------------------------------------------------------------------------
def test_odconv_equals_the_papers_per_sample_kernel():
    """y = (sum_i a_wi * a_f * a_c * a_s * W_i) * x with the attentions multiplied onto the kernel, one sample at a
    time; the block folds a_c into the input and a_f into the output instead."""
    torch.manual_seed(0)
    m = trained_bn(ODConv(8, 12, 3, 2, kernel_num=3), 0.5).double().eval()
    m.update_temperature(2.5)
    x = torch.randn(3, 8, 9, 7, dtype=torch.float64)
    t, k = 2.5, 3
    with torch.no_grad():
        z = F.relu(m.fc_bn(m.fc(x.mean((2, 3), keepdim=True))))
        a_c = torch.sigmoid(m.channel_fc(z).flatten(1) / t)
        a_f = torch.sigmoid(m.filter_fc(z).flatten(1) / t)
        a_s = torch.sigmoid(m.spatial_fc(z).flatten(1) / t).view(-1, k, k)
        a_w = torch.softmax(m.kernel_fc(z).flatten(1) / t, 1)
        ys = []
        for b in range(3):
            w = sum(
                a_w[b, i] * a_f[b].view(-1, 1, 1, 1) * a_c[b].view(1, -1, 1, 1) * a_s[b].view(1, 1, k, k) * m.weight[i]
                for i in range(3)
            )
            ys.append(F.conv2d(x[b : b + 1], w, stride=2, padding=1))
        expected = m.act(m.bn(torch.cat(ys)))
        assert torch.allclose(m(x), expected, atol=1e-10)


def test_odconv_heads_follow_the_kernel_space():
    m = ODConv(64, 64, 3, 1)  # ODConv (4x), r = 1/16 -> hidden max(64 // 16, 16) = 16
    assert m.n == 4 and m.fc.out_channels == 16 and m.kernel_fc.out_channels == 4
    assert m.spatial_fc.out_channels == 9 and m.filter_fc.out_channels == 64 and m.channel_fc.out_channels == 64
    assert ODConv(1024, 64).fc.out_channels == 64
    assert ODConv(64, 64, 3, kernel_num=1).kernel_fc is None  # no kernel attention for one kernel
    assert ODConv(64, 64, 1).spatial_fc is None  # no spatial attention on a 1x1 kernel
    assert ODConv(64, 64, 3, g=64).filter_fc is None  # depthwise: one filter per channel, as in the official code
    expected = 4 * 64 * 64 * 9 + 64 * 16 + 2 * 16 + 2 * (16 * 64 + 64) + (16 * 9 + 9) + (16 * 4 + 4) + 2 * 64
    assert _nparams(m) == expected


def test_odconv_single_static_kernel_is_a_conv_between_attentions():
    """k = 1, n = 1: y = a_f * (W * (a_c * x)), a plain 1x1 conv between the two attentions."""
    m = trained_bn(ODConv(8, 16, 1, 1, kernel_num=1, act=False), 0.5).double().eval()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        z = F.relu(m.fc_bn(m.fc(x.mean((2, 3), keepdim=True))))
        y = torch.sigmoid(m.filter_fc(z)) * F.conv2d(x * torch.sigmoid(m.channel_fc(z)), m.weight[0])
        assert torch.allclose(m(x), m.bn(y), atol=1e-12)


@pytest.mark.parametrize("kernel_num, millions", [(1, 11.94), (4, 44.90)])
def test_odconv_resnet18_parameters_match_the_official_table(kernel_num, millions):
    """The official README: ResNet18 + ODConv (1x) 11.94M, (4x) 44.90M parameters (r = 1/16), every 3x3 conv of the
    basic blocks replaced (ODConv includes the BN that follows it)."""
    import torchvision

    net = torchvision.models.resnet18()
    total = _nparams(net)
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in stage:
            for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
                total += _nparams(ODConv(conv.in_channels, conv.out_channels, 3, conv.stride[0], kernel_num=kernel_num))
                total -= _nparams(conv) + _nparams(bn)
    assert round(total / 1e6, 2) == millions


def test_odconv_temperature_schedule_and_buffer():
    assert odconv_temperature(0, 0, 100) == 30.0  # official: 30 at the start ...
    assert odconv_temperature(0, 5, 100) == 15.5
    assert odconv_temperature(0, 10, 100) == odconv_temperature(7, 20, 100) == 1.0  # ... 1 after 10 epochs
    m = ODConv(8, 8).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        y1 = m(x)
        m.update_temperature(30.0)
        y30 = m(x)
    assert not torch.allclose(y1, y30)
    assert "temperature" not in m.state_dict() and float(m.temperature) == 30.0


# ----------------------------------------------------------------------------------------------------------------
# RefConv
# ----------------------------------------------------------------------------------------------------------------
def _refocus_reference(basis: torch.Tensor, t: torch.Tensor, g: int) -> torch.Tensor:
    """W_b + T(W_b) by explicit sums: the 2-D kernels are channels of one image, T a zero-padded map_k x map_k conv
    in groups of g kernels."""
    c2, cin, k, _ = basis.shape
    flat = basis.reshape(c2 * cin, k, k)
    mk = t.shape[-1]
    pad = F.pad(flat, (mk // 2,) * 4)
    out = flat.clone()
    for o in range(flat.shape[0]):
        first = (o // g) * g
        for j in range(g):
            for a in range(mk):
                for b in range(mk):
                    out[o] += t[o, j, a, b] * pad[first + j, a : a + k, b : b + k]
    return out.view_as(basis)


@pytest.mark.parametrize("c1, c2, g", [(2, 3, 1), (4, 4, 4), (4, 6, 2)])
def test_refconv_kernel_is_basis_plus_refocused_basis(c1, c2, g):
    torch.manual_seed(0)
    m = trained_bn(RefConv(c1, c2, 3, 2, g=g), 0.5).double().eval()
    w = _refocus_reference(m.conv.weight, m.refocus.weight, g)
    x = torch.randn(2, c1, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(m.refocused_weight(), w, atol=1e-12)
        assert torch.allclose(m(x), m.act(m.bn(F.conv2d(x, w, stride=2, padding=1, groups=g))), atol=1e-12)
    # groups of the transformation as in the official code: c1 * c2 / g^2, g kernels each
    assert m.refocus.groups == c1 * c2 // g**2 and m.refocus.weight.shape[1] == g


def test_refconv_basis_is_frozen_and_saved():
    torch.manual_seed(0)
    m = RefConv(8, 16, 3, 1)
    basis = m.conv.weight.clone()
    assert "conv.weight" in m.state_dict() and "conv.weight" not in dict(m.named_parameters())
    assert not m.conv.weight.requires_grad
    assert {n for n, _ in m.named_parameters()} == {"refocus.weight", "bn.weight", "bn.bias"}
    t0 = m.refocus.weight.clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, weight_decay=1e-2)
    m(torch.randn(2, 8, 6, 6)).square().mean().backward()
    opt.step()
    assert torch.equal(m.conv.weight, basis) and not torch.equal(m.refocus.weight, t0)
    assert m.refocus.weight.numel() == 16 * 8 * 9  # g = 1: one 3x3 map per 2-D kernel


def test_refconv_inherits_a_trained_conv():
    from ultralytics.nn.modules import Conv

    conv = trained_bn(Conv(8, 16, 3, 2), 0.5)
    m = RefConv(8, 16, 3, 2)
    missing, unexpected = m.load_state_dict(conv.state_dict(), strict=False)
    assert missing == ["refocus.weight"] and not unexpected
    assert torch.equal(m.conv.weight, conv.conv.weight)


@pytest.mark.parametrize("g", [1, 8])
def test_refconv_fuse_is_the_same_function(g):
    torch.manual_seed(0)
    m = trained_bn(RefConv(8, 8, 3, 2, g=g), 0.5).eval()
    x = torch.randn(2, 8, 11, 7)
    with torch.no_grad():
        ref = m(x)
        w = m.refocused_weight().clone()
        m.fuse()
        assert m.refocus is None and isinstance(m.conv.weight, nn.Parameter) and torch.equal(m.conv.weight, w)
        assert (m(x) - ref).abs().max() <= 1e-6
        assert not any("refocus" in k for k in m.state_dict())


def test_map_k_is_capped_at_the_kernel():
    assert RefConv(8, 8, 1, 1).refocus.kernel_size == (1, 1)
    assert RefConv(8, 8, 5, 1).refocus.kernel_size == (3, 3)
    assert RefConv(8, 8, 5, 1, map_k=5).refocus.kernel_size == (5, 5)


# ----------------------------------------------------------------------------------------------------------------
# Ultralytics' model.fuse()
# ----------------------------------------------------------------------------------------------------------------
def test_fused_yolo_model_gives_the_same_outputs():
    """A small DetectionModel with the four blocks swapped in for its Convs: BaseModel.fuse() fuses RefConv (via
    Conv2.fuse_convs, then fuse_conv_and_bn) and SCConv's inner Convs, leaves ODConv and ACmix as they are, and the
    predictions do not change."""
    from ultralytics.nn.modules import Conv
    from ultralytics.nn.tasks import DetectionModel

    cfg = {
        "nc": 2,
        "backbone": [
            [-1, 1, "Conv", [16, 3, 2]],
            [-1, 1, "Conv", [32, 3, 2]],
            [-1, 1, "Conv", [32, 3, 2]],
            [-1, 1, "Conv", [32, 3, 1]],
            [-1, 1, "Conv", [64, 3, 2]],
        ],
        "head": [[[3, 4], 1, "Detect", ["nc"]]],
    }
    torch.manual_seed(0)
    model = DetectionModel(cfg, ch=3, verbose=False)
    swaps = {
        0: ODConv(3, 16, 3, 2),
        1: SCConv(16, 32, 3, 2),
        2: RefConv(32, 32, 3, 2),
        3: RefConv(32, 32, 3, 1, g=32),
        4: ACmix(32, 64, 3, 2),
    }
    for i, new in swaps.items():
        old = model.model[i]
        new.i, new.f, new.type, new.np = old.i, old.f, type(new).__name__, _nparams(new)
        model.model[i] = new
    trained_bn(model, 0.5).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)[0]
        model.fuse(verbose=False)
        got = model(x)[0]
    for i in (2, 3):
        m = model.model[i]
        assert m.refocus is None and not hasattr(m, "bn") and m.conv.bias is not None
    assert not any(hasattr(k, "bn") for k in (model.model[1].k1, model.model[1].k2, model.model[1].k4))
    assert isinstance(model.model[2], Conv) and model.is_fused()
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# SCConv
# ----------------------------------------------------------------------------------------------------------------
def test_scconv_follows_the_calibration_equations():
    """Pooling by block means (a last partial block averages what it holds), upsampling by repetition and cropping,
    written with other primitives."""
    torch.manual_seed(0)
    m = trained_bn(SCConv(10, 12, 3, 2), 0.5).double().eval()
    x = torch.randn(2, 10, 13, 9, dtype=torch.float64)
    r, h, w = 4, 13, 9
    with torch.no_grad():
        x1, x2 = x[:, :5], x[:, 5:]
        padded = F.pad(x1, (0, -w % r, 0, -h % r), value=float("nan"))
        t1 = padded.view(2, 5, 4, r, 3, r).nanmean((3, 5))  # (B, C/2, ceil(H/4), ceil(W/4))
        up = m.k2(t1).repeat_interleave(r, 2).repeat_interleave(r, 3)[..., :h, :w]
        y1 = m.k4(m.k3(x1) * torch.sigmoid(x1 + up))
        expected = torch.cat((y1, m.k1(x2)), 1)
        assert torch.allclose(m(x), expected, atol=1e-12)


def test_scconv_layout_and_official_parameter_counts():
    m = SCConv(64, 96, 3, 2)
    assert m.k1.conv.stride == m.k4.conv.stride == (2, 2) and m.k2.conv.stride == m.k3.conv.stride == (1, 1)
    assert m.k4.conv.out_channels + m.k1.conv.out_channels == 96 and isinstance(m.k3.act, nn.Identity)
    assert _nparams(SCConv(64, 64)) == 4 * (32 * 32 * 9 + 2 * 32)  # same weights as a 3x3 conv: four quarters
    # Official README: SCNet-50 25.56M, SCNet-101 44.57M: ResNet's 3x3 conv + BN of every bottleneck -> SC-Conv
    import torchvision

    for make, millions in ((torchvision.models.resnet50, 25.56), (torchvision.models.resnet101, 44.57)):
        net = make()
        total = _nparams(net)
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            for block in stage:
                c = block.conv2
                total += _nparams(SCConv(c.in_channels, c.out_channels, 3, c.stride[0])) - _nparams(c)
                total -= _nparams(block.bn2)
        assert round(total / 1e6, 2) == millions


# ----------------------------------------------------------------------------------------------------------------
# ACmix
# ----------------------------------------------------------------------------------------------------------------
def _acmix_reference(m: ACmix, x: torch.Tensor) -> torch.Tensor:
    """alpha * att + beta * conv before the BN, written the official way: head-major q, k, v, unfolded windows,
    an FC over 3 * head maps, a (d, k^2)-ordered group conv; then put in the block's channel order (d, head)."""
    b, _, h, w = x.shape
    heads, dim, s, ka, kc = m.heads, m.dim, m.s, m.k_att, m.k
    r, c2 = ka // 2, heads * dim
    qkv = m.qkv(x).view(b, dim, 3, heads, h, w).transpose(1, 3)  # (B, head, 3, d, H, W)
    q, k, v = (qkv[:, :, t].reshape(b * heads, dim, h, w) for t in range(3))
    ho, wo = _up(h, s), _up(w, s)
    unf_k = F.unfold(k, ka, padding=r, stride=s).view(b * heads, dim, ka * ka, ho, wo)
    unf_v = F.unfold(v, ka, padding=r, stride=s).view(b * heads, dim, ka * ka, ho, wo)
    inside = F.unfold(torch.ones(1, 1, h, w, dtype=x.dtype), ka, padding=r, stride=s).view(ka * ka, ho, wo) > 0
    offsets = torch.tensor([(dx - r, dy - r) for dy in range(ka) for dx in range(ka)], dtype=x.dtype) / max(r, 1)
    rel = (offsets @ m.rel_pos).T  # (d, k_att^2): R j for every window offset j
    qs = q[..., ::s, ::s] * dim**-0.5
    logits = (qs.unsqueeze(2) * (unf_k - rel.view(1, dim, ka * ka, 1, 1))).sum(1)
    a = torch.softmax(logits.masked_fill(~inside, float("-inf")), 1)
    att = (a.unsqueeze(1) * unf_v).sum(2).view(b, heads, dim, ho, wo).transpose(1, 2).reshape(b, c2, ho, wo)

    f_in = torch.cat([t.view(b, heads, dim, h * w) for t in (q, k, v)], 1)  # (B, 3 * head, d, HW)
    f = F.conv2d(f_in, m.fc.view(kc * kc, 3 * heads, 1, 1))  # (B, k^2, d, HW)
    f = f.permute(0, 2, 1, 3).reshape(b, dim * kc * kc, h, w)
    conv = F.conv2d(f, m.dep, stride=s, padding=kc // 2, groups=dim)
    return m.alpha * att + m.beta * conv


@pytest.mark.parametrize("c1, c2, s, head, hw", [(8, 12, 1, 4, (9, 7)), (12, 8, 2, 2, (10, 7)), (8, 8, 1, 4, (2, 3))])
def test_acmix_matches_the_official_formulation(c1, c2, s, head, hw):
    torch.manual_seed(0)
    m = ACmix(c1, c2, 3, s, head=head).double().eval()
    with torch.no_grad():
        m.dep.add_(torch.randn_like(m.dep) * 0.3)  # a trained group conv, no longer pure shifts
        m.alpha.fill_(0.7)
    x = torch.randn(2, c1, *hw, dtype=torch.float64)
    got = {}
    m.bn.register_forward_hook(lambda mod, i, o: got.__setitem__("pre_bn", i[0]))
    with torch.no_grad():
        m(x)
        assert torch.allclose(got["pre_bn"], _acmix_reference(m, x), atol=1e-10)


def test_acmix_convolution_path_starts_as_shifts():
    """With the shift initialisation the group conv moves FC map i by its tap: route v of head 0 to the top-left tap
    and the convolution path returns v shifted one pixel down and right (zeros entering)."""
    m = ACmix(8, 8, 3, 1, act=False).eval()
    assert m.alpha.item() == m.beta.item() == 0.5  # official init
    with torch.no_grad():
        m.alpha.zero_()
        m.fc.zero_()
        m.fc[0, 2 * m.heads + 0] = 1.0  # FC map 0 (tap (0, 0)) <- v of head 0
    x = torch.randn(1, 8, 6, 5)
    with torch.no_grad():
        v0 = m.qkv(x).view(1, m.dim, 3, m.heads, 6, 5)[:, :, 2, 0]  # (1, d, H, W)
        shifted = F.pad(v0, (1, 0, 1, 0))[..., :6, :5]
        expected = 0.5 * shifted.repeat_interleave(m.heads, 1) / math.sqrt(1 + m.bn.eps)
        assert torch.allclose(m(x), expected, atol=1e-6)


def test_acmix_parameters_match_the_official_module():
    """Official ACmix(256, 256): q, k, v 1x1 convs with bias, conv_p 2 -> d with bias (cancels, left out here),
    fc 3*head -> 9 without bias, group conv c2 x 9 x 3 x 3 without bias (set to None), two rates; plus the BN."""
    c, head, d = 256, 4, 64
    official = 3 * (c * c + c) + (2 * d + d) + 3 * head * 9 + c * 9 * 9 + 2
    assert _nparams(ACmix(c, c)) == official - d + 2 * c


# ----------------------------------------------------------------------------------------------------------------
# Arguments, export, compile
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ODConv(16, 16, kernel_num=0), "ODConv: kernel_num"),
        (lambda: ODConv(16, 16, reduction=0), "ODConv: reduction"),
        (lambda: ODConv(16, 24, g=3), "ODConv: .*groups"),
        (lambda: RefConv(16, 16, 3, map_k=2), "RefConv: map_k"),
        (lambda: RefConv(16, 16, 2), "RefConv: map_k"),
        (lambda: RefConv(16, 24, 3, 1, g=5), "RefConv: .*groups"),
        (lambda: SCConv(1, 16), "SCConv: .*>= 2"),
        (lambda: SCConv(16, 16, 2), "SCConv: k must be odd"),
        (lambda: SCConv(16, 16, 3, 1, 0), "SCConv: p"),
        (lambda: SCConv(16, 16, pooling_r=0), "SCConv: pooling_r"),
        (lambda: SCConv(12, 12, g=4), "SCConv: the halves"),
        (lambda: ACmix(16, 24, head=5), "ACmix: .*head=5"),
        (lambda: ACmix(16, 24, k_att=4), "ACmix: k_att"),
        (lambda: ACmix(16, 24, 3, 1, None, 2), "ACmix: only g=1"),
        (lambda: ACmix(16, 24, s=0), "ACmix: s"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


EXPORTS = {
    "ODConv": (lambda: ODConv(16, 24, 3, 2), 16),
    "ODConv-dw-dilated": (lambda: ODConv(16, 16, 3, 1, None, 16, 2, kernel_num=2), 16),
    "RefConv": (lambda: RefConv(16, 24, 3, 2), 16),
    "RefConv-fused": (lambda: RefConv(16, 16, 3, 1, g=16).fuse(), 16),
    "SCConv": (lambda: SCConv(17, 24, 3, 2), 17),
    "ACmix": (lambda: ACmix(32, 16, 3, 2), 32),
}


@pytest.mark.parametrize("name", EXPORTS)
def test_onnx_export_matches(name):
    """Exported at one size with dynamic batch and size, run in onnxruntime at that size and at another."""
    import onnxruntime as ort

    torch.manual_seed(0)
    factory, c1 = EXPORTS[name]
    m = trained_bn(factory(), 0.5).eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dynamic = {"x": {0: "batch", 2: "height", 3: "width"}}
        torch.onnx.export(m, (torch.randn(2, c1, 13, 9),), f, opset_version=19, dynamo=False, input_names=["x"],
                          dynamic_axes=dynamic)  # fmt: skip
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    for shape in ((2, c1, 13, 9), (1, c1, 20, 17)):
        x = torch.randn(shape)
        got = sess.run(None, {"x": x.numpy()})[0]
        with torch.no_grad():
            ref = m(x).numpy()
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-4, shape


def test_odconv_traced_graph_takes_any_batch():
    """Traced (TorchScript export), the per-sample conv must not pin the batch size through its group count."""
    m = trained_bn(ODConv(16, 24, 3, 2), 0.5).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(m, torch.randn(2, 16, 13, 9))
    x = torch.randn(3, 16, 13, 9)
    with torch.no_grad():
        assert torch.allclose(traced(x), m(x), atol=1e-5)
