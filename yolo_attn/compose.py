"""Composed configs: a block placed into a base model YAML, as text (``yolo_attn.names`` decides which names compose).

For a composed name such as ``yolo11s-seg-simam.yaml`` (``names.resolve``: no file, ready config or Ultralytics YAML
has the name, and its left part ``yolo11s-seg.yaml`` resolves), ``compose_text`` places the suffix's block in the
base's text with the YAML editor, at the roles of its registry placement (``registry.PLACEMENTS``), under a header
naming the base file, the Ultralytics release, the block and the layers it took. ``store`` writes it to a
content-addressed cache (``$YOLO_ATTN_CACHE``, default ``~/.cache/yolo_attn``) under the requested name, so
Ultralytics reads the scale letter from the name as for its own files, DDP workers and repeated runs read the same
file, and the checkpoint stores the model dict (a reload needs no name).

The same code writes the shipped ready configs (``ready_text``, called by scripts/make_ready_configs.py).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from . import registry, yamledit
from ._version import __version__
from .files import write_atomic
from .registry import Placement


class ComposeError(ValueError):
    """A composed name that cannot be built: the message says why and what the family supports."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"yolo_attn: {name}: {message}")


_probed: dict[str, list] = {}


def probe(doc: yamledit.ModelYaml) -> list:
    """yamledit.probe, remembered per YAML text for the process (composed names of one base share it)."""
    key = hashlib.sha256(doc.text().encode()).hexdigest()
    if key not in _probed:
        _probed[key] = yamledit.probe(doc)
    return _probed[key]


def cache_dir() -> Path:
    return Path(os.environ.get("YOLO_ATTN_CACHE") or Path.home() / ".cache" / "yolo_attn") / "composed"


# ----------------------------------------------------------------------------------------------------------------
# Placing a block
# ----------------------------------------------------------------------------------------------------------------
def apply(doc: yamledit.ModelYaml, p: Placement, info: list) -> tuple[str, list[int]]:
    """The YAML text with ``p``'s steps applied in turn, and the base layers they used."""
    used: list[int] = []
    for k, step in enumerate(p.steps):
        text, layers = _apply_step(doc, step, info)
        used += layers
        if text != doc.text():
            doc = yamledit.ModelYaml(text, doc.source)
            if k + 1 < len(p.steps):  # the next step resolves its roles on the edited model
                info = probe(doc)
    return doc.text(), used


def _apply_step(doc: yamledit.ModelYaml, step, info: list) -> tuple[str, list[int]]:
    layers = yamledit.resolve_roles(doc, list(step.roles), info)
    if step.edit == "insert":
        text = doc.text()
        for i, args in sorted(zip(layers, step.args or ["[]"] * len(layers)), reverse=True):  # from the end
            text, _ = yamledit.insert(yamledit.ModelYaml(text, doc.source), step.block, [i], args)
        notes = iter(yamledit.describe(doc, i, info) for i in sorted(layers))
        text = re.sub(r"after layer \d+ \(yolo-attn insert\)", lambda m: f"on {next(notes)}", text)
    elif step.edit == "replace":
        text, _ = yamledit.replace(doc, layers, step.block)
    elif step.edit == "composite":
        text, _ = yamledit.composite(doc, layers, step.block)
    elif step.edit == "fuse":
        text, _ = yamledit.fuse_before_head(doc, step.block, info)
    elif step.edit == "weighted-fusion":
        text, _ = yamledit.weighted_fusion(doc, step.block, info)
    else:
        raise ValueError(f"unknown placement edit {step.edit!r}")
    return text, layers


def _edits(p: Placement) -> str:
    """'insert', or 'replace VoVGSCSP then replace GSConv' for a placement of several steps."""
    if len(p.steps) == 1 and p.steps[0].block == p.block:
        return p.steps[0].edit
    return " then ".join(f"{s.edit} {s.block}" for s in p.steps)


def comment_lines(text: str, width: int = 118) -> list[str]:
    """``text`` as YAML comment lines of at most ``width`` characters (the config headers)."""
    import textwrap

    return ["# " + line for line in textwrap.wrap(text, width - 2)]


def _top_keys(text: str, use: str) -> list[str]:
    """The top-level keys before ``backbone:`` (nc, end2end, kpt_shape, legacy written by an edit, ...), comment
    lines dropped, ``scales`` rewritten as one row per scale."""
    data = yamledit.ModelYaml(text).data
    out, in_scales = [], False
    for line in text[: text.index("\nbackbone:") + 1].splitlines():
        if re.match(r"^scales\s*:", line):
            in_scales = True
            out.append(f"scales: # [depth, width, max_channels]; {use} select a row")
            out += [f"  {k}: [{v[0]:.2f}, {v[1]:.2f}, {v[2]}]" for k, v in data["scales"].items()]
        elif in_scales and (line.startswith((" ", "\t")) or not line.strip()):
            continue
        elif re.match(r"^[A-Za-z_]\w*\s*:", line):
            in_scales = False
            out.append(line)
    return out


def _body(text: str) -> str:
    body = text[text.index("\nbackbone:") + 1 :]
    return re.sub(r"(?m)^# YOLO.*(backbone|head)\n", "", body)


def ready_text(p: Placement, base_text: str, base_file: str, family: str, title: str) -> str:
    """A shipped ready config: ``model_yamls/<family>-<suffix>.yaml`` from Ultralytics' ``base_file``."""
    doc = yamledit.ModelYaml(base_text, base_file)
    info = probe(doc)
    text, layers = apply(doc, p, info)
    short = f"{family}n-{p.suffix}.yaml ... {family}x-{p.suffix}.yaml"
    head = [
        f"# yolo_attn ready config: {title} + {p.title}",
        f"# Use as {short} (the letter picks the row of `scales`).",
        "# Made by scripts/make_ready_configs.py from Ultralytics' own " + Path(base_file).name + ".",
        "#",
        *comment_lines("Where: " + p.where.format(layers=", ".join(map(str, layers)))),
        *comment_lines("Why: " + p.why),
        *comment_lines("Paper: " + p.paper),
        "",
        *_top_keys(text, f"'{family}n-{p.suffix}.yaml' ... '{family}x-{p.suffix}.yaml'"),
        "",
    ]
    return "\n".join(head) + "\n" + _body(text)


def composed_text(name: str, base_name: str, base_text: str, base_source: str, chain: list[str], p: Placement) -> str:
    """The YAML of a composed name: the header names the base file, the Ultralytics release, block and placement."""
    from ultralytics import __version__ as ul

    doc = yamledit.ModelYaml(base_text, base_source)
    info = probe(doc)
    try:
        text, layers = apply(doc, p, info)
    except yamledit.YamlEditError as e:
        raise ComposeError(name, f"{p.block} (suffix {p.suffix}) cannot be placed in {base_name}: {e}. "
                                 f"{supported_line(base_name, doc, info)}") from None  # fmt: skip
    stem = Path(name).name
    scaled = "scales" in doc.data
    head = [
        f"# yolo_attn composed config: {' + '.join(chain + [p.title])}",
        f"# Made by yolo_attn {__version__} for the name {stem} from {base_source} (Ultralytics {ul});",
        f"# `yolo-attn show {stem}` prints this file: copy it to edit it by hand."
        + (" The scale letter in the name picks the row of `scales`." if scaled else ""),
        "#",
        *comment_lines(f"Block {p.block} (suffix {p.suffix}), {_edits(p)} at roles {', '.join(p.roles)}: base layers "
                       f"{', '.join(map(str, layers))}."),  # fmt: skip
        *comment_lines("Where: " + p.where.format(layers=", ".join(map(str, layers)))),
        *comment_lines("Why: " + p.why),
        *comment_lines("Paper: " + p.paper),
        "",
        *(_top_keys(text, f"'{stem}' and its other scale letters") if scaled else _top_keys(text, "")),
        "",
    ]
    return "\n".join(head) + "\n" + _body(text)


KEY_SUFFIXES = {"sqr": ("sqr", "selective")}  # suffix -> the top-level YAML key and value it sets (registry.KEYS)


def key_text(name: str, base_name: str, base_text: str, base_source: str, chain: list[str], suffix: str) -> str:
    """A composed name whose suffix switches on a training strategy by a top-level key (``-sqr``: ``sqr: selective``,
    RT-DETR only); the rows stay the base's."""
    from ultralytics import __version__ as ul

    key, value = KEY_SUFFIXES[suffix]
    spec = registry.KEYS[key]
    doc = yamledit.ModelYaml(base_text, base_source)
    head = doc.detect_row()
    if key == "sqr" and head.module != "RTDETRDecoder":
        raise ComposeError(name, f"{spec.name} (suffix {suffix}) trains RT-DETR decoders, and the head of {base_name} "
                                 f"is {head.module}; use it on rtdetr-l, rtdetr-x, rtdetr-resnet50 or rtdetr-resnet101")  # fmt: skip
    body = re.sub(rf"(?m)^{key}\s*:.*\n", "", base_text)
    m = re.search(r"(?m)^nc\s*:.*\n", body)
    at = m.end() if m else body.index("backbone:")
    body = body[:at] + f"{key}: {value} # set by the -{suffix} suffix (yolo_attn)\n" + body[at:]
    top = [
        f"# yolo_attn composed config: {' + '.join(chain + [spec.name])}",
        f"# Made by yolo_attn {__version__} for the name {Path(name).name} from {base_source} (Ultralytics {ul}): the",
        f"# rows are the base's, the key `{key}: {value}` is added ({spec.paper}).",
        "",
    ]
    return "\n".join(top) + "\n" + body


# ----------------------------------------------------------------------------------------------------------------
# What a family supports
# ----------------------------------------------------------------------------------------------------------------
def support(doc: yamledit.ModelYaml, info: list | None = None) -> dict[str, str | None]:
    """suffix -> None where the block can be placed in this model, else the reason it cannot."""
    info = info if info is not None else probe(doc)
    out = {}
    for suffix, p in registry.PLACEMENTS.items():
        try:
            apply(doc, p, info)
            out[suffix] = None
        except yamledit.YamlEditError as e:
            out[suffix] = str(e)
    return out


def supported_line(base_name: str, doc: yamledit.ModelYaml, info: list) -> str:
    ok = [s for s, why in support(doc, info).items() if why is None]
    return f"Suffixes {Path(base_name).name} supports: {', '.join(ok) or 'none'}"


# ----------------------------------------------------------------------------------------------------------------
# A composed name's file
# ----------------------------------------------------------------------------------------------------------------
def compose_text(name: str, base_name: str, base_text: str, base_source: str, chain: list[str],
                 suffix: str) -> tuple[str, list[str]]:  # fmt: skip
    """(YAML text, its chain of titles) of the composed name ``name`` = ``base_name`` + ``-suffix``, the base's text
    given. Raises ComposeError for a suffix that is not a block's or cannot be placed in the base."""
    p = registry.placement(suffix)
    if p is None and suffix in KEY_SUFFIXES:
        return key_text(name, base_name, base_text, base_source, chain, suffix), chain + [registry.KEYS[KEY_SUFFIXES[suffix][0]].name]
    if p is None:
        doc = yamledit.ModelYaml(base_text, base_source)
        hint = registry.did_you_mean(suffix, list(registry.PLACEMENTS))
        raise ComposeError(name, f"no such file, and {suffix!r} is not a block suffix. {hint}"
                                 f"{supported_line(base_name, doc, probe(doc))}")  # fmt: skip
    return composed_text(name, base_name, base_text, base_source, chain, p), chain + [p.title]


def store(name: str, text: str) -> Path:
    """The cached file of a composed name: ``<cache>/<hash of text>/<name>``, written atomically once (a DDP worker
    never reads half a file; the name keeps the scale letter Ultralytics reads from it)."""
    out = cache_dir() / hashlib.sha256(text.encode()).hexdigest()[:16] / name
    if not out.is_file() or out.read_text(encoding="utf-8") != text:
        write_atomic(out, text)
    return out
