"""Shared fixtures. Tests run against the installed package (scripts/test.sh installs it) and never download."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ["YOLO_OFFLINE"] = "1"  # before Ultralytics is imported anywhere
os.environ.pop("YOLO_ATTN_DISABLE", None)

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "coco16"
SHARED_COCO = REPO.parent / "shared" / "datasets" / "coco128"
BIN = Path(sys.executable).parent


def env(**extra) -> dict:
    """Environment for subprocesses: offline, yolo_attn not disabled, nothing of the test process's sys.path."""
    e = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "YOLO_ATTN_DISABLE", "ULTRALYTICS_SAFE_LOAD"}}
    e.update(YOLO_OFFLINE="1", **{k: str(v) for k, v in extra.items()})
    return e


def run(cmd: list, cwd: Path, timeout: float = 600, check: bool = True, **extra_env) -> subprocess.CompletedProcess:
    """Run a command as a user would (its own process, another directory); show its output if it fails."""
    p = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env(**extra_env), capture_output=True, text=True, timeout=timeout
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}\n--- stdout ---\n{p.stdout[-6000:]}\n--- stderr ---\n{p.stderr[-6000:]}")
    return p


def python(code: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run([BIN / "python", "-c", code], cwd, **kw)


def tensors_of(out) -> list:
    """Every tensor in a model output (train-mode heads return nested dicts and lists)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    return [t for o in items for t in tensors_of(o)]


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    """A private copy of the repository's 16-image COCO sample (Ultralytics writes label caches beside it)."""
    dst = tmp_path_factory.mktemp("data") / "coco16"
    shutil.copytree(SAMPLE, dst, ignore=shutil.ignore_patterns("*.cache"))
    return dst / "coco16.yaml"


@pytest.fixture(scope="session")
def val_images() -> list[Path]:
    return sorted((SAMPLE / "images" / "val2017").glob("*.jpg"))


@pytest.fixture(scope="session")
def ready_configs() -> list[str]:
    import yolo_attn

    return sorted(p.name for p in Path(yolo_attn.MODEL_YAMLS).glob("*.yaml"))
