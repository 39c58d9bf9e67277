"""The records of an ablation on disk: one JSON per run, and the manifest that pins the recipe of ``--out``.

    DIR/ablation.json              the recipe (a rerun with another recipe is refused)
    DIR/runs/<stem>/seed<k>.json   one record per run, written atomically when the run ends
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..files import write_json_atomic
from .planning import AblateError, Recipe


def record_path(out: Path, stem: str, seed: int) -> Path:
    return out / "runs" / stem / f"seed{seed}.json"


def load_record(out: Path, stem: str, seed: int, fingerprint: str) -> dict | None:
    """The run's record if it was made with this recipe, else None. Records from before per-task metrics (box mAP
    only) read as box mAP."""
    try:
        r = json.loads(record_path(out, stem, seed).read_text())
    except (OSError, ValueError):
        return None
    if r.get("recipe") != fingerprint:
        return None
    if r.get("status") == "ok" and "value" not in r:
        r.update(metric="mAP50-95(B)", value=r["map50_95"], metric2="mAP50(B)", value2=r["map50"])
    return r


def save_record(out: Path, stem: str, seed: int, record: dict) -> None:
    write_json_atomic(record_path(out, stem, seed), record)


def manifest_conflict(out: Path, recipe: Recipe) -> str | None:
    """Why ``out`` cannot take this recipe (it holds another ablation), or None."""
    path = out / "ablation.json"
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())["recipe"]
    except (OSError, ValueError, KeyError):
        return f"{path} is not an ablation manifest; use another --out"
    new = asdict(recipe)
    diff = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
    if diff:
        return (f"--out {out} holds an ablation with another recipe ({'; '.join(diff)}); rerun with its settings to "
                "resume it, or use another --out")  # fmt: skip
    return None


def check_manifest(out: Path, recipe: Recipe) -> None:
    """DIR keeps one recipe: a rerun with other training settings would pair runs that are not comparable."""
    why = manifest_conflict(out, recipe)
    if why:
        raise AblateError(why)
    write_json_atomic(out / "ablation.json", {"recipe": asdict(recipe), "fingerprint": recipe.fingerprint()})
