"""Config names: the one place that says which model YAML a name means.

A config name is ``<model><scale>[-<variant>...][-<suffix>...].yaml``:

- ``<model>``: an Ultralytics model stem (``yolov8``, ``yolo11``, ``yolo26``, ``yolov9``, ``rtdetr-l``, ...);
- ``<scale>``: a letter of the unified files' ``scales`` (n, s, m, l, x), which Ultralytics reads from the name;
- ``<variant>``: a task or head variant Ultralytics ships (``-seg``, ``-pose``, ``-obb``, ``-cls``, ``-p2``, ``-p6``);
- ``<suffix>``: a yolo_attn block suffix (``registry.PLACEMENTS``, ``-sqr``, the ready ``-cfnet``); suffixes chain:
  ``yolo11n-cbam-aff.yaml``.

``resolve(name)`` finds the file, first match wins:

1. a file of that name on disk;
2. a ready config shipped in ``model_yamls/``;
3. an Ultralytics model YAML (1-3 by the name, then by its unified name: ``yolov8n-ca.yaml`` -> ``yolov8-ca.yaml``);
4. a composed config: the name split at its last ``-``, the left part resolved the same way, the suffix's block
   placed by ``yolo_attn.compose`` and the result written to the composed-config cache under the name.

Ultralytics' YAML lookup (``patch``'s ``check_yaml`` hook), every ``yolo-attn`` command and ``ablate`` call it.
``base_of`` (the plain model a config builds on, with its task and variant) and ``next_size`` (the family's next
size, the capacity control of an ablation) complete the grammar; nothing else in the package parses names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from . import compose, registry

MODEL_YAMLS = Path(__file__).with_name("model_yamls")
if not MODEL_YAMLS.is_dir():  # running from a source checkout: configs sit at the top of the repository
    MODEL_YAMLS = Path(__file__).resolve().parents[1] / "model_yamls"

SCALES = "nsmlx"  # the scale letters of Ultralytics' unified YAMLs (yaml_model_load's unified-name rule)
SIZE_ORDER = "ntsmbclex"  # every size letter of Ultralytics' families, smallest first (v9: t s m c e; v10: n s m b l x)
SIZE_LADDERS = (("rtdetr-l", "rtdetr-x"), ("rtdetr-resnet50", "rtdetr-resnet101"))  # families without a size letter
# The Ultralytics model stems composed names build on (``yolo-attn list --families``)
FAMILY = re.compile(r"^(yolov8(-p2|-p6)?|yolov9[tsmce]|yolov10[nsmblx]|yolo11|yolo12|yolo26(-p2|-p6)?|rtdetr-(l|x|resnet50|"
                    r"resnet101))(-seg|-pose|-obb|-cls)?(-p6)?$")  # fmt: skip
_SPLIT = re.compile(r"^(?P<base>.+)-(?P<suffix>[A-Za-z0-9_]+)(?P<ext>\.ya?ml)$")
_SIZED = re.compile(r"^(?P<pre>.*?\d+)(?P<size>[a-z])(?P<rest>(?:-[\w-]+)?\.ya?ml)$")

Lookup = Callable[[str], "str | None"]  # a bare name -> path of an Ultralytics model YAML (or a file on disk), or None


class ConfigNameError(FileNotFoundError):
    """No model YAML has this name; a FileNotFoundError, as Ultralytics raises for one."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"yolo_attn: no model YAML named {name!r}: not a file, not a yolo_attn ready config, not an "
                         "Ultralytics model YAML, and not <model>-<suffix>.yaml on one of those (yolo-attn list shows "
                         "the suffixes)")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Grammar
# ----------------------------------------------------------------------------------------------------------------
def unscaled(name: str) -> str:
    """``yolo11n-seg.yaml`` -> ``yolo11-seg.yaml``: the unified name Ultralytics' yaml_model_load tries."""
    return re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", str(name))


def scale_of(name: str) -> str | None:
    """The scale letter Ultralytics reads from a name (its guess_model_scale rule), or None."""
    m = re.search(r"yolo(e-)?[v]?\d+([nslmx])", Path(name).stem)
    return m.group(2) if m else None


def with_scale(name: str, scale: str) -> str:
    """A unified name at a scale: ``yolo11-seg.yaml``, ``s`` -> ``yolo11s-seg.yaml`` (``yolov8-ca.yaml`` likewise)."""
    return re.sub(r"^(yolo(?:e-)?v?\d+)", rf"\g<1>{scale}", str(name), count=1)


def split(name: str) -> tuple[str, str] | None:
    """``yolo11n-seg-cbam.yaml`` -> (``yolo11n-seg.yaml``, ``cbam``): the name before its last ``-`` and the part
    after it; None for a name without one."""
    m = _SPLIT.match(Path(name).name)
    return (m.group("base") + m.group("ext"), m.group("suffix")) if m else None


# ----------------------------------------------------------------------------------------------------------------
# Resolving
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """A resolved config name: the file it means and where that came from."""

    name: str  # as asked
    path: Path
    kind: str  # file | ready | ultralytics | composed
    chain: tuple[str, ...]  # what it is made of: the base file's name, then each block's title (composed)

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def ready_config(name: str) -> Path | None:
    """The shipped ready config of a bare file name (``yolov8-ca.yaml``), unless a file of that name exists here."""
    s = str(name)
    if not s or os.path.exists(s) or os.path.basename(s) != s:
        return None
    path = MODEL_YAMLS / s
    return path if path.is_file() else None


def ultralytics_yaml(name: str) -> str | None:
    """Ultralytics' own lookup of a model YAML (a file as given, else one shipped in its package), or None."""
    from ultralytics.utils.checks import check_yaml

    return check_yaml(name, hard=False) or None


def _chain_of(path: Path) -> tuple[str, ...]:
    with open(path, encoding="utf-8") as fh:
        first = fh.readline().rstrip("\n")
    head = "# yolo_attn composed config: "
    return tuple(first.removeprefix(head).split(" + ")) if first.startswith(head) else (path.name,)


def find(name: str, ultralytics: Lookup | None = None) -> Config | None:
    """Steps 1-3 of ``resolve``: a file, a ready config or an Ultralytics YAML of the name or its unified name."""
    name, look = str(name), ultralytics or ultralytics_yaml
    for candidate in dict.fromkeys((name, unscaled(name))):
        if os.path.isfile(candidate):
            return Config(name, Path(candidate), "file", _chain_of(Path(candidate)))
        ready = ready_config(candidate)
        if ready:
            return Config(name, ready, "ready", (ready.name,))
        found = look(candidate)
        if found:
            return Config(name, Path(found), "ultralytics", _chain_of(Path(found)))
    return None


def resolve(name: str, ultralytics: Lookup | None = None) -> Config | None:
    """The config a name means (see the module docstring), or None when nothing has that name and it is not a
    composed name on a known base. Raises ``compose.ComposeError`` (one line) for a composed name whose base resolves
    but whose suffix is unknown or cannot be placed. ``ultralytics``: the Ultralytics lookup to use (the YAML hook
    passes the ``check_yaml`` it wraps)."""
    name = str(name)
    found = find(name, ultralytics)
    if found or os.path.basename(name) != name:
        return found
    parts = split(name)
    if parts is None:
        return None
    base_name, suffix = parts
    base = resolve(base_name, ultralytics)
    if base is None:
        return None
    text, chain = compose.compose_text(name, base_name, base.text(), base.path.name, list(base.chain), suffix)
    return Config(name, compose.store(name, text), "composed", tuple(chain))


def require(name: str) -> Config:
    """``resolve``, raising ConfigNameError where nothing has the name."""
    found = resolve(name)
    if found is None:
        raise ConfigNameError(str(name))
    return found


# ----------------------------------------------------------------------------------------------------------------
# Bases and sizes
# ----------------------------------------------------------------------------------------------------------------
def base_of(name: str) -> str | None:
    """The plain Ultralytics model a config name builds on, with its scale, task and variant: trailing ``-parts`` are
    dropped until an Ultralytics model YAML has the name. ``yolo11n-seg-cbam.yaml`` -> ``yolo11n-seg.yaml``,
    ``yolov8n-p2-eca.yaml`` -> ``yolov8n-p2.yaml``, ``rtdetr-l-ca.yaml`` -> ``rtdetr-l.yaml``; None for a name that
    is already plain or that no Ultralytics model starts."""
    stem = Path(name).name
    while parts := split(stem):
        stem = parts[0]
        found = find(stem)
        if found is not None and found.kind in ("ultralytics", "file"):
            return stem
    return None


def _has_size(name: str) -> bool:
    """Whether Ultralytics has this size: its own file (yolov10b.yaml), or a unified file whose scales list it."""
    if ultralytics_yaml(name):
        return True
    unified = unscaled(name)
    path = ultralytics_yaml(unified) if unified != name else None
    if not path:
        return False
    scales = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("scales") or {}
    return scale_of(name) in scales


def next_size(name: str) -> str | None:
    """The next larger size of the same family, task and variant (``yolo11n-seg.yaml`` -> ``yolo11s-seg.yaml``,
    ``yolov9c.yaml`` -> ``yolov9e.yaml``, ``rtdetr-l.yaml`` -> ``rtdetr-x.yaml``); None at the largest size."""
    stem = Path(name).name
    for ladder in SIZE_LADDERS:
        for k, size in enumerate(ladder):
            rest = stem[len(size) :]
            if stem.startswith(size) and re.match(r"^(-[\w-]+)?\.ya?ml$", rest):
                return ladder[k + 1] + rest if k + 1 < len(ladder) else None
    m = _SIZED.match(stem)
    if not m or m.group("size") not in SIZE_ORDER:
        return None
    for letter in SIZE_ORDER[SIZE_ORDER.index(m.group("size")) + 1 :]:
        candidate = m.group("pre") + letter + m.group("rest")
        if _has_size(candidate):
            return candidate
    return None


def head_of(config: Config) -> str:
    """The module name of a config's last row (its head: Detect, Segment, RTDETRDecoder, ...)."""
    d = yaml.safe_load(config.text()) or {}
    rows = (d.get("backbone") or []) + (d.get("head") or [])
    return str(rows[-1][2]) if rows else ""


# ----------------------------------------------------------------------------------------------------------------
# Families
# ----------------------------------------------------------------------------------------------------------------
def families() -> dict[str, Path]:
    """The model YAMLs of the installed Ultralytics that composed names build on: stem -> path."""
    import ultralytics

    root = Path(ultralytics.__file__).parent / "cfg" / "models"
    return {p.stem: p for p in sorted(root.rglob("*.yaml")) if FAMILY.match(p.stem)}


def family_table(progress: bool = False) -> dict[str, dict[str, str | None]]:
    """stem -> (suffix -> None where it places, else why not), for every family of ``families()`` (``progress``: a
    tqdm bar on stderr; each family is probed once and every placement tried on it)."""
    from tqdm import tqdm

    from . import yamledit

    out = {}
    for stem, path in tqdm(families().items(), desc="families", unit="family", disable=not progress, leave=False):
        try:
            doc = yamledit.ModelYaml(path.read_text(encoding="utf-8"), path.name)
            out[stem] = compose.support(doc)
        except Exception as e:  # a YAML this release cannot build at all (a newer module)
            out[stem] = {s: f"the base does not build: {e}" for s in registry.PLACEMENTS}
    return out


def smallest(stem: str) -> str:
    """A family stem as a buildable name at its smallest scale: ``yolo11-seg`` -> ``yolo11n-seg.yaml`` (the first
    row of its ``scales``); stems with their size in the name (``yolov9c``, ``rtdetr-l``) stay as they are."""
    name = f"{stem}.yaml"
    path = families().get(stem)
    if scale_of(name) or path is None:  # yolov10n: the size is in the name already
        return name
    scales = list((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("scales") or {})
    return with_scale(name, scales[0]) if scales and scale_of(with_scale(name, scales[0])) else name


def is_rtdetr(name: str) -> bool:
    """Whether the ``yolo`` command takes a model name for RT-DETR (its CLI's own rule: ``rtdetr`` in the name)."""
    return "rtdetr" in Path(str(name)).stem


def build(name: str, verbose: bool = False):
    """The model ``yolo train model=NAME`` builds: RT-DETR where ``is_rtdetr``, else YOLO, whose task (and so its
    model class) follows the YAML's head."""
    from ultralytics import RTDETR, YOLO

    return RTDETR(str(name)).model if is_rtdetr(name) else YOLO(str(name), verbose=verbose).model
