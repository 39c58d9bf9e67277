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

def _release() -> tuple:
    from importlib.metadata import version

    return tuple(int(x) for x in version("ultralytics").split(".")[:3])


HAS_YOLO26 = _release() >= (8, 4, 0)  # YOLO26 (its modules and YAML keys) arrived in Ultralytics 8.4.0
FAMILIES = ("yolov8n", "yolo11n", "yolo26n") if HAS_YOLO26 else ("yolov8n", "yolo11n")  # ready-config families at n


def ready_config_names() -> list[str]:
    """The shipped YOLO ready configs this Ultralytics release can build (yolo26-* from 8.4.0 on)."""
    import yolo_attn

    return sorted(p.name for p in Path(yolo_attn.MODEL_YAMLS).glob("yolo*.yaml")
                  if HAS_YOLO26 or not p.name.startswith("yolo26"))  # fmt: skip


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


def python(code: str, cwd: Path, args: list = (), **kw) -> subprocess.CompletedProcess:
    return run([BIN / "python", "-c", code, *args], cwd, **kw)


def ddp_worker_output(trainer: str, model: str, data, tmp_path: Path, probe: str) -> str:
    """Ultralytics' own DDP launcher file for ``trainer`` ("module.Class") training ``model``, run in a fresh
    interpreter with ``trainer.train()`` replaced by ``probe`` (the worker builds the model as before training,
    without a process group); returns its stdout."""
    mod, cls = trainer.rsplit(".", 1)
    script = tmp_path / "make_ddp.py"
    script.write_text(
        f"from {mod} import {cls}\n"
        "from ultralytics.utils.dist import generate_ddp_file\n"
        f"t = {cls}(overrides=dict(model='{model}', data=r'{data}', imgsz=64, device='cpu', project=r'{tmp_path}',"
        " name='ddp'))\n"
        f"assert t.model == '{model}'\n"
        "print(generate_ddp_file(t))\n"
    )
    worker = python(f"exec(open(r'{script}').read())", tmp_path).stdout.strip().splitlines()[-1]
    src = open(worker).read()
    assert "trainer.train()" in src
    open(worker, "w").write(src.replace("trainer.train()", probe))
    return python(f"import runpy; runpy.run_path(r'{worker}', run_name='__main__')", tmp_path).stdout


def trained_bn(m, spread: float = 0.1, seed: int = 1):
    """Every BatchNorm of ``m`` as after training: running mean and bias ~ N(0, spread), running variance and weight
    ~ U(0.5, 1.5), from a seeded generator. Eval-mode checks then see the BNs."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * spread)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=g) * spread)
    return m


def perturb_constants(m, scale: float, generator=None):
    """Move every constant-initialised parameter of ``m`` (zero-init convs, scales starting at 0 or 1, identity
    regressors, layer scales, BN affines) off its start by N(0, scale) noise, so no part of a block is a no-op."""
    import torch

    with torch.no_grad():
        for p in m.parameters():
            if p.numel() and bool((p == p.flatten()[0]).all()):
                p.add_(torch.randn(p.shape, generator=generator), alpha=scale)
    return m


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

    return ready_config_names()


@pytest.fixture(scope="session")
def base_checkpoints(tmp_path_factory, sample_data) -> dict:
    """Plain yolov8n, yolo11n and yolo26n trained one epoch on the repository's COCO sample with the `yolo` command."""
    out = tmp_path_factory.mktemp("base")
    for fam in FAMILIES:
        run(
            [BIN / "yolo", "train", f"model={fam}.yaml", f"data={sample_data}", "epochs=1", "imgsz=160", "batch=8",
             "device=cpu", "workers=0", "plots=False", f"project={out}", f"name={fam}", "exist_ok=True"],
            out,
        )  # fmt: skip
    return {fam: out / fam / "weights" / "best.pt" for fam in FAMILIES}


def family_of(config: str) -> str:
    """yolov8-ca.yaml -> yolov8n, yolo26-se.yaml -> yolo26n: the plain base of a ready config at n."""
    return config.split("-")[0] + "n"


def checkpoint_model(path):
    """The model of an Ultralytics checkpoint, fp32, eval mode."""
    from yolo_attn.patch import load_checkpoint  # load_checkpoint or, before it existed, attempt_load_one_weight

    model, _ = load_checkpoint(str(path))
    return model.float().eval()


def coco_batch(images, imgsz: int = 160):
    """The first four images resized to imgsz x imgsz, RGB, 0-1, as a (4, 3, imgsz, imgsz) float tensor."""
    import cv2
    import numpy as np
    import torch

    arr = np.stack([cv2.resize(cv2.imread(str(p)), (imgsz, imgsz))[..., ::-1] for p in images[:4]])
    return torch.from_numpy(arr.copy()).permute(0, 3, 1, 2).float() / 255
