"""Edit Ultralytics model YAMLs: insert a block after layers, or swap a layer for a drop-in, renumbering ``from``.

The text is edited line by line (one row per line, as Ultralytics writes them), so comments and layout survive:
only the ``from`` field of rows whose wiring changes is rewritten, index comments (``# 12``, ``# 3-P3/8``) follow
their row, and new rows are added under the row they follow. Inserting a block after layer L also redirects every
layer that read L to read the block instead, so the block is on the path to Detect (an unused block would leave
parameters without gradients, which breaks DDP).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .registry import BLOCKS, did_you_mean, get, known_names, same_width

POST_STAGE = {"SPPF", "SPP", "SPPELAN", "C2PSA", "C2fPSA", "PSA", "AIFI"}  # after the last stage, not a stage output
ROLES = ("backbone-p2", "backbone-p3", "backbone-p4", "backbone-p5", "backbone-outputs", "backbone-last",
         "down-p3", "down-p4", "down-p5", "neck-down-p4", "neck-down-p5", "strided-convs",
         "neck-p3", "neck-p4", "neck-p5", "neck-outputs", "neck-concats", "neck-upsamples",
         "backbone-stages", "neck-stages", "stages")  # fmt: skip
STAGE_MODULES = ("C2f", "C3k2")  # the CSP stage blocks the stage roles find (and composites replace)
ROLE_HELP = {
    "backbone-p2..p5": "the backbone's last layer at that stride (a stage output), not SPPF/C2PSA-like layers",
    "backbone-outputs": "backbone-p3, -p4, -p5",
    "backbone-last": "the backbone's last row (SPPF, C2PSA, ...)",
    "down-p3..p5": "the backbone's stride-2 Conv into that stride",
    "neck-down-p4, -p5": "the neck's stride-2 Conv into that stride",
    "strided-convs": "every stride-2 Conv but the first row (the stem)",
    "neck-p3..p5, neck-outputs": "the rows the head reads, by stride",
    "neck-concats": "the neck's two-input Concat rows",
    "neck-upsamples": "the neck's nn.Upsample rows",
    "backbone-stages, neck-stages, stages": "the C2f / C3k2 rows of the backbone, of the neck, of both",
}


class YamlEditError(ValueError):
    """A request the editor cannot carry out; the message says why."""


@dataclass
class Row:
    line: int  # index into the document's lines
    index: int  # layer index
    head: str  # text before the row's '['
    body: str  # the row '[from, n, module, args]'
    tail: str  # text after it (comment)
    f: int | list
    n: int
    module: str
    args: list

    def text(self, f=None, module: str | None = None, args_text: str | None = None) -> str:
        parts = _split_top(self.body[1:-1])
        if f is not None:
            parts[0] = " " + _fmt_from(f) if parts[0].startswith(" ") else _fmt_from(f)
        if module is not None:
            parts[2] = " " + module
        if args_text is not None:
            parts[3] = " " + args_text
        return self.head + "[" + ",".join(parts) + "]" + self.tail


def _fmt_from(f) -> str:
    return str(f) if isinstance(f, int) else "[" + ", ".join(map(str, f)) + "]"


def _split_top(s: str) -> list[str]:
    """Split on commas at bracket depth 0, keeping each piece's spacing."""
    parts, depth, quote, cur = [], 0, None, ""
    for ch in s:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return parts


def _row_span(line: str) -> tuple[int, int] | None:
    """(start, end) of a '- [ ... ]' row's bracket text in a line, or None."""
    m = re.match(r"^(\s*-\s*)\[", line)
    if not m:
        return None
    depth, quote = 0, None
    for pos in range(m.end() - 1, len(line)):
        ch = line[pos]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return m.end() - 1, pos + 1
    return None


class ModelYaml:
    """An Ultralytics model YAML as text plus its parsed rows."""

    def __init__(self, text: str, source: str = "<text>"):
        self.source = source
        self.lines = text.splitlines(keepends=True)
        if self.lines and not self.lines[-1].endswith("\n"):
            self.lines[-1] += "\n"
        self.data = yaml.safe_load(text) or {}
        if not isinstance(self.data, dict) or not {"backbone", "head"} <= set(self.data):
            raise YamlEditError(f"{source} is not an Ultralytics model YAML (no 'backbone' and 'head' lists)")
        self.rows: list[Row] = []
        section = None
        for no, line in enumerate(self.lines):
            key = re.match(r"^([A-Za-z_]\w*)\s*:", line)
            if key:
                section = key.group(1)
                continue
            span = _row_span(line) if section in ("backbone", "head") else None
            if span:
                body = line[span[0] : span[1]]
                f, n, module, args = yaml.safe_load(body)
                self.rows.append(Row(no, len(self.rows), line[: span[0]], body, line[span[1] :], f, n, module, args))
        expected = len(self.data["backbone"]) + len(self.data["head"])
        if len(self.rows) != expected:
            raise YamlEditError(
                f"{source}: found {len(self.rows)} one-line rows but the YAML has {expected} layers; the editor needs "
                "each '- [from, repeats, module, args]' row on one line"
            )
        self.n_backbone = len(self.data["backbone"])

    @classmethod
    def load(cls, path: str | Path) -> ModelYaml:
        return cls(Path(path).read_text(encoding="utf-8"), str(path))

    def text(self) -> str:
        return "".join(self.lines)

    def sources(self, row: Row) -> list[int]:
        """Absolute indices a row reads."""
        f = row.f if isinstance(row.f, list) else [row.f]
        return [row.index + x if x < 0 else x for x in f]

    def detect_row(self) -> Row:
        return self.rows[-1]


# ----------------------------------------------------------------------------------------------------------------
# Probing a YAML: widths and strides of every layer
# ----------------------------------------------------------------------------------------------------------------
def probe(doc: ModelYaml) -> list[tuple[int, int]]:
    """(nominal width, stride) of every layer: built at width 1 (no max_channels cap), depth 1 repeat, on a 64x64
    input. Widths are the YAML's own numbers (rounded to multiples of 8), the ones a YAML row states."""
    import copy

    import torch
    from ultralytics.nn.tasks import parse_model

    d = copy.deepcopy(doc.data)
    d.pop("scales", None)
    d.update(depth_multiple=1e-3, width_multiple=1.0)
    d["head"] = d["head"][:-1]  # Detect (or another head) is not needed for widths
    model, _ = parse_model(d, ch=d.get("channels", 3), verbose=False)
    model.eval()
    size, outs = 64, []
    x = torch.zeros(1, d.get("channels", 3), size, size)
    with torch.no_grad():
        for m in model:
            inp = [outs[j] for j in m.f] if isinstance(m.f, list) else (x if m.f == -1 else outs[m.f])
            x = m(inp)
            outs.append(x)
    # a layer may return several maps (YOLOv9-E's CBLinear): its width is theirs together, its stride theirs
    return [(sum(t.shape[1] for t in o), size // o[0].shape[-1]) if isinstance(o, (list, tuple))
            else (o.shape[1], size // o.shape[-1]) for o in outs]  # fmt: skip


class RoleError(YamlEditError):
    """A role that does not exist in this model (a neck role in a classifier, no Concat rows, ...)."""


def resolve_roles(doc: ModelYaml, roles: list[str], info: list | None = None) -> list[int]:
    """Layer indices for role names (see ROLES), from the model's own strides and rows; works for every Ultralytics
    family (v8 to 26, RT-DETR, and their task heads). ``info`` is probe(doc), when the caller has it already."""
    info = info if info is not None else probe(doc)
    head = doc.detect_row()
    detect_in = doc.sources(head)
    neck = doc.rows[doc.n_backbone : head.index]
    out = []
    for role in roles:
        if role not in ROLES:
            raise YamlEditError(f"unknown role {role!r}; {did_you_mean(role, list(ROLES))}roles: {', '.join(ROLES)}")
        if role.startswith("neck") and not neck:
            raise RoleError(f"{role}: the model has no neck (its {head.module} head reads the backbone directly)")
        if role == "backbone-outputs":
            out += [_stage_output(doc, info, k) for k in (3, 4, 5)]
        elif role == "backbone-last":
            out.append(doc.n_backbone - 1)
        elif role == "neck-outputs":
            out += detect_in
        elif role == "neck-concats":
            hits = [r.index for r in neck if r.module == "Concat" and isinstance(r.f, list) and len(r.f) == 2]
            if not hits:
                raise RoleError(f"{role}: the neck has no two-input Concat rows")
            out += hits
        elif role == "neck-upsamples":
            hits = [r.index for r in neck if r.module.split(".")[-1] == "Upsample"]
            if not hits:
                raise RoleError(f"{role}: the neck has no nn.Upsample rows")
            out += hits
        elif role in ("backbone-stages", "neck-stages", "stages"):
            rows = {"backbone-stages": doc.rows[: doc.n_backbone], "neck-stages": neck,
                    "stages": doc.rows[: head.index]}[role]  # fmt: skip
            hits = [r.index for r in rows if r.module in STAGE_MODULES]
            if not hits:
                where = {"backbone-stages": "backbone", "neck-stages": "neck", "stages": "model"}[role]
                raise RoleError(f"{role}: the {where} has no {' or '.join(STAGE_MODULES)} rows")
            out += hits
        elif role == "strided-convs":
            hits = [r.index for r in doc.rows[1 : head.index] if _is_strided_conv(r)]
            if not hits:
                raise RoleError(f"{role}: the model has no stride-2 Conv rows after the stem")
            out += hits
        elif role.startswith(("down-", "neck-down-")):
            level = int(role.rsplit("-p", 1)[1])
            rows = doc.rows[: doc.n_backbone] if role.startswith("down-") else neck
            hits = [r.index for r in rows if _is_strided_conv(r) and info[r.index][1] == 2**level]
            if not hits:
                where = "backbone" if role.startswith("down-") else "neck"
                raise RoleError(f"{role}: the {where} has no stride-2 Conv into P{level}/{2**level}")
            out.append(hits[0])
        elif role.startswith("backbone-"):
            out.append(_stage_output(doc, info, int(role.split("-p")[1])))
        else:  # neck-p3 .. neck-p5
            stride = 2 ** int(role.split("-p")[1])
            hits = [i for i in detect_in if info[i][1] == stride]
            if not hits:
                raise RoleError(f"{role}: no {head.module} input at stride {stride}")
            out.append(hits[0])
    return out


def _is_strided_conv(row: Row) -> bool:
    s = row.args[2] if row.module == "Conv" and len(row.args) > 2 else 1
    return isinstance(s, int) and s >= 2


def describe(doc: ModelYaml, layer: int, info: list) -> str:
    """How a header names a base layer: 'backbone P3/8' for a stage output, 'SPPF (P5/32)' for the last backbone
    row after the stages, else 'layer N'."""
    stride = info[layer][1]
    level = stride.bit_length() - 1
    if layer < doc.n_backbone:
        try:
            if _stage_output(doc, info, level) == layer:
                return f"backbone P{level}/{stride}"
        except YamlEditError:
            pass
        if layer == doc.n_backbone - 1 and doc.rows[layer].module.split(".")[-1] in POST_STAGE:
            return f"{doc.rows[layer].module} (P{level}/{stride})"
    return f"layer {layer}"


def _stage_output(doc: ModelYaml, info, level: int) -> int:
    stride = 2**level
    hits = [
        r.index
        for r in doc.rows[: doc.n_backbone]
        if info[r.index][1] == stride and r.module.split(".")[-1] not in POST_STAGE
    ]
    if not hits:
        raise RoleError(f"backbone-p{level}: the backbone has no layer at stride {stride} (P{level})")
    return hits[-1]


# ----------------------------------------------------------------------------------------------------------------
# Edits
# ----------------------------------------------------------------------------------------------------------------
def _block(name: str):
    """The block a name means (ours, a community alias or a composite); rows are written with our name."""
    spec = get(name)
    if spec is None:
        raise YamlEditError(f"unknown block {name!r}; {did_you_mean(name, known_names())}blocks: {', '.join(BLOCKS)}")
    return spec


def _check_layers(doc: ModelYaml, layers: list[int], what: str) -> list[int]:
    last = len(doc.rows) - 1
    for x in layers:
        if not isinstance(x, int) or not 0 <= x <= last:
            raise YamlEditError(f"{what} {x!r} is not a layer of {doc.source} (layers 0..{last})")
    if len(set(layers)) != len(layers):
        raise YamlEditError(f"{what}s repeat a layer: {layers}")
    return sorted(layers)


def insert(doc: ModelYaml, block: str, after: list[int], args_text: str = "[]") -> tuple[str, list[str]]:
    """Insert one ``block`` row after each layer in ``after``; returns (new text, what changed)."""
    spec = _block(block)
    block = spec.name
    if spec.rule is not same_width:
        raise YamlEditError(
            f"insert adds channel-preserving blocks ({', '.join(n for n, s in BLOCKS.items() if s.rule is same_width)}); "
            f"{block} changes widths or fuses inputs: use 'replace', or a ready config (yolo-attn list)"
        )
    try:
        args = yaml.safe_load(args_text)
    except yaml.YAMLError as e:
        raise YamlEditError(f"--args must be a YAML list such as '[16, 7]', got {args_text!r} ({e})") from None
    if not isinstance(args, list):
        raise YamlEditError(f"--args must be a YAML list such as '[16, 7]', got {args_text!r}")
    after = _check_layers(doc, after, "position")
    detect = doc.detect_row().index
    if detect in after:
        raise YamlEditError(f"layer {detect} is the {doc.detect_row().module} head; insert after a feature layer")

    def new_index(old: int) -> int:
        return old + sum(1 for s in after if s < old)

    def new_target(old: int) -> int:  # readers of a layer that got a block now read the block
        return new_index(old) + 1 if old in after else new_index(old)

    changes, redirected = [], {}
    lines = list(doc.lines)
    for row in doc.rows:
        fs = row.f if isinstance(row.f, list) else [row.f]
        new = []
        for x in fs:
            old = row.index + x if x < 0 else x
            t = new_target(old)
            new.append(t - new_index(row.index) if x < 0 else t)
            if old in after:
                redirected.setdefault(old, []).append(new_index(row.index))
        f_new = new if isinstance(row.f, list) else new[0]
        text = row.text(f=f_new) if f_new != row.f else lines[row.line]
        lines[row.line] = _renumber_comment(text, row.index, new_index(row.index))
    args_yaml = "[" + ", ".join(map(_fmt_arg, args)) + "]"
    for s in reversed(after):
        row, idx = doc.rows[s], new_index(s) + 1
        note = f"# {idx} {block} after layer {new_index(s)} (yolo-attn insert)"
        lines.insert(row.line + 1, f"{row.head}[-1, 1, {block}, {args_yaml}] {note}\n")
    for s in after:
        readers = ", ".join(map(str, sorted(set(redirected.get(s, [])))))
        changes.append(f"inserted {block} as layer {new_index(s) + 1} after layer {new_index(s)} (was {s}); "
                       f"layers reading it: {readers or 'none'}")
    moved = sum(1 for r in doc.rows if new_index(r.index) != r.index)
    changes.append(f"renumbered {moved} later layers; every absolute 'from' updated")
    return "".join(lines), changes


def _fmt_arg(a) -> str:
    return yaml.safe_dump(a, default_flow_style=True).strip().removesuffix("...").strip() if not isinstance(a, str) else a


def _renumber_comment(line: str, old: int, new: int) -> str:
    """'... # 12 (P3/8)' -> '... # 13 (P3/8)' when the comment starts with the row's old index."""
    if old == new:
        return line
    return re.sub(rf"(#\s*){old}(?=\D|$)", rf"\g<1>{new}", line, count=1)


def drop_in(old: str, spec) -> str | None:
    """How a row of Ultralytics module ``old`` becomes a row of ``spec``'s block, or None when it is no drop-in:
    'same' (the same args), 'c3k2' (C3k2's [c2, c3k, e, g, shortcut] as C2f's [c2, shortcut, g, e]), 'aff' ([c2] = the
    second input's width, [] when both are equal), 'concat' ([] for Concat's [1]), 'upsample' (nn.Upsample's scale
    kept)."""
    from . import registry as r

    if old == "Conv" and spec.rule is r.conv_width:
        return "same"
    if old in STAGE_MODULES and spec.rule is r.composite:
        return "same" if spec.name.startswith(f"{old}_") else None
    if old == "C2f" and spec.rule is r.conv_width_repeat:
        return "same"
    if old == "C3k2" and spec.rule is r.conv_width_repeat:
        return "c3k2"
    if old == "Concat" and spec.rule is r.fused_width_or_equal:
        return "aff"
    if old == "Concat" and spec.rule is r.concat_width:
        return "concat"
    if old == "Upsample" and spec.kind == "upsample":
        return "upsample"
    return None


def _c3k2_values(args: list) -> dict:
    """A C3k2 row's args by name, read along the installed C3k2's signature (8.4 adds ``attn`` before g)."""
    import inspect

    from ultralytics.nn.modules.block import C3k2

    params = list(inspect.signature(C3k2.__init__).parameters.values())[4:]  # after self, c1, c2, n
    values = {"c2": args[0] if args else None, **{p.name: p.default for p in params}}
    values.update(zip([p.name for p in params], args[1:]))
    return values


def drop_ins() -> list[str]:
    """Every 'Module -> Block' swap ``replace`` knows (for its error message)."""
    from . import registry as r

    olds = ("Conv", "C2f", "C3k2", "Concat", "Upsample")
    out = [f"{o} -> {n}" for n, s in r.BLOCKS.items() for o in olds if drop_in(o, s)]
    return out + ["C2f -> C2f_<Block>", "C3k2 -> C3k2_<Block>"]


def replace(doc: ModelYaml, layers: list[int], block: str) -> tuple[str, list[str]]:
    """Swap each listed layer for the drop-in ``block``; returns (new text, what changed). ``block`` may be a
    channel-preserving block's name with ``<host>_`` left out ("CBAM" for a C2f row: C2f_CBAM) when ``composite``."""
    spec = _block(block)
    layers = _check_layers(doc, layers, "layer")
    widths = None
    lines, changes = list(doc.lines), []
    for i in layers:
        row = doc.rows[i]
        old = row.module.split(".")[-1]
        how = drop_in(old, spec)
        if how is None:
            raise YamlEditError(f"layer {i} is {old}; no drop-in {old} -> {spec.name} (known: {', '.join(drop_ins())})")
        args = list(row.args)
        if spec.name == "SPDConv":
            stride = args[2] if len(args) > 2 else 1
            if not isinstance(stride, int) or stride < 2:
                raise YamlEditError(f"layer {i} is a stride-{stride} Conv; SPDConv replaces strided convs")
        if how == "c3k2":
            v = _c3k2_values(args)
            new_args = f"[{_fmt_arg(v['c2'])}, {v['shortcut']}, {v['g']}, {v['e']}]"
        elif how == "aff":
            if not isinstance(row.f, list) or len(row.f) != 2:
                raise YamlEditError(f"layer {i} concatenates {row.f!r}; {spec.name} fuses exactly two inputs")
            widths = widths or probe(doc)
            a, b = (widths[x][0] for x in doc.sources(row))
            new_args = "[]" if a == b else f"[{b}]"
        elif how == "concat":  # Concat's [1] is its dimension: a weighted concat takes its own arguments
            new_args = "[]"
        elif how == "upsample":
            scale = args[1] if len(args) > 1 else 2
            new_args = "[]" if scale == 2 else f"[{{scale: {scale}}}]"
        else:
            new_args = _row_args_text(row)
        lines[row.line] = row.text(module=spec.name, args_text=new_args)
        changes.append(f"layer {i}: {old} {_row_args_text(row)} -> {spec.name} {new_args}")
    text = "".join(lines)
    if any(doc.rows[i].module.split(".")[-1] in NON_LEGACY_HEAD for i in layers):
        text = _keep_head(text)  # where no row is left that keeps it so
    return text, changes


# Rows whose presence makes Ultralytics (8.4) build the head in its non-legacy form (YOLO11/12/26, YOLOv10)
NON_LEGACY_HEAD = {"C3k2", "A2C2f", "C2fCIB"}


def _keep_head(text: str) -> str:
    """``legacy: false`` before ``backbone:``: the head stays the base's when our blocks replaced the rows that
    cleared Ultralytics' legacy flag (read by the parser hook; older releases have no such flag and ignore it)."""
    left = {r.module.split(".")[-1] for r in ModelYaml(text).rows}
    if re.search(r"^legacy:", text, re.M) or left & NON_LEGACY_HEAD or any(m.startswith("C3k2_") for m in left):
        return text
    return re.sub(r"^backbone:", "legacy: false  # the head stays the base's (its C3k2 rows were replaced)\nbackbone:",
                  text, count=1, flags=re.M)


def composite(doc: ModelYaml, layers: list[int], block: str) -> tuple[str, list[str]]:
    """Swap each listed C2f / C3k2 row for its composite with ``block`` (``C2f_<block>`` / ``C3k2_<block>``), same
    args; returns (new text, what changed)."""
    text, changes = doc.text(), []
    for i in _check_layers(doc, layers, "layer"):
        row = ModelYaml(text, doc.source).rows[i]
        if row.module not in STAGE_MODULES:
            raise RoleError(f"layer {i} is {row.module}; composites replace {' or '.join(STAGE_MODULES)} rows")
        text, done = replace(ModelYaml(text, doc.source), [i], f"{row.module}_{block}")
        changes += done
    return text, changes


def weighted_fusion(doc: ModelYaml, block: str, info: list | None = None) -> tuple[str, list[str]]:
    """Make every two-input Concat of the neck a ``block`` row (a weighted fusion such as BiFPN_Concat), and give each
    bottom-up node at an intermediate level the backbone's output at its level as a third input (BiFPN's extra
    same-level edge): a Concat whose second input is a neck row and whose level has a backbone stage output."""
    info = info if info is not None else probe(doc)
    layers = resolve_roles(doc, ["neck-concats"], info)
    text, changes = replace(doc, layers, block)
    new = ModelYaml(text, doc.source)
    lines = list(new.lines)
    for i in layers:
        row = new.rows[i]
        srcs = new.sources(row)
        stride = info[i][1]
        try:
            stage = _stage_output(doc, info, stride.bit_length() - 1)
        except RoleError:
            continue
        if srcs[1] >= doc.n_backbone and stage not in srcs:
            lines[row.line] = row.text(f=[*row.f, stage])
            changes.append(f"layer {i}: the backbone's P{stride.bit_length() - 1}/{stride} output (layer {stage}) "
                           "added as a third input (BiFPN's same-level edge)")  # fmt: skip
    return "".join(lines), changes


def fuse_before_head(doc: ModelYaml, block: str, info: list | None = None) -> tuple[str, list[str]]:
    """Add one ``block`` row per head input, each fusing all of the head's inputs at that input's level
    (``[[P3, P4, P5], 1, ASFF, [c2, level]]``, c2 = that input's width), and make the head read them."""
    _block(block)
    head = doc.detect_row()
    src = doc.sources(head)
    if not isinstance(head.f, list) or len(src) != 3:
        raise RoleError(f"{block} fuses three pyramid levels, and the {head.module} head reads {len(src)} input(s)")
    info = info if info is not None else probe(doc)
    lines = list(doc.lines)
    new = []
    for k, i in enumerate(src):
        width, stride = info[i]
        level = f"P{stride.bit_length() - 1}/{stride}"
        what = "fuse " + ", ".join(f"P{info[j][1].bit_length() - 1}" for j in src) + f" at {level}" if k == 0 else f"fuse at {level}"
        new.append(f"{head.head}[{_fmt_from(src)}, 1, {block}, [{width}, {k}]] # {head.index + k} {what}\n")
    targets = list(range(head.index, head.index + len(src)))
    lines[head.line] = _renumber_comment(head.text(f=targets), head.index, head.index + len(src))
    lines[head.line : head.line] = new
    changes = [f"added {block} rows {targets[0]}-{targets[-1]} fusing layers {src}; the head (now layer "
               f"{head.index + len(src)}) reads them"]  # fmt: skip
    return "".join(lines), changes


def _row_args_text(row: Row) -> str:
    return _split_top(row.body[1:-1])[3].strip()


def add_identity_start(text: str) -> str:
    """Set ``identity_start: true`` at the top level (replacing an existing value)."""
    if re.search(r"(?m)^identity_start\s*:", text):
        return re.sub(r"(?m)^identity_start\s*:.*$", "identity_start: true # inserted blocks start as the identity", text)
    m = re.search(r"(?m)^nc\s*:.*\n", text)
    at = m.end() if m else 0
    return text[:at] + "identity_start: true # inserted blocks start as the identity (yolo_attn)\n" + text[at:]
