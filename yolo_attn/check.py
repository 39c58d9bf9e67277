"""``yolo-attn check``: what a model YAML means to yolo_attn, row by row, and the same YAML in our own dialect.

The model is built the way ``yolo train`` builds it (its task's model class), at every scale its ``scales`` lists
(a width written for one scale can read differently at another), while the parser hook records how each row
naming one of our blocks or a community alias was read (``dialects.read``). A refused row does not stop the build:
it is recorded and built with its block's defaults, so every row gets a verdict.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import yaml

from . import names, patch, yamledit
from .dialects import args_text


@dataclass
class RowReport:
    index: int
    written: str  # the row as written, [from, n, module, args]
    canonical: str = ""  # the row in our dialect ('' when refused)
    block: str = ""  # the block built, with every argument by name
    conversion: str = ""  # how a row of another dialect was read ('' for our dialect)
    refusals: dict = field(default_factory=dict)  # scale -> the one-line error


@dataclass
class Report:
    name: str
    scales: list
    rows: list[RowReport]
    failure: str = ""  # the model does not build for another reason (a module that is not ours, ...)
    text: str = ""  # the YAML as resolved

    @property
    def refused(self) -> bool:
        return bool(self.failure) or any(r.refusals for r in self.rows)


def _model_class(d: dict, name: str):
    from ultralytics.nn import tasks

    if names.is_rtdetr(name):
        return tasks.RTDETRDetectionModel
    return {"detect": tasks.DetectionModel, "segment": tasks.SegmentationModel, "pose": tasks.PoseModel,
            "obb": tasks.OBBModel, "classify": tasks.ClassificationModel}[tasks.guess_model_task(d)]  # fmt: skip


def check(name: str) -> Report:
    """Build ``name`` (a path or any config name) at each of its scales and report every row of ours."""
    config = names.require(name)
    text = config.text()
    d = yaml.safe_load(text) or {}
    scale = names.scale_of(name)
    scales = [scale] if scale and scale in (d.get("scales") or {}) else list(d.get("scales") or {}) or [None]
    rows: dict[int, RowReport] = {}
    failure = ""
    for s in scales:
        cfg = copy.deepcopy(d)
        if s is not None:
            cfg["scale"] = s
        with patch.recording() as rec:
            try:
                _model_class(cfg, name)(cfg, verbose=False)
            except Exception as e:  # one line: the first failure that is not one of our rows' refusals
                failure = failure or f"{'scale ' + s + ': ' if s else ''}{(str(e).strip().splitlines() or [type(e).__name__])[0]}"
        all_rows = (d.get("backbone") or []) + (d.get("head") or [])
        for layer, decision, error in rec.rows:
            r = rows.setdefault(layer.index, RowReport(layer.index, args_text(all_rows[layer.index])))
            if error is not None:
                r.refusals[s] = str(error).removeprefix("yolo_attn: ")
                continue
            if r.canonical and r.canonical != decision.canonical:
                r.refusals[s] = (f"reads as {decision.canonical} at scale {s} but as {r.canonical} at scale "
                                 f"{scales[0]}: write the row for every scale")  # fmt: skip
                continue
            r.canonical, r.conversion = decision.canonical, decision.conversion
            shown = {k: v for k, v in decision.values.items() if k != "block_args"}
            inner = decision.values.get("block_args")
            r.block = f"{decision.spec.name}({', '.join(f'{k}={v}' for k, v in shown.items())})" + (
                f" with {decision.spec.inner}({', '.join(f'{k}={v}' for k, v in inner.items())})"
                if decision.spec.inner else "")  # fmt: skip
    return Report(name, [s for s in scales if s], [rows[k] for k in sorted(rows)], failure, text)


def canonical_yaml(report: Report) -> str:
    """The YAML with every row of ours rewritten in our dialect (the same model); the rows of others untouched."""
    doc = yamledit.ModelYaml(report.text, report.name)
    lines = list(doc.lines)
    for r in report.rows:
        if r.canonical and r.canonical != r.written:
            row = doc.rows[r.index]
            f, n, module, args = yaml.safe_load(r.canonical)
            lines[row.line] = row.text(module=module, args_text=args_text(args))
    return "".join(lines)


def render(report: Report) -> list[str]:
    """The report as lines for the terminal."""
    scales = f" (scales {', '.join(report.scales)})" if report.scales else ""
    converted = sum(bool(r.conversion) for r in report.rows)
    refused = sum(bool(r.refusals) for r in report.rows)
    out = [f"{report.name}{scales}: {len(report.rows)} rows of yolo_attn blocks or community names; {converted} read "
           f"from another dialect, {refused} refused"]  # fmt: skip
    for r in report.rows:
        if r.refusals:
            for s, why in r.refusals.items():
                out.append(f"layer {r.index:<3} {r.written}  REFUSED{' at scale ' + s if s else ''}: {why}")
            continue
        out.append(f"layer {r.index:<3} {r.written}" + (f"  ->  {r.canonical}" if r.canonical != r.written else ""))
        out.append(f"{'':10}{r.block}" + (f"; {r.conversion.rsplit('; canonical row:', 1)[0]}" if r.conversion else ""))
    if report.failure:
        out.append(f"the model does not build: {report.failure}")
    return out
