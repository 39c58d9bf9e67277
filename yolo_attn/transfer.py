"""Structural weight transfer between YOLO models whose layer lists differ by inserted or swapped blocks.

Ultralytics loads pretrained weights by exact key (``model.16.cv1.conv.weight``) and shape, so one inserted row
shifts every later index and the neck and head stay untrained. Here the source's layers are matched to the target's
by structure instead of by index:

1. the two sequences of layer types are aligned (longest common runs, ``difflib``); runs the target inserted stay
   new, and one-for-one swaps where either side is a yolo_attn block (Conv -> DCN, Conv -> SPDConv, C2f -> C2f_DCN,
   Concat -> AFF, ...) are paired so that whatever fits transfers (a DCN keeps the conv weights and BN statistics);
2. each pair's ``from`` wiring must agree once the target's inserted single-input layers are looked through;
3. the source is re-indexed to the target's layer numbers and handed to Ultralytics' own ``load``, which keeps
   tensors whose key and shape match, as always (so an SPDConv, whose conv has 4x the input width, stays new).
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass

import torch.nn as nn

from .registry import block_classes

_OURS = block_classes()


def layers_of(model) -> nn.Sequential | None:
    """The YAML-built layer list of an Ultralytics model (``model.model``), or None if it has none."""
    seq = getattr(model, "model", None)
    if isinstance(seq, nn.Sequential) and all(hasattr(m, "f") and hasattr(m, "i") for m in seq):
        return seq
    return None


def has_blocks(model) -> bool:
    """Whether a model contains any yolo_attn block."""
    return any(isinstance(m, _OURS) for m in model.modules())


def _type(layer) -> str:
    return getattr(layer, "type", None) or type(layer).__module__ + "." + type(layer).__name__


def _is_ours(layer) -> bool:
    return isinstance(layer, _OURS) or any(isinstance(m, _OURS) for m in layer.modules())


def _sources(layer) -> list[int]:
    """Absolute indices of the layers a layer reads."""
    f = layer.f if isinstance(layer.f, (list, tuple)) else [layer.f]
    return [layer.i + x if x < 0 else x for x in f]


@dataclass
class TransferPlan:
    """Which source layer lands in which target layer."""

    layer_map: dict[int, int]  # source layer index -> target layer index
    dropped: list[int]  # source layers with parameters and no place in the target


def plan(source, target) -> TransferPlan:
    """Match the layers of ``source`` to those of ``target`` by structure (types, wiring); see the module docstring."""
    src, dst = layers_of(source), layers_of(target)
    if src is None or dst is None:
        raise ValueError("structural transfer needs two YAML-built Ultralytics models (with .model layer lists)")
    a, b = [_type(m) for m in src], [_type(m) for m in dst]
    pairs: dict[int, int] = {}
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            pairs.update(zip(range(i1, i2), range(j1, j2)))
        elif op == "replace" and i2 - i1 == j2 - j1:  # one-for-one swaps involving one of our blocks
            pairs.update((i, j) for i, j in zip(range(i1, i2), range(j1, j2)) if _is_ours(src[i]) or _is_ours(dst[j]))

    back = {t: s for s, t in pairs.items()}

    def resolve(layers, i: int, mapped) -> int | None:
        """Look through unpaired single-input layers (blocks one side inserted) to a paired layer; None = any."""
        while i not in mapped:
            if i <= 0:
                return None  # reached the input image
            f = layers[i].f
            if not isinstance(f, int):
                return None  # an unpaired fusion of several layers: no single counterpart
            i = i + f if f < 0 else f
        return i

    def same_wiring(s: int, t: int) -> bool:
        if s == 0 or t == 0:
            return s == t == 0
        have = [resolve(src, x, pairs) for x in _sources(src[s])]
        want = [back.get(x) for x in (resolve(dst, x, back) for x in _sources(dst[t]))]
        return len(have) == len(want) and all(h is None or w is None or h == w for h, w in zip(have, want))

    pairs = {s: t for s, t in pairs.items() if same_wiring(s, t)}
    return TransferPlan(
        layer_map=pairs,
        dropped=[s for s in range(len(src)) if s not in pairs and any(True for _ in src[s].parameters())],
    )


def reindexed(source, p: TransferPlan, target_len: int):
    """A shallow copy of ``source`` whose layer list is laid out at the target's indices (placeholders elsewhere),
    so that its state-dict keys are the target's. Shares the source's tensors."""
    src = layers_of(source)
    slots = [nn.Identity() for _ in range(target_len)]
    for s, t in p.layer_map.items():
        slots[t] = src[s]
    proxy = copy.copy(source)
    proxy._modules = dict(source._modules)
    proxy._parameters = dict(source._parameters)
    proxy._buffers = dict(source._buffers)
    proxy.model = nn.Sequential(*slots)
    return proxy


def describe(p: TransferPlan, target, loaded: set[str], total: int) -> str:
    """One log line: how many source tensors landed (``loaded``: target keys filled), and which target layers got
    nothing (inserted blocks, and swapped layers where nothing fit)."""
    dst = layers_of(target)
    per_layer: dict[int, list[int]] = {}  # layer -> [tensors loaded, tensors in all]
    for k in target.state_dict():
        parts = k.split(".")
        if parts[0] == "model" and parts[1].isdigit():
            count = per_layer.setdefault(int(parts[1]), [0, 0])
            count[0] += k in loaded
            count[1] += 1
    new = [t for t, (got, n) in sorted(per_layer.items()) if got == 0]
    partly = [f"{t} ({type(dst[t]).__name__} {got}/{n})" for t, (got, n) in sorted(per_layer.items()) if 0 < got < n]
    moved = sum(1 for s, t in p.layer_map.items() if s != t)
    msg = f"yolo_attn: structural transfer placed {len(loaded)}/{total} source tensors ({moved} layers re-indexed); "
    msg += "target layers left new: " + (", ".join(f"{t} ({type(dst[t]).__name__})" for t in new) or "none")
    if partly:
        msg += "; partly new: " + ", ".join(partly)
    if p.dropped:
        msg += f"; source layers without a place: {', '.join(map(str, p.dropped))}"
    return msg
