"""Selective Query Recollection on RT-DETR (yolo_attn.modules.sqr), switched on by the model YAML key `sqr:`.

Unit tests use a small RT-DETR (a five-Conv backbone, Ultralytics' RTDETRDecoder with 6 layers, hidden 64) so the
decoder's sets can be checked one by one on the CPU; the shipped rtdetr-l-sqr.yaml is checked for eval equality,
transfer, the plain CLI (train, val, safe-load) and ONNX export.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BIN, SAMPLE, coco_batch, ddp_worker_output, python, run

from yolo_attn.modules.sqr import MODES, SQRDecoder, schedule
from yolo_attn.registry import YAMLKeyError

IMGSZ = 160
TINY = {
    "nc": 80,
    "sqr": "selective",
    "backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [32, 3, 2]],
                 [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [64, 3, 2]]],
    "head": [[[2, 3, 4], 1, "RTDETRDecoder", ["nc", 64, 30, 2, 4, 6, 128]]],  # nc, hd, nq, ndp, nh, ndl, d_ffn
}  # fmt: skip


def rtdetr(cfg, **kw):
    from types import SimpleNamespace

    from ultralytics.nn.tasks import RTDETRDetectionModel

    torch.manual_seed(0)
    m = RTDETRDetectionModel(copy.deepcopy(cfg) if isinstance(cfg, dict) else cfg, verbose=False, **kw)
    m.nc, m.args = m.yaml["nc"], SimpleNamespace()  # what the trainer sets before the loss is built
    return m


def tiny(mode="selective"):
    return rtdetr({**TINY, "sqr": mode})


def coco_targets(split="train2017", n=4, imgsz=IMGSZ) -> dict:
    """A real COCO batch: n images of the repository's sample (resized, so the normalised boxes stay valid)."""
    images = sorted((SAMPLE / "images" / split).glob("*.jpg"))[:n]
    cls, boxes, idx = [], [], []
    for k, img in enumerate(images):
        for line in (SAMPLE / "labels" / split / (img.stem + ".txt")).read_text().split("\n"):
            if line.strip():
                c, *xywh = map(float, line.split())
                cls.append([c]), boxes.append(xywh), idx.append(k)
    return {"img": coco_batch(images, imgsz), "cls": torch.tensor(cls), "bboxes": torch.tensor(boxes),
            "batch_idx": torch.tensor(idx, dtype=torch.float)}  # fmt: skip


def decoder_inputs(model, x):
    """What RTDETRDecoder.forward hands its decoder (no denoising queries)."""
    head = model.model[-1]
    y, out = [], x
    for m in model.model[:-1]:
        out = m(out if m.f == -1 else y[m.f])
        y.append(out)
    feats, shapes = head._get_encoder_input([y[j] for j in head.f])
    embed, refer_bbox, _, _ = head._get_decoder_input(feats, shapes)
    return head, (embed, refer_bbox, feats, shapes, head.dec_bbox_head, head.dec_score_head, head.query_pos_head)


# ------------------------------------------------------------------------------------------------------------------
# The schedule
# ------------------------------------------------------------------------------------------------------------------
def test_recollection_schedule_follows_the_paper_and_the_official_code():
    sel = schedule("selective", 6)
    assert [len(t) for t in sel] == [1, 2, 3, 5, 8, 13] and sum(map(len, sel)) == 32
    # the official decoder takes query_list_reserve[start_q[s]:end_q[s]] (configs/sqr/deformable_detr_SQR_*.py)
    start_q, end_q = [0, 0, 1, 2, 4, 7], [1, 2, 4, 7, 12, 20]
    assert sel == [list(range(a, b)) for a, b in zip(start_q, end_q)]
    dense = schedule("dense", 6)
    assert [len(t) for t in dense] == [1, 2, 4, 8, 16, 32] and sum(map(len, dense)) == 63
    assert dense == [list(range(0, 2**s)) for s in range(6)]  # every set made so far
    assert [len(t) for t in schedule("selective", 3)] == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown recollection mode 'fibonacci'"):
        schedule("fibonacci", 6)


@pytest.mark.parametrize("mode, sets", [("selective", 32), ("dense", 63)])
def test_every_set_is_computed_as_its_own_chain_of_stages(mode, sets):
    """Each training output of the SQR decoder equals the set recomputed by hand: the stage's layer on the set's query
    and reference box, the stage's heads, RT-DETR's look-forward-twice box. The last set of each stage is the plain
    RT-DETR chain, which must equal Ultralytics' own decoder in training."""
    from ultralytics.nn.modules.utils import inverse_sigmoid

    model = tiny(mode).train()
    x = coco_targets()["img"]
    head, args = decoder_inputs(model, x)
    dec = head.decoder
    assert isinstance(dec, SQRDecoder) and dec.mode == mode
    embed, refer, feats, shapes, bbox_head, score_head, pos_mlp = args
    with torch.no_grad():
        boxes, logits = dec(*args)
        assert boxes.shape[:2] == logits.shape[:2] == (sets, x.shape[0])

        made = [(embed, refer.sigmoid(), None)]
        want_boxes, want_logits = [], []
        for s, layer in enumerate(dec.layers):
            for j in schedule(mode, 6)[s]:
                q, ref, prev = made[j]
                out = layer(q, ref, feats, shapes, None, None, pos_mlp(ref))
                delta = bbox_head[s](out)
                b = torch.sigmoid(delta + inverse_sigmoid(ref))
                want_boxes.append(b if prev is None else torch.sigmoid(delta + inverse_sigmoid(prev)))
                want_logits.append(score_head[s](out))
                made.append((out, b, b))
        torch.testing.assert_close(boxes, torch.stack(want_boxes), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logits, torch.stack(want_logits), atol=1e-4, rtol=1e-4)

        plain_boxes, plain_logits = super(SQRDecoder, dec).forward(*args)  # Ultralytics' DeformableTransformerDecoder
        last = np.cumsum([len(t) for t in schedule(mode, 6)]) - 1  # the last set of each stage
        torch.testing.assert_close(boxes[last], plain_boxes, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logits[last], plain_logits, atol=1e-4, rtol=1e-4)


def test_the_loss_sees_every_recollected_set():
    """Ultralytics' RT-DETR loss on a real COCO batch, denoising on: every one of the 32 sets (matching and
    denoising queries) gets a gradient in its boxes and its logits, so none is dropped on the way to the loss."""
    model = tiny().train()
    batch = coco_targets()
    img = batch["img"]
    targets = {"cls": batch["cls"].long().view(-1), "bboxes": batch["bboxes"], "batch_idx": batch["batch_idx"].long(),
               "gt_groups": [int((batch["batch_idx"] == i).sum()) for i in range(img.shape[0])]}  # fmt: skip
    preds = model.predict(img, batch=targets)
    boxes, logits, _, _, dn_meta = preds
    assert dn_meta is not None and boxes.shape[0] == logits.shape[0] == 32
    boxes.retain_grad(), logits.retain_grad()
    loss, _ = model.loss(batch, preds)
    assert torch.isfinite(loss)
    loss.backward()
    n_dn = dn_meta["dn_num_split"][0]
    for part, sl in (("denoising", slice(0, n_dn)), ("matching", slice(n_dn, None))):
        for name, t in (("boxes", boxes), ("logits", logits)):
            per_set = t.grad[:, :, sl].abs().flatten(1).sum(1)
            assert (per_set > 0).all(), f"{part} {name}: sets without gradient: {torch.nonzero(per_set == 0).flatten().tolist()}"  # noqa: E501
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing  # DDP without find_unused_parameters (compile=True) needs every parameter used


def test_loss_is_finite_and_decreases_on_coco():
    model = tiny().train()
    batch = coco_targets()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(16):
        torch.manual_seed(0)  # the same denoising queries every step: the same objective
        loss, items = model.loss(batch)
        parts = list(items.values()) if isinstance(items, dict) else [items]  # a dict from 8.4 on, a tensor before
        assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in parts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses  # 0.78-0.80 on 8.3.0 and 8.4


def test_eval_is_plain_rtdetr_exactly():
    """rtdetr-l-sqr.yaml and rtdetr-l.yaml with the same weights: the same state dict keys, the same eval outputs on
    real COCO images, and the SQR training path only in training mode."""
    sqr, plain = rtdetr("rtdetr-l-sqr.yaml"), rtdetr("rtdetr-l.yaml")
    assert isinstance(sqr.model[-1].decoder, SQRDecoder) and not isinstance(plain.model[-1].decoder, SQRDecoder)
    assert type(sqr.model[-1]) is type(plain.model[-1])  # the head is Ultralytics' RTDETRDecoder: exporters see RT-DETR
    assert list(sqr.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(sqr.state_dict())
    x = coco_targets("val2017")["img"]
    with torch.no_grad():
        a, b = sqr.eval()(x), plain.eval()(x)
    assert (a[0] - b[0]).abs().max() <= 1e-6
    for ra, rb in zip(a[1][:2], b[1][:2]):  # the eval raw outputs: the eval_idx layer only
        assert ra.shape[0] == 1 and (ra - rb).abs().max() <= 1e-6


def test_transfer_both_ways_places_every_tensor():
    from ultralytics import RTDETR

    src = rtdetr("rtdetr-l-sqr.yaml")
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    plain = RTDETR("rtdetr-l.yaml")
    plain.load(src)
    back = RTDETR("rtdetr-l-sqr.yaml")
    back.load(plain.model)
    for target in (plain.model, back.model):
        sd = target.state_dict()
        assert set(sd) == set(src.state_dict())
        assert all(torch.equal(sd[k], v) for k, v in src.state_dict().items())
    assert isinstance(back.model.model[-1].decoder, SQRDecoder)


# ------------------------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------------------------
def test_unknown_mode_is_one_line_naming_the_key():
    with pytest.raises(YAMLKeyError) as e:
        tiny("fibonacci")
    assert str(e.value).splitlines() == [
        "yolo_attn: model YAML key 'sqr': unknown recollection mode 'fibonacci'; expected selective (the paper's "
        "method), dense (its ablation), or false"
    ]


def test_sqr_on_a_model_without_an_rtdetr_decoder_is_refused():
    from ultralytics.nn.tasks import DetectionModel

    d = yaml_of("yolov8.yaml")
    d.update(sqr="selective", scale="n")
    with pytest.raises(YAMLKeyError) as e:
        DetectionModel(d, verbose=False)
    assert str(e.value).splitlines() == [
        "yolo_attn: model YAML key 'sqr': query recollection trains an RT-DETR decoder, but the model's head (layer "
        "22) is Detect, not RTDETRDecoder; use it with an RT-DETR YAML such as rtdetr-l.yaml or remove the key"
    ]
    off = rtdetr({**TINY, "sqr": False})  # false switches it off
    assert not isinstance(off.model[-1].decoder, SQRDecoder)
    assert all(isinstance(rtdetr({**TINY, "sqr": m}).model[-1].decoder, SQRDecoder) for m in (*MODES, True))


def yaml_of(name: str) -> dict:
    from ultralytics.nn.tasks import yaml_model_load

    return yaml_model_load(name)


@pytest.mark.slow
def test_cli_rejects_a_bad_mode(tmp_path, sample_data):
    bad = tmp_path / "rtdetr-bad.yaml"
    text = (Path(__import__("yolo_attn").MODEL_YAMLS) / "rtdetr-l-sqr.yaml").read_text()
    bad.write_text(text.replace("sqr: selective", "sqr: selectiv"))
    p = run([BIN / "yolo", "train", f"model={bad}", f"data={sample_data}", "epochs=1", "device=cpu"], tmp_path, check=False)
    assert p.returncode != 0
    assert "yolo_attn: model YAML key 'sqr': unknown recollection mode 'selectiv'" in p.stdout + p.stderr


# ------------------------------------------------------------------------------------------------------------------
# What a user runs
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_data) -> Path:
    """`yolo train model=rtdetr-l-sqr.yaml` one epoch on the COCO sample, from another directory, no import."""
    out = tmp_path_factory.mktemp("sqr")
    run([BIN / "yolo", "train", "model=rtdetr-l-sqr.yaml", f"data={sample_data}", "epochs=1", f"imgsz={IMGSZ}",
         "batch=4", "device=cpu", "workers=0", "plots=False", f"project={out}", "name=t", "exist_ok=True"], out)  # fmt: skip
    return out / "t" / "weights" / "best.pt"


@pytest.mark.slow
@pytest.mark.parametrize("safe", [False, True])
def test_cli_trains_then_val_reloads_in_a_fresh_process(trained, sample_data, tmp_path, safe):
    env = {"ULTRALYTICS_SAFE_LOAD": "1"} if safe else {}
    p = run([BIN / "yolo", "val", f"model={trained}", f"data={sample_data}", f"imgsz={IMGSZ}", "batch=4",
             "device=cpu", "workers=0", "plots=False", f"project={tmp_path}"], tmp_path, **env)  # fmt: skip
    assert "rtdetr-l-sqr summary" in p.stdout + p.stderr
    q = python("import sys; from ultralytics import RTDETR; m = RTDETR(sys.argv[1]).model; "
               "print(type(m.model[-1].decoder).__name__, m.model[-1].decoder.mode, m.yaml['sqr'])",
               tmp_path, [trained], **env)  # fmt: skip
    assert q.stdout.split()[-3:] == ["SQRDecoder", "selective", "selective"]


@pytest.mark.slow
def test_onnx_export_equals_plain_rtdetr(trained, tmp_path):
    """The trained SQR checkpoint and a plain rtdetr-l checkpoint with the same weights, both exported by `yolo
    export`: the two ONNX files give the same outputs in onnxruntime on real COCO images, equal to PyTorch's. After
    one epoch the class scores are nearly uniform, so ties would reorder the top-k; the decoder heads get seeded
    noise first (in both models alike)."""
    import onnxruntime as ort

    from conftest import checkpoint_model

    ckpt = torch.load(trained, weights_only=False)
    sqr = ckpt["model"].float()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in sqr.named_parameters():
            if "dec_score_head" in n or "dec_bbox_head" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    plain = rtdetr("rtdetr-l.yaml")
    plain.load_state_dict(sqr.state_dict())
    for attr in ("names", "args", "stride"):
        setattr(plain, attr, getattr(sqr, attr))
    # the head caches its anchors from the last validation as plain attributes, which the checkpoint's .half() rounds
    # (RTDETRDetectionModel._apply); the export at the same imgsz reuses them, for plain RT-DETR checkpoints alike
    for attr in ("anchors", "valid_mask", "shapes"):
        if attr in vars(sqr.model[-1]):
            setattr(plain.model[-1], attr, getattr(sqr.model[-1], attr))
    ckpts = {"sqr": tmp_path / "rtdetr-sqr.pt", "plain": tmp_path / "rtdetr-plain.pt"}
    for name, model in (("sqr", sqr), ("plain", plain)):
        torch.save({**ckpt, "model": copy.deepcopy(model).half()}, ckpts[name])  # the same checkpoint but the model
        run([BIN / "yolo", "export", f"model={ckpts[name]}", "format=onnx", f"imgsz={IMGSZ}"], tmp_path)
    x = coco_targets("val2017")["img"]
    outs = {}
    for name, path in ckpts.items():
        sess = ort.InferenceSession(str(path.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
        feed = sess.get_inputs()[0].name
        outs[name] = np.concatenate([sess.run(None, {feed: x[i : i + 1].numpy()})[0] for i in range(len(x))])
    assert np.abs(outs["sqr"] - outs["plain"]).max() <= 1e-6
    with torch.no_grad():
        ref = checkpoint_model(ckpts["sqr"]).fuse(verbose=False)(x)[0].numpy()
    assert outs["sqr"].shape == ref.shape
    assert np.abs(outs["sqr"][..., 4] - ref[..., 4]).max() <= 1e-4  # the sorted scores
    # every exported detection is one of PyTorch's (queries whose scores agree to 1e-6 may swap places in the top-k)
    for got, want in zip(outs["sqr"], ref):
        close = (np.abs(got[:, None, 4] - want[None, :, 4]) <= 1e-4) & (got[:, None, 5] == want[None, :, 5])
        box_err = np.abs(got[:, None, :4] - want[None, :, :4]).max(-1)
        assert np.where(close, box_err, np.inf).min(1).max() <= 1e-4


# ------------------------------------------------------------------------------------------------------------------
# compile=True and DDP
# ------------------------------------------------------------------------------------------------------------------
def test_the_training_decoder_traces_as_one_graph():
    """compile=True: torch.compile sees the recollection loop (32 sets, unrolled) as one graph, no break."""
    import torch._dynamo

    head, args = decoder_inputs(tiny().train(), coco_targets()["img"])
    torch._dynamo.reset()
    e = torch._dynamo.explain(head.decoder)(*args)
    assert e.graph_break_count == 0, e.break_reasons


DDP_STEP = """
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[1])
from test_sqr import tiny, coco_targets
rank = int(sys.argv[2])
dist.init_process_group("gloo", init_method="file://" + sys.argv[3], rank=rank, world_size=2)
torch.set_num_threads(1)
model = tiny().train()
ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)  # as Ultralytics' trainer wraps it
batch = coco_targets(n=4)
keep = batch["batch_idx"] // 2 == rank  # each rank its own two images
part = {"img": batch["img"][2 * rank : 2 * rank + 2], "cls": batch["cls"][keep], "bboxes": batch["bboxes"][keep],
        "batch_idx": batch["batch_idx"][keep] - 2 * rank}
opt = torch.optim.SGD(model.parameters(), lr=1e-3)
loss, _ = ddp(part)
loss.backward()
opt.step()
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
others = [torch.zeros_like(flat) for _ in range(2)]
dist.all_gather(others, flat)
print("SETS", model.model[-1].decoder.plan[-1].__len__(), "SAME", bool(torch.equal(others[0], others[1])), float(loss))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_two_processes_train_one_step_in_sync(tmp_path):
    """Two gloo processes, DistributedDataParallel as Ultralytics' trainer wraps the model, one SQR training step
    each on its own COCO images: the gradients all-reduce and both ranks end with the same weights."""
    import subprocess
    import sys

    from conftest import env

    script = tmp_path / "ddp_step.py"
    script.write_text(DDP_STEP)
    here, init = Path(__file__).parent, tmp_path / "rendezvous"
    procs = [subprocess.Popen([sys.executable, str(script), str(here), str(r), str(init)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env(), cwd=tmp_path) for r in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
        words = out.split()
        assert words[words.index("SETS") + 1] == "13" and words[words.index("SAME") + 1] == "True", out


@pytest.mark.slow
def test_ddp_worker_builds_the_sqr_decoder(tmp_path, sample_data):
    """Ultralytics' own DDP launcher file for `yolo train model=rtdetr-l-sqr.yaml`, run in a fresh interpreter: the
    worker rebuilds the model from the YAML name with the SQR decoder."""
    probe = "trainer.setup_model(); print('BUILT', type(trainer.model.model[-1].decoder).__name__)"
    out = ddp_worker_output("ultralytics.models.rtdetr.train.RTDETRTrainer", "rtdetr-l-sqr.yaml", sample_data,
                            tmp_path, probe)  # fmt: skip
    assert "BUILT SQRDecoder" in out


def test_sqr_suffix_composes_onto_any_rtdetr_name():
    """`-sqr` as the last suffix of a composed name sets the key on top of the rows before it; on a non-RT-DETR
    base it is refused in one line."""
    from ultralytics import RTDETR, YOLO

    from yolo_attn.compose import ComposeError

    m = RTDETR("rtdetr-l-ca-sqr.yaml").model
    assert isinstance(m.model[-1].decoder, SQRDecoder) and any(type(x).__name__ == "CA" for x in m.modules())
    assert m.yaml["sqr"] == "selective"
    with pytest.raises(ComposeError) as e:
        YOLO("yolo11n-sqr.yaml")
    msg = str(e.value)  # the name as typed (8.4 looks it up first) or its unified form (8.3 does)
    assert "\n" not in msg and re.fullmatch(
        r"yolo_attn: yolo11n?-sqr\.yaml: SQR \(suffix sqr\) trains RT-DETR decoders, and the head of yolo11n?\.yaml is "
        r"Detect; use it on rtdetr-l, rtdetr-x, rtdetr-resnet50 or rtdetr-resnet101", msg), msg
