"""Every registered block in one model: built from a YAML by name, trained a step (every parameter gets a gradient),
fused as Ultralytics fuses for inference (same outputs), saved, and reloaded in fresh processes, normally and with
ULTRALYTICS_SAFE_LOAD=1, with identical outputs (to float rounding). A block added to the registry must be added to
this YAML."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from conftest import python

from yolo_attn.registry import BLOCKS

CHAIN = [  # channel-preserving blocks, in a row at P2/4, 64 channels, 16x16 at imgsz 64
    ["SE", []], ["ECA", []], ["GAM", []], ["GCBlock", []], ["scSE", []], ["BAM", []], ["CA", []], ["SimAM", []],
    ["CBAM", []], ["MSCAM", []], ["TripletAttention", []], ["StripPooling", []], ["LKA", []], ["VANAttention", []],
    ["STN", []], ["ResidualAttention", [2]], ["PAM", []], ["CAM", []], ["DABlock", []], ["PSA_p", []], ["PSA_s", []],
    ["RGA_S", [8]], ["RGA_C", [8]], ["RGA", [8]], ["FANChannelAttention", []], ["CFNetFocal", []],
    ["ODConv", [64, 3, 1]], ["RefConv", [64, 3, 1]], ["SCConv", [64, 3, 1]], ["ACmix", [64, 3, 1]], ["DCN", [64, 3, 1]],
    ["C2f_DCN", [64, True]],
    ["EMA", []], ["ShuffleAttention", [8]], ["SKAttention", []], ["ELA", []], ["MLCA", []], ["CPCA", []], ["LSKA", []],
    ["LSKBlock", []], ["WTConv", []], ["ScConv", []], ["PConv", []], ["FasterBlock", []], ["StarBlock", []],
    ["iRMB", []], ["C2f_Faster", [64, True]], ["C2f_Star", [64, True]], ["VoVGSCSP", [64]], ["GSConv", [64, 3, 1]],
    ["RFAConv", [64, 3, 1]], ["RFCBAMConv", [64, 3, 1]], ["RFCAConv", [64, 3, 1]],
    ["DySample", []], ["Conv", [64, 3, 2]], ["CARAFE", []], ["Conv", [64, 3, 2]],  # x2 up, then back to 16x16
]  # fmt: skip


def every_block_yaml() -> dict:
    rows = [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [64, 3, 2]]]
    rows += [[-1, 1, name, args] for name, args in CHAIN]
    p3 = len(rows) + 1
    rows += [[-1, 1, "SPD", []], [-1, 1, "Conv", [64, 1, 1]]]  # P3/8, 256 -> 64 channels
    p4 = len(rows)
    rows += [[-1, 1, "SPDConv", [128, 3, 2]]]  # P4/16
    p5 = len(rows)
    rows += [[-1, 1, "Conv", [128, 3, 2]]]  # P5/32
    asff = len(rows)
    rows += [
        [[p3, p4, p5], 1, "ASFF", [64, 0]],
        [[p3, p4, p5], 1, "CFNetTransition", [64]],
        [[asff, asff + 1], 1, "AFF", []],
        [[-1, asff], 1, "iAFF", []],
        [[-1, asff], 1, "BiFPN_Concat", []],
    ]
    head = [[[len(rows) - 1, p4, p5], 1, "Detect", ["nc"]]]
    return {"nc": 3, "depth_multiple": 1.0, "width_multiple": 1.0, "backbone": rows, "head": head}


def test_the_yaml_covers_every_registered_block():
    names = {r[2] for r in every_block_yaml()["backbone"]}
    assert set(BLOCKS) <= names, f"add to tests/test_every_block.py: {sorted(set(BLOCKS) - names)}"


TRAIN_AND_SAVE = """
import sys, numpy as np, torch
from ultralytics import YOLO
torch.manual_seed(0)
model = YOLO(sys.argv[1])
net = model.model.train()
for m in net.modules():  # move constant-initialised parameters (zero-init convs, gates, scales) off their start
    if type(m).__module__.startswith("yolo_attn.modules"):
        with torch.no_grad():
            for p in m.parameters():
                if p.numel() and bool((p == p.flatten()[0]).all()):
                    p.add_(torch.randn_like(p), alpha=0.05)
x = torch.rand(2, 3, 64, 64)
out = net(x)
def tensors(o):
    if isinstance(o, torch.Tensor):
        return [o]
    items = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else []
    return [t for i in items for t in tensors(i)]
sum(t.float().square().mean() for t in tensors(out)).backward()
# DDP needs a gradient for every parameter; a zero one is fine (a tiny SE bottleneck's ReLUs may all be off)
dead = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
print("dead:", dead)
net.eval()
with torch.no_grad():
    y = net(x[:1])[0]
np.save(sys.argv[3], y.numpy())
import copy
with torch.no_grad():  # Ultralytics' fuse (what val/predict/export do): BN folding, RefConv's deploy form
    fused = copy.deepcopy(net).fuse(verbose=False)(x[:1])[0]
print("fused max rel diff:", float(((fused - y).abs().max() / y.abs().max())))
torch.save({"model": net, "train_args": {}}, sys.argv[2])
print("saved", tuple(y.shape))
"""

RELOAD = """
import sys, numpy as np, torch
from ultralytics import YOLO
torch.manual_seed(0)
x = torch.rand(2, 3, 64, 64)
net = YOLO(sys.argv[1]).model.float().eval()
with torch.no_grad():
    y = net(x[:1])[0]
np.save(sys.argv[2], y.numpy())
print("classes", sorted({type(m).__name__ for m in net.modules() if type(m).__module__.startswith("yolo_attn")}))
"""


@pytest.mark.slow
def test_every_block_trains_saves_and_reloads(tmp_path):
    cfg = tmp_path / "every_block.yaml"
    cfg.write_text(yaml.safe_dump(every_block_yaml(), default_flow_style=None, sort_keys=False))
    ckpt, ref = tmp_path / "every_block.pt", tmp_path / "ref.npy"
    p = python(TRAIN_AND_SAVE, tmp_path, args=[cfg, ckpt, ref])
    assert "dead: []" in p.stdout, p.stdout[-3000:]
    assert float(p.stdout.split("fused max rel diff:")[1].split()[0]) < 1e-5
    for safe in ("0", "1"):
        got = tmp_path / f"got{safe}.npy"
        p = python(RELOAD, tmp_path, args=[ckpt, got], ULTRALYTICS_SAFE_LOAD=safe)
        loaded = set(eval(p.stdout.split("classes", 1)[1].strip()))
        assert set(BLOCKS) <= loaded, sorted(set(BLOCKS) - loaded)
        a, b = np.load(got), np.load(ref)
        # equal up to float rounding: BLAS may round differently in another process (buffer alignment)
        err = np.abs(a - b).max()
        assert err <= 1e-5 * max(1.0, np.abs(b).max()), (f"ULTRALYTICS_SAFE_LOAD={safe}", err)
