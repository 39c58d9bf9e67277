"""Composites: Ultralytics' C2f and C3k2 whose bottlenecks end in a block (``C2f_CBAM``, ``C3k2_SE``, ...).

Community forks write one class per pair (C2f_EMA, C2f_CA, C3k2_CBAM, ...). Here two classes serve every
channel-preserving block. ``C2fWith`` and ``C3k2With`` first build Ultralytics' own C2f / C3k2 with the row's
arguments, so widths, repeats, the C3k switch and every tensor name are the host's on the installed release (a
pretrained C2f's tensors load by name). Then each ``Bottleneck`` inside (C3k2's C3k and attention variants included)
gets the block after its second conv, before the shortcut add:

    y = block(cv2(cv1(x)))          the block at the bottleneck's width
    out = x + y if shortcut else y

This is where most community composites put it (EMA, MLCA and iRMB in C2f, read in their forks' code); a few put it
after the whole C2f, which is a plain row after C2f here.

Both classes take the block's class and its keyword arguments first, then the host's own arguments, so the
positional call of Ultralytics' parser works on every release whatever C3k2's signature is there.

Shapes: (B, c1, H, W) -> (B, c2, H, W).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from ultralytics.nn.modules.block import C2f, C3k2, Bottleneck

from ._common import IdentityStart


class BlockBottleneck(Bottleneck):
    """An Ultralytics ``Bottleneck`` (its own cv1, cv2 and shortcut) with ``attn`` after cv2."""

    def __init__(self, host: Bottleneck, block: nn.Module):
        nn.Module.__init__(self)
        self.cv1, self.cv2, self.add = host.cv1, host.cv2, host.add
        self.attn = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.cv2(self.cv1(x)))
        return x + y if self.add else y


def _give_blocks(module: nn.Module, make) -> int:
    """Replace every plain ``Bottleneck`` below ``module`` by a ``BlockBottleneck``; returns how many."""
    count = 0
    for name, child in module.named_children():
        if type(child) is Bottleneck:
            setattr(module, name, BlockBottleneck(child, make(child.cv2.conv.out_channels)))
            count += 1
        else:
            count += _give_blocks(child, make)
    return count


class Composite:
    """What both composites share: the block name, and the blocks' identity start (``identity_start: true``)."""

    block: str

    def _setup(self, block: type, block_args: dict | None) -> None:
        self.block = block.__name__
        made = _give_blocks(self.m, lambda c: block(c, **(block_args or {})))
        if not made:
            raise ValueError(f"{type(self).__name__}: the host has no Bottleneck to give a {self.block}")

    def blocks(self) -> list[nn.Module]:
        return [m.attn for m in self.modules() if isinstance(m, BlockBottleneck)]

    def identity_start(self) -> None:
        """Every block inside starts as the identity, so the composite starts as its host (for fine-tuning)."""
        for b in self.blocks():
            if isinstance(b, IdentityStart):
                b.identity_start()


class C2fWith(Composite, C2f):
    """``C2f_<Block>``: Ultralytics' C2f whose bottlenecks end in ``block``.

    Args:
        block (type): The block's class; built as ``block(c, **block_args)`` at the bottleneck width c.
        block_args (dict | None): The block's keyword arguments (the row's trailing mapping).
        c1, c2, n, shortcut, g, e: as ``C2f``.
    """

    def __init__(self, block: type, block_args: dict | None, c1: int, c2: int, n: int = 1, shortcut: bool = False,
                 g: int = 1, e: float = 0.5):  # fmt: skip
        super().__init__(c1, c2, n, shortcut, g, e)
        self._setup(block, block_args)


class C3k2With(Composite, C3k2):
    """``C3k2_<Block>``: Ultralytics' C3k2 (its plain, C3k and attention variants) whose bottlenecks end in ``block``.

    Args:
        block (type): The block's class; built as ``block(c, **block_args)`` at the bottleneck width c.
        block_args (dict | None): The block's keyword arguments (the row's trailing mapping).
        c1, c2, n, *host: as the installed Ultralytics' ``C3k2`` (c3k, e, g, shortcut; 8.4 adds attn).
    """

    def __init__(self, block: type, block_args: dict | None, c1: int, c2: int, n: int = 1, *host):
        super().__init__(c1, c2, n, *host)
        self._setup(block, block_args)
