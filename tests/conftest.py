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


# ----------------------------------------------------------------------------------------------------------------
# Modes: the default run (about 10 minutes on 2 cores) and --full (CI: every sweep and every end-to-end run)
# ----------------------------------------------------------------------------------------------------------------
def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", help="also run the tests marked slow (end-to-end trainings, "
                     "subprocess runs) and full (every block x family x task x scale sweep); CI runs this")  # fmt: skip
    parser.addoption("--compile", action="store_true", help="also run the tests marked compile: inductor on every "
                     "block, aot_eager on every ready config (about 40 more minutes on 2 cores; not in CI)")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    off = set() if config.getoption("--full") else {"slow", "full"}
    if not config.getoption("--compile"):
        off.add("compile")
    keep, drop = [], []
    for item in items:
        (drop if any(item.get_closest_marker(m) for m in off) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_report_header(config):
    mode = "--full: slow and full tests included" if config.getoption("--full") else (
        "default run: slow and full tests deselected (bash scripts/test.sh --full runs them)")  # fmt: skip
    return f"yolo_attn: {mode}; compile sweeps {'included' if config.getoption('--compile') else 'deselected (--compile)'}"


FULL = pytest.mark.full


def full(*values):
    """A parameter that only the --full run takes (a case of an exhaustive sweep beyond the representative ones)."""
    return pytest.param(*values, marks=FULL)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "coco16"
SHARED_COCO = REPO.parent / "shared" / "datasets" / "coco128"
BIN = Path(sys.executable).parent

def _has_yolo26() -> bool:
    from yolo_attn.releases import YOLO26, at_least

    return at_least(YOLO26)


HAS_YOLO26 = _has_yolo26()  # YOLO26 (its modules and YAML keys) arrived in Ultralytics 8.4.0
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


def yolo_attn(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """`yolo-attn ARGS` run in this process through ``cli.main`` from the directory ``cwd``, its stdout and stderr
    captured as a subprocess's would be (the console script is ``cli.main``; one subprocess test covers the script)."""
    import contextlib
    import io

    from yolo_attn import cli

    argv = [str(a) for a in args]
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(argv)
            except SystemExit as e:  # argparse's usage errors
                rc = e.code if isinstance(e.code, int) else 2
    finally:
        os.chdir(here)
    p = subprocess.CompletedProcess(["yolo-attn", *argv], rc, out.getvalue(), err.getvalue())
    if check and rc != 0:
        raise AssertionError(f"yolo-attn {' '.join(argv)} exited {rc}\n--- stdout ---\n{p.stdout[-6000:]}\n"
                             f"--- stderr ---\n{p.stderr[-6000:]}")  # fmt: skip
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


def save_checkpoint(model, path: Path, task: str = "detect") -> Path:
    """An Ultralytics checkpoint of a built model, as its trainer writes one: the model pickled in half precision,
    with its train arguments. `yolo val`, `pretrained=` and YOLO(path) load it like a trained best.pt."""
    import copy

    import torch
    from ultralytics import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.names = getattr(model, "names", None) or {i: str(i) for i in range(model.yaml.get("nc", 80))}
    torch.save({"model": copy.deepcopy(model).half(), "train_args": {"task": task, "model": model.yaml.get("yaml_file")},
                "version": __version__, "epoch": -1}, path)  # fmt: skip
    return path


@pytest.fixture(scope="session")
def base_checkpoints(tmp_path_factory) -> dict:
    """Plain yolov8n, yolo11n and yolo26n as after training: built from their YAMLs, every weight moved off its
    initialisation by seeded noise and the BatchNorms given running statistics, saved as Ultralytics checkpoints.
    (Tensor comparisons need trained-looking weights, not a training; test_cli trains for real.)"""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    out = tmp_path_factory.mktemp("base")
    found = {}
    for k, fam in enumerate(FAMILIES):
        torch.manual_seed(k)
        model = trained_bn(DetectionModel(f"{fam}.yaml", verbose=False), seed=k)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        found[fam] = save_checkpoint(model.eval(), out / fam / "weights" / "best.pt")
    return found


_BUILT: dict = {}  # name -> model, least recently used first
_BUILT_MAX_PARAMS = 150_000_000  # about 600 MB of fp32 weights: --full builds every config at x, 60-100 M each


def built(name: str):
    """A fresh copy of the DetectionModel a config name builds, in eval mode. Each name is built once per session
    while it stays in a small least-recently-used cache (test_configs, test_transfer and test_export read the same
    ready configs); callers may change their copy."""
    import copy

    from ultralytics.nn.tasks import DetectionModel

    model = _BUILT.pop(name, None)
    if model is None:
        model = DetectionModel(name, verbose=False).eval()
    _BUILT[name] = model
    total = sum(p.numel() for m in _BUILT.values() for p in m.parameters())
    while total > _BUILT_MAX_PARAMS and len(_BUILT) > 1:
        oldest = next(iter(_BUILT))
        total -= sum(p.numel() for p in _BUILT.pop(oldest).parameters())
    return copy.deepcopy(model)


# One ready config per kind of block and export path, every family: the default run's sample of per-config sweeps
# (ONNX export, scales beyond n); --full takes every config
REPRESENTATIVE = ["yolov8-ca.yaml", "yolov8-dcn.yaml", "yolo11-cbam.yaml", "yolo11-asff.yaml", "yolov8-refconv.yaml",
                  "yolo11-danet.yaml", "yolov8-stn.yaml", "yolo11-acmix.yaml", "yolov8-cfnet.yaml", "yolo11-iaff.yaml",
                  "yolo26-simam.yaml", "yolo26-odconv.yaml", "yolo26-spdconv.yaml", "yolov8-bifpn.yaml",
                  "yolo11-faster.yaml", "yolo26-slimneck.yaml"]  # fmt: skip


def sweep(configs: list[str]) -> list:
    """Ready configs as test parameters: the REPRESENTATIVE ones for every run, the others for --full only."""
    return [c if c in REPRESENTATIVE else full(c) for c in configs]


def family_of(config: str) -> str:
    """yolov8-ca.yaml -> yolov8n, yolo26-se.yaml -> yolo26n: the plain base of a ready config at n."""
    return config.split("-")[0] + "n"


def checkpoint_model(path):
    """The model of an Ultralytics checkpoint, fp32, eval mode."""
    from yolo_attn.checkpoints import load_checkpoint  # load_checkpoint or, before it existed, attempt_load_one_weight

    model, _ = load_checkpoint(str(path))
    return model.float().eval()


def coco_batch(images, imgsz: int = 160):
    """The first four images resized to imgsz x imgsz, RGB, 0-1, as a (4, 3, imgsz, imgsz) float tensor."""
    import cv2
    import numpy as np
    import torch

    arr = np.stack([cv2.resize(cv2.imread(str(p)), (imgsz, imgsz))[..., ::-1] for p in images[:4]])
    return torch.from_numpy(arr.copy()).permute(0, 3, 1, 2).float() / 255


# ----------------------------------------------------------------------------------------------------------------
# Helpers of the block family tests (tests/test_blocks_<family>.py)
# ----------------------------------------------------------------------------------------------------------------
OFFICIAL = REPO / "tests" / "fixtures" / "official"


def width_case(c):
    """(make, expect) of a contract case for a channel-preserving block of width c."""
    import torch

    return lambda b, h, w: torch.randn(b, c, h, w), lambda b, h, w: (b, c, h, w)


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def official_cases(name: str) -> list[dict]:
    """The main case and the variants of a stored official reference (tests/fixtures/official/<name>.pt)."""
    import torch

    d = torch.load(OFFICIAL / f"{name}.pt", weights_only=True)
    return [d, *d["variants"]]


def case_id(case: dict) -> str:
    return case.get("name", "main")
