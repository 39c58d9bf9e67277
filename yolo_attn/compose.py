"""Composed config names: ``<Ultralytics model stem><scale>-<suffix>.yaml`` built on the fly.

``yolo26n-cbam.yaml``, ``yolo11s-seg-simam.yaml``, ``rtdetr-l-ca.yaml``, ``yolov8n-p2-eca.yaml``: when no file of that
name exists (a file on disk and a shipped ready config always win), the name is split at its last ``-``; the left
part is resolved the same way (an Ultralytics model YAML, a ready config, or another composed name, so suffixes
chain: ``yolo11n-cbam-aff.yaml``), and the block of the suffix is placed in it with the YAML editor, at the roles of
its registry placement (``registry.PLACEMENTS``). The result is written to a content-addressed cache
(``$YOLO_ATTN_CACHE``, default ``~/.cache/yolo_attn``) under the requested name, so Ultralytics reads the scale
letter from the name as for its own files, DDP workers and repeated runs read the same file, and the checkpoint
stores the model dict (a reload needs no name).

The same code writes the shipped ready configs (``ready_text``, called by scripts/make_ready_configs.py).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Callable

from . import registry, yamledit
from .registry import Placement

NAME = re.compile(r"^(?P<base>.+)-(?P<suffix>[A-Za-z0-9_]+)\.ya?ml$")


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
    """The YAML text with ``p``'s block placed, and the base layers it used."""
    layers = yamledit.resolve_roles(doc, list(p.roles), info)
    if p.edit == "insert":
        text = doc.text()
        for i, args in sorted(zip(layers, p.args or ["[]"] * len(layers)), reverse=True):  # from the end
            text, _ = yamledit.insert(yamledit.ModelYaml(text, doc.source), p.block, [i], args)
        notes = iter(yamledit.describe(doc, i, info) for i in sorted(layers))
        text = re.sub(r"after layer \d+ \(yolo-attn insert\)", lambda m: f"on {next(notes)}", text)
    elif p.edit == "replace":
        text, _ = yamledit.replace(doc, layers, p.block)
    elif p.edit == "fuse":
        text, _ = yamledit.fuse_before_head(doc, p.block, info)
    else:
        raise ValueError(f"unknown placement edit {p.edit!r}")
    return text, layers


def comment_lines(text: str, width: int = 118) -> list[str]:
    """``text`` as YAML comment lines of at most ``width`` characters (the config headers)."""
    import textwrap

    return ["# " + line for line in textwrap.wrap(text, width - 2)]


def _top_keys(base_text: str, use: str) -> list[str]:
    """The base's top-level keys before ``backbone:`` (nc, end2end, kpt_shape, ...), comments dropped, ``scales``
    rewritten as one row per scale."""
    data = yamledit.ModelYaml(base_text).data
    out, in_scales = [], False
    for line in base_text[: base_text.index("\nbackbone:") + 1].splitlines():
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
        *_top_keys(base_text, f"'{family}n-{p.suffix}.yaml' ... '{family}x-{p.suffix}.yaml'"),
        "",
    ]
    return "\n".join(head) + "\n" + _body(text)


def composed_text(name: str, base_name: str, base_text: str, base_source: str, chain: list[str], p: Placement) -> str:
    """The YAML of a composed name: the header names the base file, the Ultralytics release, block and placement."""
    from ultralytics import __version__ as ul

    from . import __version__

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
        *comment_lines(f"Block {p.block} (suffix {p.suffix}), {p.edit} at roles {', '.join(p.roles)}: base layers "
               f"{', '.join(map(str, layers))}."),  # fmt: skip
        *comment_lines("Where: " + p.where.format(layers=", ".join(map(str, layers)))),
        *comment_lines("Why: " + p.why),
        *comment_lines("Paper: " + p.paper),
        "",
        *(_top_keys(base_text, f"'{stem}' and its other scale letters") if scaled else _top_keys(base_text, "")),
        "",
    ]
    return "\n".join(head) + "\n" + _body(text)


KEY_SUFFIXES = {"sqr": ("sqr", "selective")}  # suffix -> the top-level YAML key and value it sets (registry.KEYS)


def key_text(name: str, base_name: str, base_text: str, base_source: str, chain: list[str], suffix: str) -> str:
    """A composed name whose suffix switches on a training strategy by a top-level key (``-sqr``: ``sqr: selective``,
    RT-DETR only); the rows stay the base's."""
    from ultralytics import __version__ as ul

    from . import __version__

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
# Resolving a name
# ----------------------------------------------------------------------------------------------------------------
Lookup = Callable[[str], "str | None"]  # a bare name -> path of an existing YAML (Ultralytics' or ours), or None


def unscaled(name: str) -> str:
    """yolo11n-seg.yaml -> yolo11-seg.yaml, the way Ultralytics' yaml_model_load finds its unified files."""
    return re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", name)


def source_of(name: str, lookup: Lookup) -> tuple[str, str, list[str]] | None:
    """(YAML text, where it came from, its chain of titles) for a bare name, or None when nothing resolves it.
    Raises ComposeError for a composed name that parses but cannot be built."""
    for candidate in dict.fromkeys((name, unscaled(name))):
        path = lookup(candidate)
        if path:
            return Path(path).read_text(encoding="utf-8"), Path(path).name, [Path(path).name]
    path = compose(name, lookup)
    return (Path(path).read_text(encoding="utf-8"), Path(path).name, _chain_of(Path(path))) if path else None


def _chain_of(path: Path) -> list[str]:
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    return first.split(": ", 1)[1].split(" + ") if first.startswith("# yolo_attn composed config: ") else [path.name]


def compose(name: str, lookup: Lookup) -> str | None:
    """Path of the cached YAML for a composed name; None when ``name`` is not one (no known base to its left)."""
    name = str(name)
    m = NAME.match(name)
    if not m or os.path.basename(name) != name:
        return None
    base_name, suffix = m.group("base") + ".yaml", m.group("suffix")
    base = source_of(base_name, lookup)
    if base is None:
        return None
    base_text, base_source, chain = base
    p = registry.placement(suffix)
    if p is None and suffix in KEY_SUFFIXES:
        text = key_text(name, base_name, base_text, base_source, chain, suffix)
    elif p is None:
        doc = yamledit.ModelYaml(base_text, base_source)
        close = registry.suggest(suffix, list(registry.PLACEMENTS))
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ComposeError(name, f"no such file, and {suffix!r} is not a block suffix. {hint}"
                                 f"{supported_line(base_name, doc, probe(doc))}")  # fmt: skip
    else:
        text = composed_text(name, base_name, base_text, base_source, chain, p)
    out = cache_dir() / hashlib.sha256(text.encode()).hexdigest()[:16] / name
    if not out.is_file() or out.read_text(encoding="utf-8") != text:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)  # atomic: a DDP worker never reads half a file
    return str(out)


# ----------------------------------------------------------------------------------------------------------------
# Families
# ----------------------------------------------------------------------------------------------------------------
FAMILY = re.compile(r"^(yolov8(-p2|-p6)?|yolov9[tsmce]|yolov10[nsmblx]|yolo11|yolo12|yolo26(-p2|-p6)?|rtdetr-(l|x|resnet50|"
                    r"resnet101))(-seg|-pose|-obb|-cls)?(-p6)?$")  # fmt: skip


def families() -> dict[str, Path]:
    """The model YAMLs of the installed Ultralytics that composed names build on: stem -> path."""
    import ultralytics

    root = Path(ultralytics.__file__).parent / "cfg" / "models"
    return {p.stem: p for p in sorted(root.rglob("*.yaml")) if FAMILY.match(p.stem)}


def family_table() -> dict[str, dict[str, str | None]]:
    """stem -> (suffix -> None where it places, else why not), for every family of ``families()``."""
    out = {}
    for stem, path in families().items():
        doc = yamledit.ModelYaml(path.read_text(encoding="utf-8"), path.name)
        try:
            out[stem] = support(doc)
        except Exception as e:  # a YAML this release cannot build at all (a newer module)
            out[stem] = {s: f"the base does not build: {e}" for s in registry.PLACEMENTS}
    return out
