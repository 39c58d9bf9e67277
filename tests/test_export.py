"""Export ready configs with Ultralytics' exporter (one `yolo export` command run as a user runs it); run the ONNX files
in onnxruntime and the TorchScript files in torch on real COCO images, against the PyTorch model with the same weights.
The default run exports the representative configs (conftest.REPRESENTATIVE); --full exports every ready config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import (BIN, REPRESENTATIVE, built, checkpoint_model, coco_batch, family_of, full, perturb_constants,
                      python, ready_config_names, run, save_checkpoint, sweep)  # fmt: skip

from yolo_attn.modules import DCN

CONFIGS = ready_config_names()
IMGSZ = 160


@pytest.fixture(scope="module")
def checkpoints(base_checkpoints, tmp_path_factory, request) -> dict[str, Path]:
    """Each ready config (n scale) with the trained base weights transferred and its own blocks given non-trivial
    weights, saved as a checkpoint: DCN offsets moved off zero, so the deformable sampling really matters, and every
    constant-initialised parameter of our blocks (zero-init convs, scales starting at 0, STN's identity regressor,
    layer scales) perturbed, so no part of a block is exported as a no-op."""
    out = tmp_path_factory.mktemp("ckpt")
    made = {}
    torch.manual_seed(0)
    for config in CONFIGS if request.config.getoption("--full") else [c for c in CONFIGS if c in REPRESENTATIVE]:
        family = family_of(config)
        model = built(config.replace("-", "n-", 1))
        model.load(checkpoint_model(base_checkpoints[family]), verbose=False)
        for m in model.modules():
            if isinstance(m, DCN):
                torch.nn.init.normal_(m.offset_mask.weight, std=0.05)
            elif type(m).__module__.startswith("yolo_attn.modules"):
                perturb_constants(m, 0.05)
        made[config] = save_checkpoint(model, out / config.replace(".yaml", ".pt"))
    return made


def reference(ckpt: Path, x: torch.Tensor) -> np.ndarray:
    """The PyTorch model's predictions, fused for inference as Ultralytics exports it."""
    net = checkpoint_model(ckpt).fuse(verbose=False)
    with torch.no_grad():
        return net(x)[0].numpy()


def assert_same_predictions(got: np.ndarray, ref: np.ndarray) -> None:
    """fp32: max abs difference <= 1e-4 on class scores (0..1); box coordinates are pixels (up to imgsz), where 1e-4
    is below one float32 step, so they are held to 1e-4 relative."""
    assert got.shape == ref.shape
    err = np.abs(got - ref)
    assert err[:, 4:].max() <= 1e-4, err[:, 4:].max()
    assert (err[:, :4] <= 1e-4 * np.maximum(1.0, np.abs(ref[:, :4]))).all(), err[:, :4].max()


EXPORT_ALL = """
import sys
from ultralytics import YOLO
for ckpt in sys.argv[1:]:
    YOLO(ckpt).export(format="onnx", imgsz=%d)
    print("exported", ckpt, flush=True)
""" % IMGSZ


@pytest.fixture(scope="module")
def onnx_files(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """Every checkpoint exported by Ultralytics' exporter in one user process (one interpreter start for all)."""
    out = tmp_path_factory.mktemp("onnx")
    copies = []
    for config, ckpt in checkpoints.items():
        copy_ = out / ckpt.name
        copy_.write_bytes(ckpt.read_bytes())
        copies.append(copy_)
    python(EXPORT_ALL, out, args=copies)
    return {config: out / checkpoints[config].with_suffix(".onnx").name for config in checkpoints}


def check_onnx(path: Path, ckpt: Path, config: str, val_images) -> None:
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path))
    ops = {n.op_type for n in graph.graph.node}
    if "dcn" in config:
        assert "DeformConv" in ops and graph.opset_import[0].version >= 19
    x = coco_batch(val_images, IMGSZ)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    got = np.concatenate([sess.run(None, {name: x[i : i + 1].numpy()})[0] for i in range(len(x))])
    assert_same_predictions(got, reference(ckpt, x))


@pytest.mark.parametrize("config", sweep(CONFIGS))
def test_onnx_export_runs_in_onnxruntime(config, checkpoints, onnx_files, val_images):
    assert onnx_files[config].is_file(), f"no ONNX file for {config}"
    check_onnx(onnx_files[config], checkpoints[config], config, val_images)


@pytest.mark.parametrize("config", ["yolov8-dcn.yaml", full("yolo11-cbam.yaml"), full("yolov8-stn.yaml"),
                                    full("yolo11-acmix.yaml")])  # fmt: skip
def test_yolo_cli_export(config, checkpoints, val_images, tmp_path):
    """The same through the `yolo export` command in its own process."""
    ckpt = tmp_path / checkpoints[config].name
    ckpt.write_bytes(checkpoints[config].read_bytes())
    run([BIN / "yolo", "export", f"model={ckpt}", "format=onnx", f"imgsz={IMGSZ}"], tmp_path)
    check_onnx(ckpt.with_suffix(".onnx"), ckpt, config, val_images)


@pytest.mark.parametrize("config", ["yolov8-dcn.yaml", "yolo11-asff.yaml", full("yolo11-iaff.yaml"), "yolo11-cbam.yaml"])
def test_torchscript_export(config, checkpoints, val_images, tmp_path):
    from ultralytics import YOLO

    ckpt = tmp_path / checkpoints[config].name
    ckpt.write_bytes(checkpoints[config].read_bytes())
    YOLO(str(ckpt)).export(format="torchscript", imgsz=IMGSZ)
    ts = torch.jit.load(str(ckpt.with_suffix(".torchscript")))
    x = coco_batch(val_images, IMGSZ)[:1]  # traced at batch 1
    with torch.no_grad():
        got = ts(x)
    got = (got[0] if isinstance(got, (list, tuple)) else got).numpy()
    assert_same_predictions(got, reference(ckpt, x))


def test_export_from_a_yaml_name(tmp_path, monkeypatch):
    from ultralytics import YOLO

    monkeypatch.chdir(tmp_path)  # a model made from a YAML exports beside the working directory
    YOLO("yolov8n-dcn.yaml").export(format="onnx", imgsz=IMGSZ)
    assert (tmp_path / "yolov8n-dcn.onnx").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["format=onnx", "opset=17"], "DCN (layer 4 (C2f_DCN), layer 6 (C2f_DCN), layer 8 (C2f_DCN)) exports as ONNX "
                                      "DeformConv, which needs opset >= 19; got opset=17"),
        (["format=tflite"], "DCN (layer 4 (C2f_DCN), layer 6 (C2f_DCN), layer 8 (C2f_DCN)) cannot be exported to format="),
        (["format=coreml"], "cannot be exported to format=coreml"),
    ],
)  # fmt: skip
def test_formats_that_cannot_carry_dcn_fail_clearly(args, message, tmp_path, monkeypatch):
    from ultralytics import YOLO

    from yolo_attn.export import ExportFormatError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExportFormatError) as e:
        YOLO("yolov8n-dcn.yaml").export(**{k: yaml.safe_load(v) for k, v in (a.split("=") for a in args)}, imgsz=IMGSZ)
    assert str(e.value).startswith("yolo_attn: DCN (layer 4 (C2f_DCN)") and message in str(e.value)
