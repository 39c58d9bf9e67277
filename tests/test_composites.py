"""C2f_<Block> and C3k2_<Block>: Ultralytics' C2f / C3k2 whose bottlenecks end in a channel-preserving block.

Every channel-preserving block, in both hosts, in a row of YOLOv8, YOLO11 and YOLO26 (the backbone's P4 stage row):
builds at n and s with the host's widths and repeats, trains one step with the detection loss on real COCO images,
and exports to ONNX (onnxruntime matches PyTorch); the plain model's weights transfer with every tensor of its C2f /
C3k2 placed. The default run takes a representative set; --full every block.
"""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from conftest import FULL, HAS_YOLO26, coco_batch, perturb_constants, trained_bn

from yolo_attn import registry, yamledit
from yolo_attn.modules.composite import BlockBottleneck, C2fWith, C3k2With

PRESERVING = [n for n, s in registry.BLOCKS.items() if s.preserves_width]
FAMILIES = ["yolov8", "yolo11"] + (["yolo26"] if HAS_YOLO26 else [])
REPRESENTATIVE = {("CA", "C2f", "yolov8"), ("CBAM", "C3k2", "yolo11"), ("SE", "C3k2", "yolo26"), ("SimAM", "C2f", "yolo11"),
                  ("TripletAttention", "C2f", "yolo26"), ("CFNetFocal", "C3k2", "yolov8")}  # fmt: skip
# C2f_FasterBlock is a community alias of C2f_Faster (FasterNet blocks in place of the bottlenecks, as YOLO-DPC
# means it): an alias wins over the composite reading of a name (test_an_alias_wins_over_the_composite_reading)
CASES = [pytest.param(b, h, f, id=f"{h}_{b}-{f}", marks=() if (b, h, f) in REPRESENTATIVE else FULL)
         for b in PRESERVING for h in ("C2f", "C3k2") for f in FAMILIES if f"{h}_{b}" not in registry.ALIASES]  # fmt: skip


def test_an_alias_wins_over_the_composite_reading():
    assert registry.lookup("C2f_FasterBlock")[0].name == "C2f_Faster"
    assert registry.lookup("C3k2_FasterBlock")[0].name == "C3k2_FasterBlock"  # no alias: the composite
STAGE = 6  # the backbone's P4 stage row in all three families


def composite_yaml(block: str, host: str, family: str) -> dict:
    """The family's own YAML with its P4 stage row made ``<host>_<block>`` (same args)."""
    from yolo_attn import names

    base = names.require(f"{family}.yaml")
    doc = yamledit.ModelYaml(base.text(), base.path.name)
    row = doc.rows[STAGE]
    assert row.module in ("C2f", "C3k2"), row.module
    lines = list(doc.lines)
    lines[row.line] = row.text(module=f"{host}_{block}")
    return yaml.safe_load("".join(lines))


def build(d: dict, scale: str):
    from ultralytics.nn.tasks import DetectionModel

    d = {**copy.deepcopy(d), "scale": scale}
    torch.manual_seed(0)
    return DetectionModel(d, verbose=False)


@pytest.mark.parametrize("block, host, family", CASES)
def test_composite_builds_trains_and_keeps_the_host(block, host, family, val_images):
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    d = composite_yaml(block, host, family)
    plain = copy.deepcopy(d)
    plain["backbone"][STAGE][2] = host
    for scale in "ns":
        model = build(d, scale)
        layer = model.model[STAGE]
        assert isinstance(layer, C2fWith if host == "C2f" else C3k2With) and layer.block == block
        inner = [m for m in layer.modules() if isinstance(m, BlockBottleneck)]
        assert inner and all(type(m.attn) is registry.BLOCKS[block].cls for m in inner)
        base = build(plain, scale)
        host_layer = base.model[STAGE]
        # the host's own structure and tensor names: every tensor of the plain C2f / C3k2 is in the composite
        host_sd, comp_sd = host_layer.state_dict(), layer.state_dict()
        assert all(k in comp_sd and comp_sd[k].shape == v.shape for k, v in host_sd.items()), scale
        assert all(".attn." in k for k in set(comp_sd) - set(host_sd))  # the blocks' own (none for SimAM)
        if host == "C3k2" and scale == "s" and family != "yolov8":
            assert len(layer.m) == len(host_layer.m)
    # the plain model's weights transfer: every tensor placed, the host's inside the composite included
    model, base = build(d, "n"), trained_bn(build(plain, "n"))
    model.load(base)
    sd = model.state_dict()
    for k, v in base.state_dict().items():
        assert torch.equal(sd[k], v), k
    # one training step with Ultralytics' detection loss on real COCO images reaches the blocks
    model.args = get_cfg(DEFAULT_CFG)
    model.train()
    imgs = coco_batch(val_images, 64)[:2]
    batch = {"img": imgs, "batch_idx": torch.tensor([0.0, 1.0]), "cls": torch.tensor([[0.0], [1.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.4, 0.6, 0.2, 0.2]])}  # fmt: skip
    loss, _ = model.loss(batch)
    loss.sum().backward()
    grads = [p.grad for m in model.model[STAGE].modules() if isinstance(m, BlockBottleneck) for p in m.attn.parameters()]
    assert torch.isfinite(loss.sum()) and (not grads or any(g is not None and g.abs().sum() > 0 for g in grads))


@pytest.mark.parametrize("block, host, family", CASES)
def test_composite_exports_to_onnx(block, host, family, tmp_path):
    import numpy as np
    import onnxruntime as ort

    model = trained_bn(build(composite_yaml(block, host, family), "n"))
    perturb_constants(model.model[STAGE], 0.05, torch.Generator().manual_seed(0))
    model = model.eval().fuse(verbose=False)
    from ultralytics.nn.modules.block import C2f

    for m in model.modules():  # as Ultralytics' exporter prepares C2f and its subclasses (split forward) and the head
        if isinstance(m, C2f):
            m.forward = m.forward_split
        if hasattr(m, "export"):
            m.export = True
    x = torch.rand(1, 3, 64, 64)
    path = tmp_path / "m.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), opset_version=19, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model(x)
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_identity_start_makes_a_composite_its_host():
    """With `identity_start: true` every block inside starts as the identity: the composite computes its host."""
    d = composite_yaml("CBAM", "C2f", "yolov8")
    plain = copy.deepcopy(d)
    plain["backbone"][STAGE][2] = "C2f"
    model, base = build({**d, "identity_start": True}, "n"), trained_bn(build(plain, "n"))
    model.load(base)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x)[0], base.eval()(x)[0])


def test_a_c3k2_composite_builds_the_head_a_c3k2_row_would():
    """Ultralytics' parser clears the head's legacy flag for C3k2 rows; a C3k2 composite row does the same, so a
    YAML whose every C3k2 became a composite keeps its head."""
    import re

    from ultralytics.nn.tasks import DetectionModel

    from yolo_attn import names

    text = names.require("yolo11.yaml").text()
    d = yaml.safe_load(re.sub(r"\bC3k2\b", "C3k2_SE", text))
    ref = DetectionModel(yaml.safe_load(text) | {"scale": "n"}, verbose=False)
    got = DetectionModel(d | {"scale": "n"}, verbose=False)
    assert got.model[-1].legacy == ref.model[-1].legacy
    assert [type(m).__name__ for m in got.model[-1].modules()] == [type(m).__name__ for m in ref.model[-1].modules()]
