"""BiFPN fast normalised fusion (BiFPN_Concat): contract cases for test_blocks.py, the paper's equation in float64,
the start as Concat, normalised weights that learn, input and argument checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from yolo_attn.modules._common import BlockArgumentError, BlockInputError
from yolo_attn.modules.fusion import BiFPN_Concat


def _case(widths, mode="concat"):
    out = sum(widths) if mode == "concat" else widths[0]
    return (
        lambda: BiFPN_Concat(list(widths), mode),
        lambda b, h, w: [torch.randn(b, c, h, w) for c in widths],
        lambda b, h, w: (b, out, h, w),
    )


# name -> (factory, inputs(B, H, W) -> list of inputs, expected output shape(B, H, W))
CASES = {
    "BiFPN_Concat": _case((16, 24)),
    "BiFPN_Concat-3": _case((16, 24, 8)),
    "BiFPN_Concat-sum-3": _case((16, 16, 16), "sum"),
}


def _set(m: BiFPN_Concat, v) -> BiFPN_Concat:
    with torch.no_grad():
        m.weight.copy_(torch.tensor(v, dtype=m.weight.dtype))
    return m


def test_a_new_block_is_exactly_concat():
    """v = 1: every input passes with the factor 1.0 exactly (bit-identical to Concat), with and without autograd."""
    xs = [torch.randn(2, c, 7, 5) for c in (16, 24, 8)]
    m = BiFPN_Concat([16, 24, 8])
    assert torch.equal(m.weight, torch.ones(3)) and torch.equal(m.factors(), torch.ones(3))
    with torch.no_grad():
        assert torch.equal(m(xs), torch.cat(xs, 1))
    assert torch.equal(m([x.clone().requires_grad_() for x in xs]), torch.cat(xs, 1))


@pytest.mark.parametrize("mode", ["concat", "sum"])
def test_fast_normalised_fusion_equation(mode):
    """EfficientDet eq. (2): w_i = relu(v_i) / (eps + sum_j relu(v_j)); sum: O = sum_i w_i I_i; concat: the weighted
    inputs (times the constant n + eps) side by side. A negative v_i switches its input off (ReLU)."""
    v = [0.7, -0.3, 2.1]
    widths = [8, 8, 8] if mode == "sum" else [8, 4, 6]
    m = _set(BiFPN_Concat(widths, mode).double(), v)
    xs = [torch.randn(2, c, 5, 6, dtype=torch.float64) for c in widths]
    r = [max(t, 0.0) for t in v]
    w = [t / (sum(r) + 1e-4) for t in r]
    with torch.no_grad():
        if mode == "sum":
            expected = sum(wi * x for wi, x in zip(w, xs))
        else:
            expected = torch.cat([(3 + 1e-4) * wi * x for wi, x in zip(w, xs)], 1)
        assert torch.allclose(m(xs), expected, atol=1e-12)
        assert torch.allclose(m.weights(), torch.tensor(w, dtype=torch.float64), atol=1e-15)
        assert (m(xs)[:, 8:12] == 0).all() if mode == "concat" else True


def test_weights_stay_normalised_and_learn():
    """The normalised weights sum to S / (S + eps) (1 up to eps) wherever v goes, each v_i receives a gradient,
    and a step of SGD moves the weights while they stay normalised."""
    m = BiFPN_Concat([8, 8, 8], "sum")
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    xs = [torch.randn(2, 8, 6, 6) * (i + 1) for i in range(3)]
    target = xs[2]
    for _ in range(5):
        opt.zero_grad()
        F.mse_loss(m(xs), target).backward()
        assert m.weight.grad is not None and (m.weight.grad[m.weight > 0] != 0).all() and (m.weight > 0).all()
        opt.step()
        w = m.weights()
        s = F.relu(m.weight).sum()
        assert torch.allclose(w.sum(), s / (s + 1e-4)) and abs(w.sum().item() - 1) < 1e-4
    assert m.weights()[2] > 1 / 3  # learned to prefer the input that matches the target
    for v in ([5.0, 1e-3, 0.2], [-1.0, 2.0, 0.0]):
        w = _set(m, v).weights()
        assert abs(w.sum().item() - 1) < 1e-3 and (w >= 0).all()


def test_concat_mode_weights_receive_gradients():
    m = BiFPN_Concat([8, 4])
    xs = [torch.randn(2, 8, 5, 5), torch.randn(2, 4, 5, 5) * 3]
    m(xs).square().mean().backward()
    assert (m.weight.grad != 0).all()


def test_output_keeps_the_input_dtype_and_normalises_in_fp32():
    m = _set(BiFPN_Concat([8, 8], "sum"), [1.0, 3.0])
    xs = [torch.randn(1, 8, 4, 4).half() for _ in range(2)]
    assert m(xs).dtype == torch.float16
    assert m.factors().dtype == torch.float32 and m.to(torch.bfloat16).factors().dtype == torch.float32


def test_sum_mode_needs_equal_widths():
    with pytest.raises(BlockArgumentError, match=r"BiFPN_Concat: mode 'sum' adds its inputs, .* \[16, 24\]"):
        BiFPN_Concat([16, 24], "sum")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: BiFPN_Concat([16]), "BiFPN_Concat: fuses at least 2 inputs"),
        (lambda: BiFPN_Concat(16), "BiFPN_Concat: fuses at least 2 inputs"),
        (lambda: BiFPN_Concat([16, 16], "add"), "BiFPN_Concat: mode must be 'concat' or 'sum'"),
        (lambda: BiFPN_Concat([16, 16], 1), "BiFPN_Concat: mode"),  # Concat's dimension is not a mode
        (lambda: BiFPN_Concat([16, 16], eps=0), "BiFPN_Concat: eps"),
        (lambda: BiFPN_Concat([16, 0]), "BiFPN_Concat: input width"),
    ],
)
def test_bad_arguments_are_named(make, match):
    with pytest.raises(BlockArgumentError, match=match):
        make()


def test_bad_inputs_are_named():
    m = BiFPN_Concat([8, 8])
    with pytest.raises(BlockInputError, match="expected 2 inputs, got 3"):
        m([torch.randn(1, 8, 4, 4)] * 3)
    with pytest.raises(BlockInputError, match="same H x W"):
        m([torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)])


def test_parameters():
    assert sum(p.numel() for p in BiFPN_Concat([64, 64]).parameters()) == 2
    assert sum(p.numel() for p in BiFPN_Concat([64, 128, 256], "concat").parameters()) == 3
