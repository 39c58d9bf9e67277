"""The report of an ablation: ablation.csv, ablation.md and the forest plot ablation.png, from the records.

Numbers are the task's headline metric in points (0-100): mAP50-95 of boxes (detect, OBB, RT-DETR), of masks
(segment), of keypoints (pose), or top-1 accuracy (classify), with mAP50 / top-5 beside it.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict
from pathlib import Path

from ..files import write_atomic
from .planning import Entry, Recipe
from .records import load_record
from .stats import mean, paired, seeds_to_resolve, std

COLUMNS = ["config", "role", "runs", "failed", "metric", "mean", "std", "mean2", "std2", "delta", "ci_low", "ci_high",
           "verdict", "delta2", "params", "gflops", "inference_ms", "train_s"]  # fmt: skip
RESOLVE = 0.5  # mAP points a user wants to resolve


def _fmt(x, nd=2):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def summarize(entries: list[Entry], seeds: int, out: Path, fp: str, recipe: Recipe) -> dict:
    """Rows per config from the records in DIR (mAP in points, 0-100); writes ablation.csv, .md and .png."""
    recs = {e.stem: [r for k in range(seeds) if (r := load_record(out, e.stem, k, fp))] for e in entries}
    ok = {s: {r["seed"]: r for r in rs if r.get("status") == "ok"} for s, rs in recs.items()}
    base = next(e for e in entries if e.role == "base")
    b1 = {k: 100 * r["value"] for k, r in ok[base.stem].items()}
    b2 = {k: 100 * r["value2"] for k, r in ok[base.stem].items()}
    names = next((r for rs in ok.values() for r in rs.values()), {"metric": "mAP50-95(B)", "metric2": "mAP50(B)"})
    rows = []
    for e in entries:
        rs = ok[e.stem]
        m1 = {k: 100 * r["value"] for k, r in rs.items()}
        m2 = {k: 100 * r["value2"] for k, r in rs.items()}
        last = rs[max(rs)] if rs else {}
        d1, d2 = paired(b1, m1), paired(b2, m2)
        is_base = e.role == "base"
        rows.append({
            "config": e.config, "role": e.role, "runs": len(rs),
            "failed": sum(r.get("status") != "ok" for r in recs[e.stem]), "metric": names["metric"],
            "mean": mean(list(m1.values())), "std": std(list(m1.values())),
            "mean2": mean(list(m2.values())), "std2": std(list(m2.values())),
            "delta": math.nan if is_base else d1.mean, "ci_low": math.nan if is_base else d1.low,
            "ci_high": math.nan if is_base else d1.high, "verdict": "" if is_base else d1.verdict,
            "delta2": math.nan if is_base else d2.mean, "sd_diff": d1.sd,
            "params": last.get("params"), "gflops": last.get("gflops"),
            "inference_ms": mean([r["inference_ms"] for r in rs.values()]),
            "train_s": mean([r["train_seconds"] for r in rs.values()]),
            "errors": sorted({r.get("error", "") for r in recs[e.stem] if r.get("status") != "ok"}),
        })  # fmt: skip
    sds = [r["sd_diff"] for r in rows if r["role"] != "base" and not math.isnan(r["sd_diff"])]
    pooled = math.sqrt(sum(s * s for s in sds) / len(sds)) if sds else math.nan
    base_row = rows[0]
    summary = {"rows": rows, "pooled_sd_diff": pooled, "base_sd": base_row["std"], "base_mean": base_row["mean"],
               "seeds_for_half_point": seeds_to_resolve(pooled, RESOLVE), "recipe": asdict(recipe), "seeds": seeds,
               "metric": names["metric"], "metric2": names["metric2"]}  # fmt: skip
    _write_csv(rows, out / "ablation.csv")
    _write_md(summary, out / "ablation.md")
    _plot(summary, out / "ablation.png")
    return summary


def _write_csv(rows, path: Path) -> None:
    import io

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (round(v, 4) if isinstance(v, float) and not math.isnan(v) else "" if isinstance(v, float)
                        else v) for k, v in r.items()})  # fmt: skip
    write_atomic(path, buf.getvalue())


def _write_md(s: dict, path: Path) -> None:
    rc = s["recipe"]
    rows = s["rows"]
    start = "from scratch" if not rc["pretrained_sha256"] else (
        "fine-tuned from the base's weights" + (" with the inserted blocks starting as the identity"
                                                 if rc["identity_start"] else ""))  # fmt: skip
    lines = [
        "# Ablation",
        "",
        f"{time.strftime('%Y-%m-%d')}. Data {rc['data']}; {rc['epochs']} epochs at imgsz {rc['imgsz']}, batch "
        f"{rc['batch']}" + (f", fraction {rc['fraction']}" if rc["fraction"] != 1 else "") + f", {start}; seeds "
        f"0..{s['seeds'] - 1} with deterministic=True" + (f"; train arguments {' '.join(rc['extra'])}" if rc["extra"]
                                                          else "") + ".",
        "",
        f"{s['metric']} and {s['metric2']} in points (0-100). delta: mean over seeds of (config - base) on the same "
        "seed; 95% interval: Student t over those paired differences; verdict: better / worse when the interval "
        "excludes 0, else within noise.",
        "",
        f"| config | role | runs | {s['metric']} | sd | {s['metric2']} | sd | delta {s['metric']} | 95% interval | "
        "verdict | params | GFLOPs | inference ms | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        ci = "" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        delta = "" if math.isnan(r["delta"]) else f"{r['delta']:+.2f}"
        runs = f"{r['runs']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        params = f"{r['params']:,}" if r["params"] else ""
        lines.append(f"| {r['config']} | {r['role']} | {runs} | {_fmt(r['mean'])} | {_fmt(r['std'])}"
                     f" | {_fmt(r['mean2'])} | {_fmt(r['std2'])} | {delta} | {ci} | {r['verdict']} | "
                     f"{params} | {_fmt(r['gflops'])} | {_fmt(r['inference_ms'], 1)} | {_fmt(r['train_s'], 0)} |")  # fmt: skip
    lines.append("")
    if not math.isnan(s["pooled_sd_diff"]):
        n = s["seeds_for_half_point"]
        lines.append(f"Seed-to-seed spread of a paired difference (pooled over the configs): {s['pooled_sd_diff']:.2f} "
                     f"points. Resolving a {RESOLVE} point difference (95% interval half-width below {RESOLVE}) with "
                     f"this recipe takes " + (f"about {n} seeds per config." if n else "more seeds than is practical: "
                                              "use more data or longer training.") + "")  # fmt: skip
        if not math.isnan(s["base_sd"]):
            lines.append("")
            lines.append(f"The base alone varies by {s['base_sd']:.2f} points (sd over seeds) around "
                         f"{s['base_mean']:.2f}; pairing by seed takes that shared part out. Both spreads are "
                         "measured at this recipe's mAP level: on another dataset or schedule, measure them again.")  # fmt: skip
    errs = [(r["config"], e) for r in rows for e in r["errors"]]
    if errs:
        lines += ["", "Failed runs:", ""] + [f"- {c}: {e}" for c, e in errs]
    write_atomic(path, "\n".join(lines) + "\n")


def _plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in s["rows"] if r["role"] != "base" and not math.isnan(r["delta"])]
    rows.sort(key=lambda r: r["delta"])
    base = s["rows"][0]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 1.6 + 0.45 * max(len(rows), 1)), sharey=True,
                                  gridspec_kw={"width_ratios": [3, 1.3]})  # fmt: skip
    y = list(range(len(rows)))
    colors = {"better": "tab:green", "worse": "tab:red"}
    for i, r in enumerate(rows):
        c = "tab:purple" if r["role"] == "control" else colors.get(r["verdict"], "tab:gray")
        if not math.isnan(r["ci_low"]):
            ax.plot([r["ci_low"], r["ci_high"]], [i, i], color=c, lw=2)
        ax.plot(r["delta"], i, "o", color=c, ms=6)
    ax.axvline(0, color="black", lw=1)
    ctrl = next((r for r in rows if r["role"] == "control"), None)
    if ctrl:
        ax.axvline(ctrl["delta"], color="tab:purple", ls="--", lw=1,
                   label=f"capacity control ({Path(ctrl['config']).stem})")  # fmt: skip
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, [Path(r["config"]).stem for r in rows])
    ax.set_xlabel(f"{s['metric']} - base ({Path(base['config']).stem}, {_fmt(base['mean'])}), points, 95% interval")
    ax.grid(axis="x", alpha=0.3)
    rc = s["recipe"]
    ax.set_title(f"{Path(rc['data']).stem}: {rc['epochs']} epochs at {rc['imgsz']}, {s['seeds']} seeds, paired")
    bp = base["params"] or 0
    bg = base["gflops"] or 0
    for i, r in enumerate(rows):
        for val, ref, dy, color in ((r["params"], bp, -0.18, "tab:blue"), (r["gflops"], bg, 0.18, "tab:orange")):
            if val and ref:
                pct = 100 * (val / ref - 1)
                ax2.barh(i + dy, pct, height=0.35, color=color)
                ax2.text(max(pct, 0), i + dy, f" {pct:+.1f}%", va="center", fontsize=7)
    ax2.axvline(0, color="black", lw=1)
    ax2.margins(x=0.35)
    ax2.set_xlabel("% over base:\nparams (blue), GFLOPs (orange)", fontsize=8)
    ax2.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
