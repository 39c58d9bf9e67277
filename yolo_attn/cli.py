"""The ``yolo-attn`` command: list blocks, inspect a model, insert or replace blocks in a model YAML.

    yolo-attn list [--json] | --families [--markdown|--json]
    yolo-attn show NAME
    yolo-attn check MODEL.yaml [--canonical]
    yolo-attn info MODEL [--imgsz 640] [--base BASE] [--json]
    yolo-attn insert BASE BLOCK (--after L1,L2 | --at ROLE,...) [--args "[...]"] (-o OUT | --in-place) [--identity-start]
    yolo-attn replace BASE --layers L1,L2 --with BLOCK (-o OUT | --in-place)
    yolo-attn ablate CONFIG [CONFIG ...] --data DATA.yaml [--seeds 3] [--epochs 10] [--pretrained PT --identity-start]
                     [--control auto|none|CONFIG] [--out DIR] [--backend local|ray] [--workers N] [--dry-run]
                     [key=value ...]
    yolo-attn viz MODEL IMAGE [--imgsz 640] [--out DIR]

Errors print one line and exit with status 2 (set YOLO_ATTN_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from . import compose, names, yamledit
from .registry import BLOCKS, KEYS


class CliError(Exception):
    """An error to report as one line."""


def ready_configs() -> dict[str, list[str]]:
    """Block name -> the shipped ready configs that use it."""
    out: dict[str, list[str]] = {name: [] for name in [*BLOCKS, *(k.name for k in KEYS.values())]}
    for path in sorted(names.MODEL_YAMLS.glob("*.yaml")):
        d = yaml.safe_load(path.read_text())
        used = {row[2] for row in d["backbone"] + d["head"]} | {k.name for k in KEYS.values() if d.get(k.key)}
        for name in used & set(out):
            out[name].append(path.name)
        if "C2f_DCN" in used:  # DCN is used through C2f_DCN
            out["DCN"].append(path.name)
    return out


def resolve(name: str) -> names.Config:
    """The config a name means, as `yolo train model=NAME` reads it (names.resolve), or a one-line CliError."""
    try:
        return names.require(name)
    except (compose.ComposeError, names.ConfigNameError) as e:
        raise CliError(str(e).removeprefix("yolo_attn: ")) from None


def cmd_check(args) -> int:
    from . import check

    resolve(args.model)  # a name nothing resolves: one line
    report = check.check(args.model)
    if args.canonical and not report.refused:
        print(check.canonical_yaml(report), end="")
    else:
        print("\n".join(check.render(report)))
    if report.refused:
        print(f"yolo-attn: error: {args.model}: " + ("the model does not build" if report.failure else
              f"{sum(bool(r.refusals) for r in report.rows)} row(s) refused") + " (see above)", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def cmd_show(args) -> None:
    print(resolve(args.name).text(), end="")


def cmd_families(args) -> None:
    from . import registry

    table = names.family_table(progress=True)
    if args.json:
        print(json.dumps(table, indent=2))
        return
    suffixes = list(registry.PLACEMENTS)
    if args.markdown:
        print("| family | " + " | ".join(suffixes) + " |")
        print("|---|" + "---|" * len(suffixes))
        for stem, row in table.items():
            print(f"| {stem} | " + " | ".join("✓" if row[s] is None else "–" for s in suffixes) + " |")
        return
    for stem, row in table.items():
        ok = [s for s in suffixes if row[s] is None]
        print(f"{stem:<20} {len(ok):>2}/{len(suffixes)}  {', '.join(ok)}")
        for s in suffixes:
            if row[s] is not None:
                print(f"{'':<25} no {s}: {row[s]}")


def cmd_list(args) -> None:
    if args.families:
        return cmd_families(args)
    from .registry import aliases_of

    configs = ready_configs()
    rows = [
        {
            "name": spec.name,
            "kind": spec.kind,
            "paper": spec.paper,
            "yaml_args": spec.yaml_args,
            "example": spec.example,
            "class": f"{spec.cls.__module__}.{spec.cls.__name__}",
            "ready_configs": configs[spec.name],
            "aliases": aliases_of(spec.name),
            "composites": [f"C2f_{spec.name}", f"C3k2_{spec.name}"] if spec.preserves_width else [],
        }
        for spec in BLOCKS.values()
    ] + [
        {
            "name": k.name,
            "kind": k.kind,
            "paper": k.paper,
            "yaml_args": f"{k.values} (top-level key {k.key}:)",
            "example": k.example,
            "class": f"{k.cls.__module__}.{k.cls.__name__}",
            "ready_configs": configs[k.name],
            "aliases": [],
            "composites": [],
        }
        for k in KEYS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['name']:<9} {r['kind']:<9} {r['paper']}")
        what, args_ = ("YAML key", "values") if r["kind"] == "training" else ("YAML row", "args")
        print(f"{'':<19} {what}: {r['example']}   {args_} {r['yaml_args']}")
        print(f"{'':<19} ready configs: {', '.join(r['ready_configs']) or '-'}")
        if r["aliases"]:
            print(f"{'':<19} community names: {', '.join(r['aliases'])}")
        if r["composites"]:
            print(f"{'':<19} in C2f / C3k2 bottlenecks: {', '.join(r['composites'])}")


def _load_model(spec: str):
    """(model, its config name) from a YAML (path or name, composed names included) or a checkpoint: for a YAML, the
    model `yolo train model=SPEC` builds (its task's model class)."""
    from .checkpoints import load_checkpoint

    if spec.endswith(".pt"):
        if not Path(spec).is_file():
            raise CliError(f"no checkpoint {spec!r}")
        model, _ = load_checkpoint(spec)
        return model.float().eval(), model.yaml.get("yaml_file", "")
    if not spec.endswith((".yaml", ".yml")):
        raise CliError(f"MODEL must be a .yaml config or a .pt checkpoint, got {spec!r}")
    resolve(spec)
    return names.build(spec).eval(), spec


def cmd_info(args) -> None:
    from ultralytics.utils.torch_utils import get_flops

    from . import transfer

    model, yaml_file = _load_model(args.model)

    def summary(m):
        return {
            "layers": len(m.model),
            "parameters": sum(p.numel() for p in m.parameters()),
            "gflops": round(get_flops(m, args.imgsz), 3),
        }

    info = {"model": args.model, "yaml_file": yaml_file, "imgsz": args.imgsz, **summary(model)}
    info["table"] = [
        {"index": m.i, "from": m.f, "module": type(m).__name__, "parameters": sum(p.numel() for p in m.parameters())}
        for m in model.model
    ]
    base_name = args.base or names.base_of(yaml_file)
    if base_name:
        resolve(base_name)
        base = names.build(base_name).eval()
        if base.yaml.get("nc") != model.yaml.get("nc"):  # a checkpoint trained on another dataset: the base's head too
            base = type(base)(base.yaml, nc=model.yaml.get("nc"), verbose=False).eval()
        p = transfer.plan(base, model)
        b = summary(base)
        swapped = [
            {"layer": t, "was": type(base.model[s]).__name__, "now": type(model.model[t]).__name__}
            for s, t in sorted(p.layer_map.items())
            if type(base.model[s]) is not type(model.model[t])
        ]
        placed = set(p.layer_map.values())
        info["base"] = {
            "config": base_name,
            **b,
            "added_layers": [{"layer": t, "module": type(model.model[t]).__name__} for t in range(len(model.model))
                             if t not in placed],
            "replaced_layers": swapped,
            "removed_layers": [{"layer": s, "module": type(base.model[s]).__name__} for s in range(len(base.model))
                               if s not in p.layer_map],
            "parameters_delta": info["parameters"] - b["parameters"],
            "gflops_delta": round(info["gflops"] - b["gflops"], 3),
        }  # fmt: skip
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{args.model}: {info['layers']} layers, {info['parameters']:,} parameters, "
          f"{info['gflops']} GFLOPs at imgsz {args.imgsz}")  # fmt: skip
    print(f"{'':>3} {'from':>14} {'params':>10}  module")
    for r in info["table"]:
        print(f"{r['index']:>3} {str(r['from']):>14} {r['parameters']:>10,}  {r['module']}")
    if "base" in info:
        b = info["base"]
        print(f"against {b['config']}: {b['parameters_delta']:+,} parameters, {b['gflops_delta']:+} GFLOPs")
        for a in b["added_layers"]:
            print(f"  + layer {a['layer']}: {a['module']}")
        for r in b["replaced_layers"]:
            print(f"  ~ layer {r['layer']}: {r['was']} -> {r['now']}")
        for r in b["removed_layers"]:
            print(f"  - base layer {r['layer']}: {r['module']}")
    else:
        print("no base family config to compare with (give one with --base)")


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"{what} must be comma-separated layer indices such as 4,6,8, got {text!r}") from None


def _edit(args, edit) -> None:
    config = resolve(args.base)
    src = config.path
    out = src if args.in_place else Path(args.output) if args.output else None
    if out is None:
        raise CliError("give the output file with -o OUT.yaml (or --in-place to overwrite the input)")
    if args.in_place:
        if config.kind != "file" or "site-packages" in src.resolve().parts:
            what = KIND_WORDS.get(config.kind, "an installed file")
            raise CliError(f"refusing to edit {args.base} in place: it is {what} ({src}); write a copy with -o")
    elif out.resolve() == src.resolve():
        raise CliError(f"-o {out} is the input file; use --in-place to overwrite it")
    doc = yamledit.ModelYaml.load(src)
    text, changes = edit(doc)
    if getattr(args, "identity_start", False):
        text = yamledit.add_identity_start(text)
        changes.append("identity_start: true (inserted blocks start as the identity)")
    text = f"# Made by: yolo-attn {' '.join(args.argv)}\n" + text
    _check_builds(text, out)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    for c in changes:
        print(f"  {c}")


KIND_WORDS = {"ready": "a shipped ready config", "ultralytics": "an Ultralytics model YAML",
              "composed": "a composed config in the cache"}  # fmt: skip


def _check_builds(text: str, out: Path) -> None:
    """The edited YAML must build (at its first scale) before it is written."""
    from ultralytics.nn.tasks import DetectionModel

    d = yaml.safe_load(text)
    if d.get("scales"):
        d["scale"] = next(iter(d["scales"]))
    try:
        DetectionModel(d, verbose=False)
    except Exception as e:
        raise CliError(f"the edited YAML does not build, nothing written to {out}: {e}") from None


def cmd_insert(args) -> None:
    if bool(args.after) == bool(args.at):
        raise CliError("give the positions with exactly one of --after L1,L2,... or --at ROLE,...")

    def edit(doc):
        after = _int_list(args.after, "--after") if args.after else yamledit.resolve_roles(doc, args.at.split(","))
        return yamledit.insert(doc, args.block, after, args.args)

    _edit(args, edit)


def cmd_replace(args) -> None:
    _edit(args, lambda doc: yamledit.replace(doc, _int_list(args.layers, "--layers"), args.block))


def cmd_ablate(args) -> int:
    from . import ablate

    configs, extra = ablate.split_args(args.configs)
    notes: list[str] = []
    entries = ablate.plan(configs, args.base, args.control, args.pretrained, args.control_pretrained,
                          args.identity_start, say=notes.append)  # fmt: skip
    opt = ablate.Options(data=args.data, seeds=args.seeds, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                         fraction=args.fraction, pretrained=args.pretrained, control_pretrained=args.control_pretrained,
                         identity_start=args.identity_start, out=args.out, backend=args.backend, workers=args.workers,
                         ray_address=args.ray_address, device=args.device, extra=extra, storage=args.storage,
                         retries=args.retries)  # fmt: skip
    if args.dry_run:
        lines = ablate.dry_run(ablate.prepare(entries, opt))
        print("\n".join(lines[:2] + notes + lines[2:]))
        return 0
    for note in notes:
        print(f"ablate: {note}", file=sys.stderr)
    summary = ablate.ablate(entries, opt)
    out = Path(args.out)
    print((out / "ablation.md").read_text())
    print(f"wrote {out / 'ablation.md'}, ablation.csv, ablation.png; one record per run in {out / 'runs'}")
    if summary.get("interrupted"):
        print("interrupted: rerun the same command to finish the remaining runs", file=sys.stderr)
        return 130
    failed = {r["config"]: r for r in summary["rows"] if r["failed"]}
    if failed:
        print(f"yolo-attn: error: {sum(r['failed'] for r in failed.values())} run(s) of {len(failed)} config(s) failed "
              f"(records in {out / 'runs'}): " + "; ".join(f"{c}: {r['errors'][0]}" for c, r in failed.items()),
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


BENCH_MAP_RETIRED = ("bench-map was retired: `yolo-attn ablate CONFIG [CONFIG ...] --data DATA.yaml` trains each config "
                   "with several seeds against the base and a capacity control (see yolo-attn ablate --help)")


def cmd_viz(args) -> None:
    from . import viz

    if not Path(args.image).is_file():
        raise CliError(f"no image {args.image!r}")
    model, _ = _load_model(args.model)
    written = viz.visualize(model, args.image, args.out, args.imgsz)
    print(f"wrote {len(written) - 1} attention maps and {written[-1]}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="yolo-attn", description="yolo_attn: blocks from the literature for YOLO YAMLs")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="every registered block, its paper, YAML arguments and ready configs")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--families", action="store_true",
                   help="which config suffixes each Ultralytics model family supports (composed names)")
    s.add_argument("--markdown", action="store_true", help="with --families: a Markdown table")
    s.set_defaults(run=cmd_list)

    s = sub.add_parser("check", help="how each row of a model YAML is read (community names and conventions), and "
                       "the YAML rewritten in yolo_attn's dialect")  # fmt: skip
    s.add_argument("model", help="a model YAML (path or name)")
    s.add_argument("--canonical", action="store_true", help="print the whole YAML rewritten in yolo_attn's dialect "
                   "(it builds the identical model)")  # fmt: skip
    s.set_defaults(run=cmd_check)

    s = sub.add_parser("show", help="print the YAML a config name resolves to (a ready config or a composed name)")
    s.add_argument("name", help="a config name, e.g. yolo26n-cbam.yaml, yolo11s-seg-simam.yaml, rtdetr-l-ca.yaml")
    s.set_defaults(run=cmd_show)

    s = sub.add_parser("info", help="layers, parameters, GFLOPs of a YAML or checkpoint, and its difference to the base")
    s.add_argument("model", help="a model YAML (path or bare name) or a .pt checkpoint")
    s.add_argument("--imgsz", type=int, default=640, help="image size for GFLOPs (default 640)")
    s.add_argument("--base", help="base config to compare with (default: the family config, e.g. yolov8n.yaml)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(run=cmd_info)

    s = sub.add_parser("ablate", help="seeded, paired training runs of configs against the base and a capacity "
                       "control; records, table, forest plot", description="Train the base, the capacity control and "
                       "every CONFIG with the same recipe and seeds, and report the paired mAP50-95 difference to the "
                       "base with its 95% Student t interval. Rerun the same command to resume. Further words "
                       "key=value are Ultralytics train arguments (e.g. workers=2 lr0=0.002).")  # fmt: skip
    s.add_argument("configs", nargs="+", metavar="CONFIG", help="model YAMLs (files or shipped names), then any "
                   "Ultralytics key=value train arguments")  # fmt: skip
    s.add_argument("--data", required=True, help="dataset YAML")
    s.add_argument("--base", help="the base config (default: the plain model the configs build on, with their scale, "
                   "task and variant: yolo11n-seg.yaml for yolo11n-seg-cbam.yaml)")  # fmt: skip
    s.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 for every config (default 3)")
    s.add_argument("--epochs", type=int, default=10, help="default 10")
    s.add_argument("--imgsz", type=int, default=640, help="default 640")
    s.add_argument("--batch", type=int, default=16, help="default 16")
    s.add_argument("--fraction", type=float, default=1.0, help="fraction of the training set (default 1.0)")
    s.add_argument("--pretrained", help="the base's checkpoint: every config starts from it (structural transfer)")
    s.add_argument("--identity-start", action="store_true", help="inserted blocks start as the identity")
    s.add_argument("--control", default="auto", help="auto (the base's family at its next size: yolo11s-seg.yaml for "
                   "yolo11n-seg.yaml, rtdetr-x.yaml for rtdetr-l.yaml), none, or a config")  # fmt: skip
    s.add_argument("--control-pretrained", help="the control's own checkpoint, trained with the base's recipe "
                   "(needed with --pretrained and a control)")  # fmt: skip
    s.add_argument("--out", default="runs/ablate", help="output folder, also what a rerun resumes (runs/ablate)")
    s.add_argument("--backend", default="local", choices=("local", "ray"), help="local processes or Ray tasks")
    s.add_argument("--workers", type=int, default=1, help="parallel runs (local), CPUs of a local Ray (default 1)")
    s.add_argument("--ray-address", help="Ray cluster to connect to (default: start a local Ray)")
    s.add_argument("--device", default="cpu", help="cpu, or GPUs 0,1,... assigned round-robin to parallel runs")
    s.add_argument("--storage", help="where runs keep checkpoints and logs while they train: a folder every Ray node "
                   "mounts, so a run on a lost node continues on another (default: --out for local runs and a local Ray)")  # fmt: skip
    s.add_argument("--retries", type=int, default=3, help="Ray: reruns of a run whose node or worker is lost (default 3)")
    s.add_argument("--dry-run", action="store_true", help="print the plan (base, control, configs, seeds, each run's "
                   "train command, what a rerun skips) and train nothing")  # fmt: skip
    s.set_defaults(run=cmd_ablate)

    s = sub.add_parser("viz", help="every attention block's map overlaid on an image (PNGs and a grid)")
    s.add_argument("model", help="a model YAML (path or bare name) or a .pt checkpoint")
    s.add_argument("image", help="an image file")
    s.add_argument("--imgsz", type=int, default=640)
    s.add_argument("--out", default="runs/viz", help="output folder (default runs/viz)")
    s.set_defaults(run=cmd_viz)

    for name, fn, text in (("insert", cmd_insert, "insert a channel-preserving block after layers"),
                           ("replace", cmd_replace, "swap layers for a drop-in block")):  # fmt: skip
        s = sub.add_parser(name, help=text)
        s.add_argument("base", help="input YAML: a file, or a shipped config by bare name (yolov8.yaml, yolo11-ca.yaml)")
        if name == "insert":
            s.add_argument("block", help="block name, e.g. CBAM")
            s.add_argument("--after", help="comma-separated layer indices of the input YAML")
            s.add_argument("--at", help=f"comma-separated roles: {', '.join(yamledit.ROLES)}")
            s.add_argument("--args", default="[]", help="the block's YAML args, e.g. '[16, 7]' (default [])")
            s.add_argument("--identity-start", action="store_true", help="inserted blocks start as the identity")
        else:
            s.add_argument("--layers", required=True, help="comma-separated layer indices to swap")
            s.add_argument("--with", dest="block", required=True, help="the drop-in block, e.g. DCN, SPDConv, AFF")
        s.add_argument("-o", "--output", help="output YAML (the input is never overwritten without --in-place)")
        s.add_argument("--in-place", action="store_true", help="overwrite the input file")
        s.set_defaults(run=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench-map"]:
        print(f"yolo-attn: error: {BENCH_MAP_RETIRED}", file=sys.stderr)
        return 2
    p = parser()
    args, rest = p.parse_known_args(argv)
    if rest and args.command == "ablate" and all("=" in r and not r.startswith("-") for r in rest):
        args.configs += rest  # key=value train arguments after the options
    elif rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    args.argv = argv
    try:
        rc = args.run(args)
    except Exception as e:  # one line, not a traceback
        if os.environ.get("YOLO_ATTN_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        known = isinstance(e, (CliError, yamledit.YamlEditError, ValueError, FileNotFoundError))
        print(f"yolo-attn: error: {msg}" if known else f"yolo-attn: error: {type(e).__name__}: {msg}", file=sys.stderr)
        return 2
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
