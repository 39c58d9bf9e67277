"""Which composed names build: every Ultralytics model family x every block suffix, built at the family's smallest
scale with the model class of its task.

    .venv/bin/python benchmarks/families.py [--out benchmarks/results]

For each family stem of yolo_attn.names.families() and each suffix, the name `<stem with its first scale
letter>-<suffix>.yaml` (names.smallest) is built the way `yolo train model=NAME` builds it (names.build). A cell is "ok" (built, the block is in
the model), "not placeable" (yolo_attn refuses the name in one line, with the reason) or "FAILED" (anything else: a
defect). Resumable: finished cells are kept in results/families.json and skipped on a rerun of the same
Ultralytics release. Writes results/families.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--report", action="store_true", help="only write families.md from the cells checked so far")
    args = ap.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    import ultralytics

    from yolo_attn import compose, names, registry

    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "families.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if state.get("ultralytics") != ultralytics.__version__:
        state = {"ultralytics": ultralytics.__version__, "cells": {}}
    cells = state["cells"]
    fams = names.families()
    t0 = time.time()
    for stem in ({} if args.report else fams):
        for suffix, p in registry.PLACEMENTS.items():
            key = f"{stem}:{suffix}"
            if key in cells:
                continue
            name = names.smallest(stem).replace(".yaml", f"-{suffix}.yaml")
            try:
                m = names.build(name)
                found = any(type(x).__name__ == p.block for x in m.modules())
                cells[key] = {"name": name, "result": "ok" if found else "FAILED", "why": "" if found else "block missing"}
            except compose.ComposeError as e:
                cells[key] = {"name": name, "result": "not placeable", "why": str(e).split(": ", 2)[-1]}
            except Exception as e:  # a defect: report it, keep going
                cells[key] = {"name": name, "result": "FAILED", "why": f"{type(e).__name__}: {e}"[:300]}
            state_file.write_text(json.dumps(state, indent=1))
        print(f"{stem}: {sum(cells[f'{stem}:{s}']['result'] == 'ok' for s in registry.PLACEMENTS)} built "
              f"({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
    suffixes = list(registry.PLACEMENTS)
    lines = [
        f"# Composed names: which build ({time.strftime('%Y-%m-%d')}, Ultralytics {ultralytics.__version__})",
        "",
        "Each family at its smallest scale, each block suffix, built with its task's model class. ✓ built with the "
        "block; – refused in one line (cannot be placed, reason below); ✗ FAILED.",
        "",
        "| family | " + " | ".join(suffixes) + " |",
        "|---|" + ":-:|" * len(suffixes),
    ]
    mark = {"ok": "✓", "not placeable": "–", "FAILED": "✗"}
    done = [stem for stem in fams if all(f"{stem}:{s}" in cells for s in suffixes)]
    for stem in done:
        lines.append(f"| {stem} | " + " | ".join(mark[cells[f'{stem}:{s}']['result']] for s in suffixes) + " |")
    if len(done) < len(fams):
        lines += ["", f"Not checked yet (rerun to resume): {', '.join(s for s in fams if s not in done)}."]
    refused = sorted({(s, re.sub(r" in \S+\.yaml: ", ": ", c["why"].split(". Suffixes")[0]))
                      for k, c in cells.items() for s in [k.split(":")[1]] if c["result"] == "not placeable"})  # fmt: skip
    failed = [(k, c["why"]) for k, c in cells.items() if c["result"] == "FAILED"]
    lines += ["", "## Why a cell is refused", ""] + [f"- {s}: {w}" for s, w in refused]
    lines += ["", f"## Failed ({len(failed)})", ""] + ([f"- {k}: {w}" for k, w in failed] or ["none"])
    (out / "families.md").write_text("\n".join(lines) + "\n")
    print(f"{len(failed)} failed; results/families.md written")


if __name__ == "__main__":
    main()
