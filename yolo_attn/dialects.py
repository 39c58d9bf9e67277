"""Reading a row as its author meant it: our dialect and the community's, never a silently different block.

Community YAMLs are written for forks whose parsers read block rows differently (``[c1, c2, *args]``, ``[c1, *args]``
or the args as written), so the same text means different things. A row is read every way that applies:

- ``yolo_attn``: the positional args fill the block's argument table (``registry.Arg``) in order;
- ``width``: on a channel-preserving block, a leading integer that is the input's width, as written in the YAML
  before scaling or as built, is a width (forks that pass ``[c1, c2, ...]``): checked, dropped, the rest as ours;
- ``alias``: a community name's own signature (``SEBlock [16, 'conv']``), from the class its forks define;
- ``ultralytics``: Ultralytics' class of the same name and another signature (``CBAM [7]``: its kernel_size);
- ``concat``: ``[1]`` on a fusion block or space-to-depth, Concat's dimension copied over when it replaced Concat.

A trailing mapping gives arguments by name (``[{reduction: 8, kernel_size: 3}]``) and always means ours. Each
reading's values are checked against the table (a reduction 1..64 that leaves a channel, an odd kernel, a lambda in
(0, 1), a real width); the readings that pass and build different blocks decide: none -> a one-line error with why
each reading fails; one -> that block, and when it is not our plain dialect, one log line with the canonical row;
two or more -> a one-line refusal naming two readings with the canonical row of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from . import registry
from .registry import REQUIRED, Alias, BlockSpec, Layer

RULE_ORDER = ("yolo_attn", "alias", "ultralytics", "width", "concat")
TOO_MANY = "more positional args than the block takes"


@dataclass
class Reading:
    """One way of reading a row: the block's values (defaults filled), what was dropped, and why it fails (None:
    it passes every check)."""

    rule: str
    values: dict
    dropped: str = ""
    problem: str | None = None
    signature: tuple = field(default_factory=tuple)


@dataclass
class Decision:
    """How a row is read: the block, its values, the reading used, and the canonical row (``conversion`` is the log
    line when the row was not written in our plain dialect, else '')."""

    spec: BlockSpec
    values: dict
    reading: Reading
    canonical: str
    conversion: str = ""


def split_keywords(args: list) -> tuple[list, dict]:
    """(positional args, the trailing mapping or {})."""
    if args and isinstance(args[-1], dict):
        return list(args[:-1]), dict(args[-1])
    return list(args), {}


def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    return yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def args_text(args: list) -> str:
    return "[" + ", ".join(_fmt(a) for a in args) + "]"


def _width_of(v, layer: Layer) -> int | None:
    """The input width ``v`` stands for on this row (as built, or as written before scaling), or None."""
    if not registry._is_int(v) or not isinstance(layer.f, int):
        return None
    c1 = layer.single_input()
    if v == c1 or (v > 0 and layer.scaled(v) == c1):
        return c1
    return None


def _map(rule: str, spec: BlockSpec, sig: tuple, pos: list, layer: Layer, dropped: str = "") -> Reading:
    """Fill the table from ``pos`` along ``sig`` (our names, '@width', '@drop:<what>')."""
    values, notes = {}, [dropped] if dropped else []
    if len(pos) > len(sig):
        return Reading(rule, {}, dropped, TOO_MANY, sig)
    for token, v in zip(sig, pos):
        if token == "@width":
            if _width_of(v, layer) is None:
                return Reading(rule, {}, dropped, f"{v!r} is not the input's width", sig)
            notes.append(f"the width {v!r}")
        elif token.startswith("@drop:"):
            notes.append(f"{token[6:]}={_fmt(v)} (no effect on the block)")
        else:
            values[token] = v
    return Reading(rule, values, ", ".join(notes), None, sig)


def _candidates(spec: BlockSpec, alias: Alias | None, written: str, pos: list, layer: Layer) -> list[Reading]:
    ours = tuple(a.name for a in spec.args)
    sig = alias.signature if alias and alias.signature is not None else ours
    out = [_map("yolo_attn" if sig == ours else "alias", spec, sig, pos, layer)]
    if alias is None and written in registry.ULTRALYTICS_SIGNATURES and pos:
        out.append(_map("ultralytics", spec, registry.ULTRALYTICS_SIGNATURES[written], pos, layer))
    if spec.preserves_width and pos and registry._is_int(pos[0]) and isinstance(layer.f, int):
        w = _width_of(pos[0], layer)
        if w is not None:
            before = f", {pos[0]} as written before scaling" if pos[0] != w else ""
            out.append(_map("width", spec, sig, pos[1:], layer, f"the input's width ({w} channels{before})"))
        elif 64 <= pos[0] <= 2048 and pos[0] % 32 == 0:  # a standard width: say why it does not fit
            out.append(Reading("width", {}, "", f"{pos[0]} is not the input's width ({layer.single_input()} channels "
                                                "here, as built or as written before scaling)", sig))  # fmt: skip
    if pos == [1] and spec.rule in (registry.fused_width, registry.fused_width_or_equal, registry.concat_width):
        out.append(_map("concat", spec, sig, [], layer, "Concat's dimension 1"))
    return out


def _check(spec: BlockSpec, r: Reading, kw: dict, c: int | None) -> Reading:
    """Merge the keywords into a reading and check every value against the table."""
    if r.problem:
        return r
    for k in kw:
        if k in r.values:
            return Reading(r.rule, {}, r.dropped, f"{k} given twice (positional and by name)", r.signature)
    given = {**r.values, **kw}
    full = {}
    for a in spec.args:
        v = given.get(a.name, a.default)
        if v is REQUIRED:
            why = "needs the output width as its first argument, like Conv: [c2, ...]" if a.kind == "width" else (
                f"needs {a.name}")  # fmt: skip
            return Reading(r.rule, {}, r.dropped, why, r.signature)
        why = a.problem(v, c)
        if why:
            return Reading(r.rule, {}, r.dropped, why, r.signature)
        full[a.name] = v
    return Reading(r.rule, full, r.dropped, None, r.signature)


def describe(spec: BlockSpec, r: Reading, written: str) -> str:
    """A reading in words, as the errors and log lines name it."""
    sig = ", ".join("c2" if t == "@width" else t.removeprefix("@drop:") for t in r.signature) or "no args"
    if r.rule == "yolo_attn":
        return f"yolo_attn's {spec.name} [{sig}]"
    if r.rule == "alias":
        return f"{written}'s [{sig}]"
    if r.rule == "ultralytics":
        return f"Ultralytics' {written}(c1, {sig})"
    if r.rule == "width":
        return "a width first (the [c2, ...] convention of forks that pass widths)"
    return "Concat's dimension, copied into a fusion row that replaced Concat"


def canonical_args(spec: BlockSpec, values: dict) -> list:
    """The row's args in our dialect: ``[]`` for defaults; a mapping of what differs for channel-preserving blocks
    (a mapping is never misread); for the others positional args up to the last that differs (c2 as written)."""
    diff = {k: v for k, v in values.items() if k != "block_args" and spec.defaults().get(k) != v}
    block_args = values.get("block_args") or {}
    if spec.preserves_width:
        return [diff] if diff else []
    names = [a.name for a in spec.args]
    last = max((names.index(k) for k in diff), default=-1)
    out = [values[n] for n in names[: last + 1]]
    return out + ([block_args] if block_args else [])


def canonical_row(layer: Layer, spec: BlockSpec, values: dict, written: str | None = None) -> str:
    name = spec.name if written is None else written
    return f"[{_fmt(layer.f)}, {layer.yaml_n}, {name}, {args_text(canonical_args(spec, values))}]"


class _Hinted:
    """A layer whose errors end with a hint (the block whose name differs only in case: ScConv / SCConv)."""

    def __init__(self, layer: Layer, hint: str):
        self._layer, self._hint = layer, hint

    def error(self, msg: str):
        return self._layer.error(msg + self._hint)


def read(spec: BlockSpec, alias: Alias | None, layer: Layer) -> Decision:
    """How a row is read (see the module docstring); raises LayerError when no reading fits or two differ."""
    written = layer.name
    pos, kw = split_keywords(layer.args)
    block_kw = {}
    if spec.inner is not None:  # a composite: the trailing mapping is its inner block's arguments
        block_kw, kw = kw, {}
        inner_names = [a.name for a in spec.block_args]
        for k in block_kw:
            if k not in inner_names:
                raise layer.error(f"{spec.inner} has no argument {k!r}; its arguments: {', '.join(inner_names) or 'none'}")
    valid = [a.name for a in spec.args]
    for k in kw:  # a mapping means our names
        if k not in valid:
            raise layer.error(f"unknown argument {k!r}; {spec.name}'s arguments: {', '.join(valid) or 'none'}")
    if alias is not None and alias.preset:  # what the name itself means; the row's own mapping wins
        kw = {**alias.preset, **kw}
    c = layer.input_width()
    readings = [_check(spec, r, kw, c) for r in _candidates(spec, alias, written, pos, layer)]
    if spec.inner is not None and block_kw:
        inner = registry.BLOCKS[spec.inner]
        hidden = None  # the bottleneck width is known once built; ranges that need it are checked by the block
        for k, v in block_kw.items():
            why = next(a for a in inner.args if a.name == k).problem(v, hidden)
            if why:
                raise layer.error(f"{spec.inner} inside {spec.name}: {why}")
    ok = [r for r in readings if r.problem is None]
    distinct: list[Reading] = []
    for r in sorted(ok, key=lambda r: RULE_ORDER.index(r.rule)):
        if all(r.values != d.values for d in distinct):
            distinct.append(r)
    got = args_text(layer.args)
    if not distinct:
        twins = "".join(f" ({b.name}, {b.title}, is another block)" for b in registry.case_twins(spec.name))
        layer = _Hinted(layer, twins) if twins else layer
        failed = [r for r in readings if r.problem]
        if any(r.problem != TOO_MANY for r in failed):  # a reading that only has too many args says nothing
            failed = [r for r in failed if r.problem != TOO_MANY]
        expected = f"expected {spec.yaml_args} (the input width is filled in from 'from')"
        if len(failed) == 1 and failed[0].problem == TOO_MANY:
            raise layer.error(f"got YAML args {got}; {expected}")
        if len(failed) == 1:
            raise layer.error(failed[0].problem)
        why = "; ".join(f"as {describe(spec, r, written)}: {r.problem}" for r in failed)
        raise layer.error(f"got YAML args {got}: {why}; {expected}")
    if len(distinct) > 1:
        a, b = distinct[:2]
        ra, rb = (canonical_row(layer, spec, {**r.values, "block_args": block_kw}) for r in (a, b))
        raise layer.error(f"{got} reads two ways: {describe(spec, a, written)} -> {ra}, or {describe(spec, b, written)}"
                          f" -> {rb}; write the row you mean")  # fmt: skip
    chosen = distinct[0]
    values = {**chosen.values, **({"block_args": block_kw} if spec.inner is not None else {})}
    canonical = canonical_row(layer, spec, values)
    what = []
    inner = registry.BLOCKS.get(spec.inner) if spec.inner is not None else None
    elsewhere = registry.placed_elsewhere_in_forks(inner) if inner is not None else None
    if elsewhere:  # e.g. forks' C2f_PConv put PConv in place of cv2: say which model this row builds
        what.append(f"{inner.name} after each bottleneck's second conv (forks that put it {elsewhere} build another "
                    "model)")
    if alias is not None:
        what.append(f"{written} is yolo_attn's {spec.name}, {spec.title}")
    if (chosen.rule != "yolo_attn" or alias is not None) and (chosen.rule != "yolo_attn" or chosen.dropped):
        what.append(f"{got} read as {describe(spec, chosen, written)}" + (f": {chosen.dropped} dropped"
                                                                           if chosen.dropped else ""))  # fmt: skip
    conversion = f"{'; '.join(what)}; canonical row: {canonical}" if what else ""
    return Decision(spec, values, chosen, canonical, conversion)
