"""The plan of an ablation: which configs train (base, capacity control, block configs), with which recipe.

The default base and control follow the configs' family, task and variant (``names.base_of``, ``names.next_size``):
``yolo11n-seg-cbam.yaml`` is compared with ``yolo11n-seg.yaml`` and ``yolo11s-seg.yaml``, ``rtdetr-l-ca.yaml`` with
``rtdetr-l.yaml`` and ``rtdetr-x.yaml``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .. import compose, names, yamledit

# Train arguments ablate sets itself (and the option that sets them, where there is one).
OWN_KEYS = {"model": "CONFIG", "data": "--data", "epochs": "--epochs", "imgsz": "--imgsz", "batch": "--batch",
            "fraction": "--fraction", "pretrained": "--pretrained", "device": "--device", "seed": "--seeds",
            "deterministic": None, "project": "--out", "name": None, "exist_ok": None, "resume": None}  # fmt: skip


class AblateError(ValueError):
    """A bad ablation request, reported as one line."""


@dataclass
class Entry:
    config: str  # as the user named it
    role: str  # base, control or block
    stem: str  # folder and file name of its runs
    pretrained: str | None = None
    yaml_text: str | None = None  # the YAML a run trains (identity start added); None when it does not resolve
    error: str | None = None  # why it does not resolve
    head: str = ""  # the module of its last row (Detect, Segment, ...), "" when it does not resolve


@dataclass
class Options:
    data: str
    seeds: int = 3
    epochs: int = 10
    imgsz: int = 640
    batch: int = 16
    fraction: float = 1.0
    pretrained: str | None = None
    control_pretrained: str | None = None
    identity_start: bool = False
    out: str = "runs/ablate"
    backend: str = "local"
    workers: int = 1
    ray_address: str | None = None
    device: str = "cpu"
    extra: list[str] = field(default_factory=list)
    storage: str | None = None  # where runs keep checkpoints and logs, a folder every Ray node sees (default --out)
    retries: int = 3  # Ray: reruns of a run whose node or worker was lost

    def check(self) -> None:
        if self.seeds < 1 or self.epochs < 1 or self.workers < 1:
            raise AblateError("--seeds, --epochs and --workers must be at least 1")
        if self.retries < 0:
            raise AblateError(f"--retries must be 0 or more, got {self.retries}")
        if not 0 < self.fraction <= 1:
            raise AblateError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.backend not in ("local", "ray"):
            raise AblateError(f"--backend must be local or ray, got {self.backend!r}")


@dataclass
class Recipe:
    data: str
    epochs: int
    imgsz: int
    batch: int
    fraction: float
    identity_start: bool
    pretrained_sha256: str | None
    control_pretrained_sha256: str | None
    extra: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def sha256_file(path: str | None) -> str | None:
    if not path:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_data(data: str, out: Path) -> tuple[Path, str]:
    """(path, text) of a data YAML Ultralytics reads the same from any directory: a relative ``path:`` is made
    absolute against the YAML's own folder, in a copy at ``out/work/<stem>.resolved.yaml`` (the caller writes it)."""
    src = Path(data)
    if not src.is_file():
        raise AblateError(f"--data: no data YAML at {data}")
    try:
        d = yaml.safe_load(src.read_text())
    except yaml.YAMLError as e:
        raise AblateError(f"--data {data}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict) or "val" not in d or "train" not in d:
        raise AblateError(f"--data {data}: expected a dataset YAML with 'train' and 'val' keys")
    root = Path(d.get("path") or ".")
    if not root.is_absolute():
        d["path"] = str((src.parent / root).resolve())
        return out / "work" / f"{src.stem}.resolved.yaml", yaml.safe_dump(d, sort_keys=False)
    return src.resolve(), src.read_text()


def split_args(items: list[str]) -> tuple[list[str], list[str]]:
    """Positional words -> (configs, Ultralytics key=value train arguments)."""
    configs, extra = [], []
    for it in items:
        if "=" in it and not it.endswith((".yaml", ".yml")):
            key = it.split("=", 1)[0].strip()
            if key in OWN_KEYS:
                opt = OWN_KEYS[key]
                raise AblateError(f"train argument {it!r}: ablate sets {key} itself" + (f"; use {opt}" if opt else ""))
            extra.append(it)
        else:
            configs.append(it)
    return configs, extra


def default_base(configs: list[str]) -> str:
    """The plain Ultralytics model all configs build on (same family, scale, task and variant)."""
    bases = {c: names.base_of(c) for c in configs}
    unknown = [c for c, b in bases.items() if b is None]
    if unknown:
        raise AblateError(f"cannot tell the base from the configs ({', '.join(unknown)}): no Ultralytics model YAML "
                          "starts the name (<model><scale>[-<task>]-<block>.yaml); give it with --base, e.g. --base "
                          "yolov8n.yaml")  # fmt: skip
    if len(set(bases.values())) > 1:
        got = ", ".join(f"{c} -> {b}" for c, b in bases.items())
        raise AblateError(f"the configs build on different base models ({got}): ablate one family, scale and task at a "
                          "time, or give --base")  # fmt: skip
    return next(iter(bases.values()))


def default_control(base: str) -> tuple[str | None, str]:
    """(the capacity control, a note): the base's family at its next size, or None where it has none."""
    ctrl = names.next_size(base)
    if ctrl is None:
        return None, f"control: none ({base} is the largest size its family has; give --control CONFIG for one)"
    return ctrl, ""


def entry_yaml(config: str, identity_start: bool) -> tuple[str | None, str | None, str]:
    """(YAML text a run trains, None, head module) or (None, why the config does not resolve, "")."""
    try:
        found = names.require(config)
        text = found.text()
    except (names.ConfigNameError, compose.ComposeError, OSError) as e:
        return None, str(e).removeprefix("yolo_attn: "), ""
    return (yamledit.add_identity_start(text) if identity_start else text), None, names.head_of(found)


def plan(configs, base=None, control="auto", pretrained=None, control_pretrained=None, identity_start=False,
         say=None) -> list[Entry]:  # fmt: skip
    """The entries of an ablation: base first, then the control, then the configs in the order given. ``say``
    receives one-line notes (a family without a larger size has no automatic control)."""
    if not configs:
        raise AblateError("give at least one CONFIG to compare with the base")
    for opt, path in (("--pretrained", pretrained), ("--control-pretrained", control_pretrained)):
        if path and not Path(path).is_file():
            raise AblateError(f"{opt}: no checkpoint at {path}")
    base = base or default_base(configs)
    entries = [Entry(base, "base", Path(base).stem, pretrained)]
    ctrl = control if control not in ("auto", "none", None, "") else None
    if control == "auto":
        ctrl, note = default_control(base)
        if note and say:
            say(note)
    if ctrl:
        if pretrained and not control_pretrained:
            raise AblateError(f"--pretrained starts every run from {Path(pretrained).name}, which is {base}'s; the "
                              f"control {ctrl} needs its own base weights trained with the same recipe: give "
                              "--control-pretrained CONTROL.pt, or --control none")  # fmt: skip
        entries.append(Entry(ctrl, "control", Path(ctrl).stem, control_pretrained or None))
    elif control_pretrained:
        raise AblateError("--control-pretrained is given but there is no control (--control none, or none found)")
    entries += [Entry(c, "block", Path(c).stem, pretrained) for c in configs]
    seen: dict[str, str] = {}
    for e in entries:
        if e.stem in seen:
            raise AblateError(f"{e.config} and {seen[e.stem]} would share the run folder runs/{e.stem}; each config "
                              "needs its own file name")  # fmt: skip
        seen[e.stem] = e.config
        e.yaml_text, e.error, e.head = entry_yaml(e.config, identity_start)
    heads = {e.config: e.head for e in entries if e.head}
    if len(set(heads.values())) > 1:  # a detector against a segmenter: not comparable
        got = ", ".join(f"{c}: {h}" for c, h in heads.items())
        raise AblateError(f"the configs have different heads ({got}); base, control and configs must share a task")
    return entries
