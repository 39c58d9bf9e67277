"""Composed config names (`yolo26n-cbam.yaml`, `yolo11n-seg-simam.yaml`, `rtdetr-l-ca.yaml`) on every task head.

Default: a representative set of suffixes (one per kind of placement: backbone inserts, neck inserts, the fusion
rows before the head, Concat and strided-conv swaps, stage swaps, the deepest backbone layer) on every task base.
--full (CI): every suffix on every task base.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch

from conftest import BIN, FULL, REPO, SAMPLE, checkpoint_model, run

import yolo_attn
from yolo_attn import compose, names, registry, yamledit

SEG_SAMPLE = REPO / "data" / "coco8-seg"
TASK_BASES = {  # the base model of each task, at its smallest scale
    "detect": "yolo26n", "segment": "yolo11n-seg", "pose": "yolo11n-pose", "obb": "yolo11n-obb",
    "classify": "yolo11n-cls", "rtdetr": "rtdetr-l",
}  # fmt: skip
# default: each kind of placement on at least one task, every task with a backbone insert and a swap or fusion
REPRESENTATIVE = {
    "detect": ["cbam", "asff", "acmix"], "segment": ["simam", "aff"], "pose": ["scse", "dcn"],
    "obb": ["danet", "spdconv"], "classify": ["ca", "dcn", "scse"], "rtdetr": ["ca", "aff"],
}  # fmt: skip
IMGSZ = 64


def model_of(name: str, task: str):
    from ultralytics.nn.tasks import (ClassificationModel, DetectionModel, OBBModel, PoseModel,
                                      RTDETRDetectionModel, SegmentationModel)  # fmt: skip

    cls = {"detect": DetectionModel, "segment": SegmentationModel, "pose": PoseModel, "obb": OBBModel,
           "classify": ClassificationModel, "rtdetr": RTDETRDetectionModel}[task]  # fmt: skip
    torch.manual_seed(0)
    return cls(name, verbose=False)


@functools.cache
def supported(task: str) -> dict:
    """suffix -> None where the task's base places it, else why not (once per task: every placement is tried)."""
    base = names.require(TASK_BASES[task] + ".yaml")
    return compose.support(yamledit.ModelYaml(base.text(), base.path.name))


def check_yaml(name: str) -> str:
    """What Ultralytics' model YAML lookup (patched) returns for a name."""
    import ultralytics.nn.tasks as tasks

    return tasks.check_yaml(name)


def composed_text(name: str) -> str:
    """The YAML of composing a name's last suffix onto its base, even where a ready config of that name ships."""
    base_name, suffix = names.split(name)
    base = names.require(base_name)
    return compose.compose_text(name, base_name, base.text(), base.path.name, list(base.chain), suffix)[0]


def real_batch(task: str, imgsz: int = IMGSZ) -> dict:
    """A batch from Ultralytics' own dataset pipeline (val mode: letterbox, no augmentation) on the repository's COCO
    samples: boxes for detect and RT-DETR, polygons for segment; pose keypoints and OBB angles are made from the
    boxes in the task's format (the samples have none); classify takes each image's largest box's class."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import DEFAULT_CFG

    seg = task == "segment"
    data = check_det_dataset(str((SEG_SAMPLE / "coco8-seg.yaml") if seg else (SAMPLE / "coco16.yaml")))
    cfg = get_cfg(DEFAULT_CFG, {"task": "segment" if seg else "detect", "imgsz": imgsz})
    ds = build_yolo_dataset(cfg, data["train"], 4, data, mode="val", rect=False, stride=32)
    batch = ds.collate_fn([ds[i] for i in range(4)])
    batch["img"] = batch["img"].float() / 255
    g = torch.Generator().manual_seed(0)
    if task == "pose":  # 17 keypoints inside each box, 2 of 3 visible
        xy = batch["bboxes"][:, None, :2] + (torch.rand(len(batch["bboxes"]), 17, 2, generator=g) - 0.5) * batch["bboxes"][:, None, 2:]
        batch["keypoints"] = torch.cat([xy, (torch.rand(len(xy), 17, 1, generator=g) > 0.33).float()], -1)
    elif task == "obb":  # the boxes turned by 0.3 rad
        batch["bboxes"] = torch.cat([batch["bboxes"], torch.full((len(batch["bboxes"]), 1), 0.3)], 1)
    elif task == "classify":
        area = batch["bboxes"][:, 2] * batch["bboxes"][:, 3]
        batch["cls"] = torch.stack([batch["cls"].view(-1)[batch["batch_idx"] == i][area[batch["batch_idx"] == i].argmax()]
                                    for i in range(4)]).long()  # fmt: skip
    return batch


CASES = [pytest.param(t, s, id=f"{t}-{s}", marks=() if s in REPRESENTATIVE[t] else FULL)
         for t in TASK_BASES for s in sorted(registry.PLACEMENTS)]  # fmt: skip


@pytest.mark.parametrize("task, suffix", CASES)
def test_composed_name_builds_trains_and_evaluates(task, suffix):
    """The composed name of every task base builds where the family supports the suffix (n; RT-DETR at l), the s
    scale has more parameters, one training step with the task's own loss on real COCO images is finite and reaches
    the block, eval output is finite. Where it is not supported, the error is one line saying why."""
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    name = f"{TASK_BASES[task]}-{suffix}.yaml"
    why = supported(task)[suffix]
    if why is not None:
        with pytest.raises(compose.ComposeError) as e:
            model_of(name, task)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("yolo_attn: ") and "Suffixes" in msg and "supports" in msg, msg
        pytest.skip(f"{name}: not placeable ({why})")
    model = model_of(name, task)
    block = registry.PLACEMENTS[suffix].block
    ours = [m for m in model.modules() if type(m).__name__ == block]
    assert ours, f"no {block} in {name}"
    if task != "rtdetr":
        small = model_of(name.replace(TASK_BASES[task], TASK_BASES[task].replace("n", "s", 1), 1), task)
        assert small.yaml["scale"] == "s" and model.yaml["scale"] == "n"
        assert sum(p.numel() for p in small.parameters()) > sum(p.numel() for p in model.parameters())
    model.args = get_cfg(DEFAULT_CFG)
    model.nc = model.yaml["nc"]
    batch = real_batch(task)
    model.train()
    loss, _ = model.loss(batch)
    assert torch.isfinite(loss.sum())
    loss.sum().backward()
    grads = [p.grad for m in ours for p in m.parameters() if p.requires_grad]
    assert not grads or any(g is not None and g.abs().sum() > 0 for g in grads), f"{block} got no gradient"
    model.eval()
    with torch.no_grad():
        out = model(batch["img"])
    assert all(torch.isfinite(t).all() for t in _tensors(out))


def _tensors(out) -> list:
    if isinstance(out, torch.Tensor):
        return [out]
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    return [t for o in items for t in _tensors(o)]


# ------------------------------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------------------------------
def test_a_shipped_ready_config_and_a_file_on_disk_win(tmp_path, monkeypatch):
    from ultralytics.nn.tasks import yaml_model_load

    assert Path(yaml_model_load("yolov8n-ca.yaml")["yaml_file"]).name == "yolov8n-ca.yaml"
    shipped = check_yaml("yolov8-ca.yaml")
    assert Path(shipped).parent == Path(yolo_attn.MODEL_YAMLS)  # the ready config, not a composed one
    mine = tmp_path / "yolo26n-cbam.yaml"
    mine.write_text((Path(yolo_attn.MODEL_YAMLS) / "yolo26-se.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert check_yaml("yolo26n-cbam.yaml") == "yolo26n-cbam.yaml"


def test_composed_yaml_header_cache_and_scale(tmp_path, monkeypatch):
    from ultralytics import __version__
    from ultralytics.nn.tasks import DetectionModel

    monkeypatch.setenv("YOLO_ATTN_CACHE", str(tmp_path / "cache"))
    path = Path(check_yaml("yolo11s-seg-simam.yaml"))
    assert path.name == "yolo11s-seg-simam.yaml" and (tmp_path / "cache") in path.parents
    head = path.read_text().split("\nnc:")[0]
    assert "yolo_attn composed config: yolo11-seg.yaml + SimAM" in head
    assert f"Ultralytics {__version__}" in head and "insert at roles backbone-p3, backbone-p4, backbone-p5" in head
    assert check_yaml("yolo11s-seg-simam.yaml") == str(path)  # content-addressed: same file
    m = DetectionModel("yolo11s-cbam.yaml", verbose=False)  # a shipped file for comparison of the scale rule
    assert m.yaml["scale"] == "s"


def test_two_suffixes_compose():
    from ultralytics.nn.tasks import DetectionModel

    m = DetectionModel("yolo26n-cbam-aff.yaml", verbose=False)
    names = {type(x).__name__ for x in m.modules()}
    assert {"CBAM", "AFF"} <= names
    text = Path(check_yaml("yolo26n-cbam-aff.yaml")).read_text()
    assert text.startswith("# yolo_attn composed config: yolo26-cbam.yaml + Attentional Feature Fusion (AFF)")


def test_composed_equals_shipped_for_the_generated_files():
    """The package's placement is the one the shipped files were made with: a composed name built from the same base
    has the same rows as the ready file (yolo26-se.yaml vs. composing 'se' onto Ultralytics' yolo26.yaml)."""
    import yaml

    ready = yaml.safe_load((Path(yolo_attn.MODEL_YAMLS) / "yolo26-se.yaml").read_text())
    composed = yaml.safe_load(composed_text("yolo26-se.yaml"))  # the shipped file has this name: compose it directly
    assert composed["backbone"] == ready["backbone"] and composed["head"] == ready["head"]


@pytest.mark.parametrize("family", ["yolov8", "yolo11"])
@pytest.mark.parametrize("suffix", ["ca", "simam", "cbam", "asff", "spdconv", "aff", "iaff", "dcn"])
def test_placements_rebuild_the_hand_written_configs(family, suffix, tmp_path):
    """The registry placement of each block whose v8/11 files were written by hand gives the same model: composing
    the suffix onto Ultralytics' base builds, at n, the same layers with the same parameter counts."""
    from ultralytics.nn.tasks import DetectionModel

    local = tmp_path / f"{family}n-{suffix}.yaml"
    local.write_text(composed_text(f"{family}-{suffix}.yaml"))

    def layers(cfg):
        m = DetectionModel(str(cfg), verbose=False)
        return [(type(x).__name__, x.f, sum(p.numel() for p in x.parameters())) for x in m.model]

    assert layers(local) == layers(f"{family}n-{suffix}.yaml")


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("yolo11n-cls-scse.yaml", r"^yolo_attn: yolo11n?-cls-scse\.yaml: scSE \(suffix scse\) cannot be placed in "
         r"yolo11n?-cls\.yaml: neck-outputs: the model has no neck .*Suffixes yolo11n?-cls\.yaml supports: ca, "),
        ("yolo11n-cbma.yaml", r"^yolo_attn: yolo11n?-cbma\.yaml: no such file, and 'cbma' is not a block suffix\. did "
         r"you mean cbam"),
        ("yolo11n-cls-asff.yaml", r"ASFF \(suffix asff\) cannot be placed .* no neck"),
        ("rtdetr-l-dcn.yaml", r"C2f_DCN \(suffix dcn\) cannot be placed in rtdetr-l\.yaml: layer \d+ is HGBlock; no "
         r"drop-in HGBlock -> C2f_DCN"),
        # a family without a unified file (yolov10s.yaml, no yolov10.yaml): the name as typed is the one refused
        ("yolov10s-dcn.yaml", r"^yolo_attn: yolov10s-dcn\.yaml: C2f_DCN \(suffix dcn\) cannot be placed in "
         r"yolov10s\.yaml: layer \d+ is C2fCIB"),
        ("yolov9m-acmix.yaml", r"^yolo_attn: yolov9m-acmix\.yaml: ACmix \(suffix acmix\) cannot be placed .*down-p5"),
    ],
)  # fmt: skip
def test_cannot_place_errors_are_one_line(name, pattern):
    from ultralytics.nn.tasks import yaml_model_load

    with pytest.raises(compose.ComposeError) as e:
        yaml_model_load(name)
    assert "\n" not in str(e.value) and re.search(pattern, str(e.value)), str(e.value)


# ------------------------------------------------------------------------------------------------------------------
# What a user runs
# ------------------------------------------------------------------------------------------------------------------
CLI = [
    ("detect", "yolo26n-cbam.yaml", SAMPLE / "coco16.yaml"),
    ("segment", "yolo11n-seg-simam.yaml", SEG_SAMPLE / "coco8-seg.yaml"),
    ("detect", "rtdetr-l-ca.yaml", SAMPLE / "coco16.yaml"),
]


@pytest.mark.slow
@pytest.mark.parametrize("task, name, data", CLI, ids=[c[1] for c in CLI])
def test_cli_trains_a_composed_name_and_val_reloads_without_it(task, name, data, tmp_path):
    """`yolo <task> train model=<name>` from another directory with no import (a shipped YOLO26 ready file, composed
    seg and RT-DETR names), then `yolo val` of best.pt in a fresh process, plain and under ULTRALYTICS_SAFE_LOAD=1,
    after the composed-config cache is deleted: the checkpoint carries its model."""
    import shutil

    cache = tmp_path / "cache"
    run([BIN / "yolo", task, "train", f"model={name}", f"data={data}", "epochs=1", "imgsz=64" if "rtdetr" not in name
         else "imgsz=96", "batch=4", "device=cpu", "workers=0", "plots=False", f"project={tmp_path}", "name=t"],
        tmp_path, YOLO_ATTN_CACHE=cache)  # fmt: skip
    shipped = (Path(yolo_attn.MODEL_YAMLS) / names.unscaled(name)).is_file()  # yolo26-cbam.yaml ships: no composing
    assert bool(list(cache.rglob(name))) != shipped
    shutil.rmtree(cache, ignore_errors=True)
    best = tmp_path / "t" / "weights" / "best.pt"
    for safe in ({}, {"ULTRALYTICS_SAFE_LOAD": "1"}):
        p = run([BIN / "yolo", task, "val", f"model={best}", f"data={data}", "imgsz=64" if "rtdetr" not in name
                 else "imgsz=96", "batch=4", "device=cpu", "workers=0", "plots=False", f"project={tmp_path}"],
                tmp_path, YOLO_ATTN_CACHE=cache, **safe)  # fmt: skip
        assert re.search(r"all\s+\d+\s+\d+", p.stdout + p.stderr)
    block = registry.PLACEMENTS[name.rsplit("-", 1)[1].removesuffix(".yaml")].block
    assert any(type(m).__name__ == block for m in checkpoint_model(best).modules())
    assert not cache.exists()  # nothing was composed again


@pytest.mark.slow
def test_cli_error_is_one_line_with_non_zero_exit(tmp_path, sample_data):
    p = run([BIN / "yolo", "train", "model=yolo11n-cls-scse.yaml", f"data={sample_data}", "epochs=1", "device=cpu"],
            tmp_path, check=False)  # fmt: skip
    assert p.returncode != 0
    out = p.stdout + p.stderr
    line = next(x for x in out.splitlines() if "yolo_attn:" in x)
    assert "cannot be placed in" in line and "Suffixes" in line


@pytest.mark.slow
def test_yolo_attn_show_prints_the_composed_yaml(tmp_path):
    p = run([BIN / "yolo-attn", "show", "yolo26s-eca.yaml"], tmp_path)
    assert p.stdout.startswith("# yolo_attn ready config: YOLO26 + Efficient Channel Attention (ECA)")
    p = run([BIN / "yolo-attn", "show", "yolo11n-pose-cbam.yaml"], tmp_path)
    assert p.stdout.startswith("# yolo_attn composed config: yolo11-pose.yaml + CBAM") and "kpt_shape:" in p.stdout


# ------------------------------------------------------------------------------------------------------------------
# Pretrained transfer and export, per task
# ------------------------------------------------------------------------------------------------------------------
INSERTS = [("segment", "cbam"), ("pose", "se"), ("obb", "eca"), ("classify", "ca"), ("rtdetr", "simam"), ("detect", "gc")]


@pytest.mark.parametrize("task, suffix", INSERTS, ids=[f"{t}-{s}" for t, s in INSERTS])
def test_base_weights_transfer_into_composed_inserts_completely(task, suffix):
    """The family's base model (its weights moved off their init) loads into the composed config through
    Ultralytics' .load: every base tensor is placed (structural transfer), and the layers match one to one."""
    import logging

    from ultralytics.utils import LOGGER

    base = model_of(TASK_BASES[task] + ".yaml", task)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    target = model_of(f"{TASK_BASES[task]}-{suffix}.yaml", task)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda r: lines.append(r.getMessage())
    LOGGER.addHandler(handler)
    try:
        target.load(base)
    finally:
        LOGGER.removeHandler(handler)
    total = len(base.state_dict())
    line = next(x for x in lines if x.startswith("yolo_attn: structural transfer"))
    assert f"placed {total}/{total} source tensors" in line, line
    ours = {id(m) for m in target.modules() if type(m).__name__ == registry.PLACEMENTS[suffix].block}
    assert ours
    src = [t for k, t in base.state_dict().items()]
    dst = {k: t for k, t in target.state_dict().items()}
    assert sum(any(torch.equal(s, d) for d in dst.values() if d.shape == s.shape) for s in src[:50]) == min(50, len(src))


EXPORTS = [("segment", "simam"), ("pose", "cbam"), ("obb", "se"), ("classify", "eca"), ("rtdetr", "ca")]


@pytest.mark.slow
@pytest.mark.parametrize("task, suffix", EXPORTS, ids=[f"{t}-{s}" for t, s in EXPORTS])
def test_composed_config_exports_to_onnx_per_task(task, suffix, tmp_path, val_images):
    """A composed config of each task head, with non-trivial weights, exported by `yolo export`; onnxruntime on real
    COCO images gives PyTorch's first output (boxes/scores, keypoints, angles, class probabilities)."""
    import copy

    import numpy as np
    import onnxruntime as ort

    from conftest import coco_batch, perturb_constants, trained_bn

    imgsz = 96 if task == "rtdetr" else IMGSZ
    name = f"{TASK_BASES[task]}-{suffix}.yaml"
    model = trained_bn(model_of(name, task))
    for m in model.modules():
        if type(m).__module__.startswith("yolo_attn.modules"):
            perturb_constants(m, 0.05, torch.Generator().manual_seed(1))
    model.names = {i: str(i) for i in range(model.yaml["nc"])}
    ckpt = tmp_path / (("rtdetr-" if task == "rtdetr" else "") + name.replace(".yaml", ".pt"))
    torch.save({"model": copy.deepcopy(model).half(), "train_args": {"task": "detect" if task == "rtdetr" else task}},
               ckpt)  # fmt: skip
    run([BIN / "yolo", "export", f"model={ckpt}", "format=onnx", f"imgsz={imgsz}"], tmp_path)
    x = coco_batch(val_images, imgsz)[:2]
    sess = ort.InferenceSession(str(ckpt.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i : i + 1].numpy()})[0] for i in range(2)])
    net = checkpoint_model(ckpt).fuse(verbose=False)
    with torch.no_grad():
        out = net(x)
    while isinstance(out, (list, tuple)):  # (predictions, raw outputs), segment: ((boxes, protos), ...)
        out = out[0]
    ref = out.numpy()
    assert got.shape == ref.shape, (got.shape, ref.shape)
    if task == "rtdetr":  # sorted top-k: compare the sorted scores (ties may swap places)
        got, ref = got[..., 4], ref[..., 4]
    scale = np.maximum(1.0, np.abs(ref))
    assert (np.abs(got - ref) <= 1e-3 * scale).all(), np.abs(got - ref).max()
