"""Small pieces shared by the blocks: argument checks, a batch-norm that tolerates pooled batch-1 input, errors."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class BlockArgumentError(ValueError):
    """A block was given an argument it cannot work with (the model parser adds the YAML layer index)."""


class BlockInputError(ValueError):
    """A block received tensors whose shapes break its input contract (raised from ``forward``)."""


def check_int(block: str, name: str, value, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise a BlockArgumentError naming the block."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BlockArgumentError(f"{block}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype for sums and softmaxes: fp32 for half inputs (fp16 overflows, bf16 is too coarse), else the input's."""
    return torch.promote_types(dtype, torch.float32)


def no_autograd(t: torch.Tensor) -> bool:
    """True when autograd does not track ``t`` (inference, or an input that needs no gradient): a block may then
    overwrite a tensor it made itself (in-place ops), which autograd would otherwise have to keep."""
    return not (torch.is_grad_enabled() and t.requires_grad)


def plain_eager(*ts: torch.Tensor) -> bool:
    """True in plain eager inference on the operands ``ts``: autograd tracks none of them, and the code is neither
    traced (ONNX / TorchScript export) nor being compiled. Only then may a block write an op's result into a buffer
    of its own with ``out=``, which autograd and the tracers reject."""
    return all(map(no_autograd, ts)) and not torch.jit.is_tracing() and not torch.compiler.is_compiling()


def can_write_over(buf: torch.Tensor, *operands: torch.Tensor) -> bool:
    """True when an op on ``operands`` may write its result into ``buf``, a map-sized buffer the caller made and no
    longer needs (``out=buf``): plain eager inference (``plain_eager``), buf contiguous, and every operand in buf's
    dtype (under autocast they differ, and out= would change the result's dtype)."""
    return plain_eager(buf, *operands) and buf.is_contiguous() and all(t.dtype == buf.dtype for t in operands)


def check_float(block: str, name: str, value, minimum: float = 0.0, inclusive: bool = False) -> float:
    """Return ``float(value)`` if it is a real number above ``minimum`` (or equal when ``inclusive``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or value < minimum or (value == minimum and not inclusive):
        sign = ">=" if inclusive else ">"
        raise BlockArgumentError(f"{block}: {name} must be a number {sign} {minimum}, got {value!r}")
    return float(value)


def layer_name(module: nn.Module) -> str:
    """'layer 12 (AFF)' when the module was built by the YAML parser (it sets ``.i``), else the class name."""
    i = getattr(module, "i", None)
    return f"layer {i} ({type(module).__name__})" if i is not None else type(module).__name__


class PooledBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d for globally pooled (B, C, 1, 1) maps.

    Batch statistics need more than one value per channel; with a single pooled sample in training (batch 1, which
    Ultralytics can produce as the last batch of an epoch) it normalises with the running statistics instead of
    raising, and leaves them unchanged. Otherwise it is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class IdentityStart(nn.Module):
    """Base of blocks that can start as the identity, for fine-tuning a pretrained model with blocks inserted.

    Off by default: the block is the paper's. ``identity_start()`` (or ``identity_start: true`` at the top of the
    model YAML) adds a learnable residual gate g, initialised to 0, around the block f:
        y = x + g * (f(x) - x)
    so that right after loading pretrained weights the model predicts exactly what the pretrained one did, and
    training moves g away from 0 as far as the block helps.
    """

    def __init__(self):
        super().__init__()
        self.register_parameter("gate", None)

    def __setstate__(self, state):
        """Checkpoints pickled before the gate existed load with no gate (the paper's block)."""
        super().__setstate__(state)
        self._parameters.setdefault("gate", None)

    def identity_start(self):
        """Arm the zero-initialised gate (idempotent); returns self."""
        if self.gate is None:
            self.gate = nn.Parameter(torch.zeros(1))
        return self

    def gated(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y when no gate is armed, else x + g * (y - x) (g in y's dtype: a half map stays half under AMP)."""
        return y if self.gate is None else x + self.gate.to(y.dtype) * (y - x)

    def reweighted(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """gated(x, x * w) for full-size weights w that the caller just made and owns: at inference (no gate, no
        autograd) the product is written over w, saving a map-sized allocation and its page faults."""
        if self.gate is None and no_autograd(w):
            return w.mul_(x)
        return self.gated(x, x * w)


class Conv1x1(nn.Conv2d):
    """Point-wise convolution c1 -> c2: nn.Conv2d(c1, c2, 1), with its parameters, state dict and FLOP count.

    On CPU, a contiguous (NCHW) map goes through a batched matrix product of its (B, c1, H*W) view instead, and a
    pooled (B, c1, 1, 1) map through F.linear: oneDNN's 1x1 convolutions with few output channels cost 5-20x the same
    product there (8x64x40x40 to 4 channels: 0.52 ms against 0.11 ms). CUDA, channels_last input and export tracing
    take nn.Conv2d itself.

    Shapes: (B, c1, H, W) -> (B, c2, H, W).
    """

    def __init__(self, c1: int, c2: int, bias: bool = True):
        super().__init__(c1, c2, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous() or torch.jit.is_tracing():
            return super().forward(x)
        b, _, h, w = x.shape
        weight = self.weight.flatten(1)  # (c2, c1)
        if h * w == 1:
            return F.linear(x.flatten(1), weight, self.bias).view(b, -1, 1, 1)
        y = torch.bmm(weight.expand(b, -1, -1), x.flatten(2))  # (B, c2, H*W); the dtype autocast chose
        if self.bias is not None:
            bias = self.bias.to(y.dtype).unsqueeze(-1)
            y = y.add_(bias) if no_autograd(y) else y + bias
        return y.view(b, -1, h, w)


class ConvToOne(nn.Conv2d):
    """k x k convolution of a map with a few channels (pooled descriptors) to one channel, 'same' padding:
    nn.Conv2d(c1, 1, k, padding=k // 2), with its parameters, state dict and FLOP count.

    On CPU with a batch of more than one, the batch is folded into the channels of one depth-wise convolution
    (B * c1 channels, each with its own input channel's kernel) and the c1 results are summed: oneDNN pads a 2 -> 1
    convolution's channels to its vector width, and the folded form is 1.3-2x faster forward and 1.4-2.2x with
    backward at YOLO's P3-P5 maps (batch 8). CUDA, batch 1, maps under 512 pixels (slower folded), channels_last input
    and export tracing take nn.Conv2d.

    Shapes: (B, c1, H, W) -> (B, 1, H, W).
    """

    def __init__(self, c1: int, k: int, bias: bool = True):
        super().__init__(c1, 1, k, padding=k // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous() or torch.jit.is_tracing():
            return super().forward(x)
        b, c, h, w = x.shape
        if b == 1 or h * w < 512:  # one image, or maps so small that the plain call is faster
            return super().forward(x)
        weight = self.weight.view(c, 1, *self.kernel_size).repeat(b, 1, 1, 1)  # (B * c1, 1, k, k)
        y = F.conv2d(x.view(1, b * c, h, w), weight, None, self.stride, self.padding, self.dilation, b * c)
        y = y.view(b, c, h, w).sum(1, keepdim=True)  # (B, 1, H, W)
        return y if self.bias is None else y + self.bias.to(y.dtype).view(1, 1, 1, 1)


def max_along(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over one dim, which is removed: ``amax`` without autograd, ``max(dim).values`` under it. Same values; amax's
    forward is 2-15x faster on CPU, but its backward builds a full-size mask of the maxima (and splits ties), 1.3-2x
    slower forward plus backward than max's, which passes each gradient to one arg-max."""
    return x.amax(dim) if no_autograd(x) else x.max(dim).values


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, at every pixel (ConvNeXt's "channels_first" LayerNorm):
        y = (x - mean_C(x)) / sqrt(var_C(x) + eps) * w + b
    Statistics are taken in at least fp32 and the result returned in the input dtype; no permute of the feature map.
    """

    def __init__(self, c: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = acc_dtype(x.dtype)
        xf = x.to(dt)
        d = xf - xf.mean(1, keepdim=True)
        y = d * torch.rsqrt(d.square().mean(1, keepdim=True) + self.eps)
        return (y * self.weight.to(dt).view(-1, 1, 1) + self.bias.to(dt).view(-1, 1, 1)).to(x.dtype)
