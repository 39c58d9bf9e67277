"""Every ready config at every scale builds by bare name and runs; widths follow Ultralytics' rules at every scale."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import FULL, HAS_YOLO26, REPRESENTATIVE, built, ready_config_names

import yolo_attn
from yolo_attn import modules as M
from yolo_attn import registry

CONFIGS = ready_config_names()
SCALES = "nsmlx"
# every config at n; the other scales for the representative configs at s, and for all of them with --full
SCALED = [pytest.param(c, s, id=f"{c}-{s}", marks=() if s == "n" or (s == "s" and c in REPRESENTATIVE) else FULL)
          for c in CONFIGS for s in SCALES]  # fmt: skip
BLOCK_OF_TAG = {
    "ca": M.CA,
    "simam": M.SimAM,
    "cbam": M.CBAM,
    "asff": M.ASFF,
    "spdconv": M.SPDConv,
    "aff": M.AFF,
    "iaff": M.iAFF,
    "dcn": M.C2f_DCN,
    "se": M.SE,
    "eca": M.ECA,
    "gam": M.GAM,
    "gc": M.GCBlock,
    "scse": M.scSE,
    "bam": M.BAM,
    "triplet": M.TripletAttention,
    "strip": M.StripPooling,
    "van": M.VANAttention,
    "psa": M.PSA_p,
    "danet": M.DABlock,
    "rga": M.RGA,
    "resatt": M.ResidualAttention,
    "fan": M.FANChannelAttention,
    "stn": M.STN,
    "odconv": M.ODConv,
    "refconv": M.RefConv,
    "scconv": M.SCConv,
    "acmix": M.ACmix,
    "cfnet": M.CFNetTransition,
    "ema": M.EMA,
    "lska": M.LSKA,
    "lsk": M.LSKBlock,
    "sa": M.ShuffleAttention,
    "sk": M.SKAttention,
    "ela": M.ELA,
    "mlca": M.MLCA,
    "cpca": M.CPCA,
    "irmb": M.iRMB,
    "faster": M.C2f_Faster,
    "star": M.C2f_Star,
    "rfaconv": M.RFAConv,
    "rfcbam": M.RFCBAMConv,
    "rfca": M.RFCAConv,
    "scconv23": M.ScConv,
    "wtconv": M.WTConv,
    "slimneck": M.VoVGSCSP,
    "dysample": M.DySample,
    "carafe": M.CARAFE,
    "bifpn": M.BiFPN_Concat,
}
_base_cache: dict = {}


def build(name: str):
    return built(name)


def detect_inputs(model, imgsz=64) -> list[tuple]:
    """Shapes of the maps Detect receives."""
    got = []
    h = model.model[-1].register_forward_pre_hook(lambda mod, args: got.extend(tuple(x.shape) for x in args[0]))
    with torch.no_grad():
        model(torch.zeros(1, 3, imgsz, imgsz))
    h.remove()
    return got


def base_of(config: str, scale: str):
    family = config.split("-")[0]  # yolov8 | yolo11
    key = (family, scale)
    if key not in _base_cache:
        m = build(f"{family}{scale}.yaml")
        _base_cache[key] = (detect_inputs(m), sum(p.numel() for p in m.parameters()), _head(m))
    return _base_cache[key][:2]


def _head(model) -> tuple:
    """The head's form: its class and Ultralytics' legacy flag (8.4: YOLOv8's head vs YOLO11/26's)."""
    return type(model.model[-1]).__name__, getattr(model.model[-1], "legacy", None)


def test_every_block_has_ready_configs_for_every_family():
    tags = {c.split("-", 1)[1].removesuffix(".yaml") for c in CONFIGS}
    assert tags == set(BLOCK_OF_TAG)
    for tag in tags:
        assert {f"yolov8-{tag}.yaml", f"yolo11-{tag}.yaml"} <= set(CONFIGS)
    # YOLO26: one file per registry placement (CFNet rebuilds the backbone: no placement, v8/11 files only)
    shipped = {p.name for p in Path(yolo_attn.MODEL_YAMLS).glob("yolo26-*.yaml")}
    assert {c.removeprefix("yolo26-").removesuffix(".yaml") for c in shipped} == set(registry.PLACEMENTS)
    assert set(registry.PLACEMENTS) == set(BLOCK_OF_TAG) - {"cfnet"}


@pytest.mark.skipif(HAS_YOLO26, reason="this Ultralytics release builds YOLO26")
def test_yolo26_configs_on_a_release_without_yolo26_say_which_release_they_need():
    from ultralytics import __version__
    from ultralytics.nn.tasks import DetectionModel

    from yolo_attn.releases import UltralyticsTooOld

    with pytest.raises((UltralyticsTooOld, registry.LayerError)) as e:
        DetectionModel("yolo26n-cbam.yaml", verbose=False)
    assert "needs ultralytics>=8.4.0" in str(e.value) and __version__ in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UltralyticsTooOld) as e:  # Ultralytics' own YOLO26 names: not shipped before 8.4.0
        DetectionModel("yolo26n.yaml", verbose=False)
    assert re.match(r"yolo_attn: yolo26n?\.yaml: YOLO26 needs ultralytics>=8\.4\.0", str(e.value)), str(e.value)


@pytest.mark.parametrize("config, scale", SCALED)
def test_ready_config_builds_at_every_scale(config, scale):
    name = config.replace("-", f"{scale}-", 1)  # yolov8-ca.yaml -> yolov8s-ca.yaml
    model = build(name)
    assert model.yaml["scale"] == scale
    block = BLOCK_OF_TAG[config.split("-", 1)[1].removesuffix(".yaml")]
    ours = [m for m in model.modules() if isinstance(m, block)]
    assert ours, f"{name} contains no {block.__name__}"

    shapes, base_params = base_of(config, scale)
    assert detect_inputs(model) == shapes  # Detect sees exactly the base model's widths and strides
    # and the head is the base's (C2f_Faster in place of every C3k2 must not turn YOLO11's head into YOLOv8's)
    assert _head(model) == _base_cache[(config.split("-")[0], scale)][2], name
    if registry.BLOCKS[block.__name__].rule is registry.same_width:  # inserted rows: nothing else may change
        added = sum(p.numel() for m in ours for p in m.parameters())
        assert sum(p.numel() for p in model.parameters()) == base_params + added
        # Each inserted row sits on the path to Detect: a later layer reads its output. Blocks inside a composite
        # (C2f_ScConv, ...) are not rows; their host replaces a row the base model already reads.
        read = {x.i + j if j < 0 else j for x in model.model for j in ([x.f] if isinstance(x.f, int) else x.f)}
        rows = [m for m in ours if hasattr(m, "i")]
        from yolo_attn.modules.composite import Composite

        hosts = [m for m in model.model if any(isinstance(x, block) for x in m.modules())]
        assert rows or all(isinstance(m, Composite) for m in hosts), name
        assert all(m.i in read for m in rows), name


def _parse(rows, scale=(0.33, 0.5, 256), head=()):
    from ultralytics.nn.tasks import parse_model

    d = {"nc": 80, "scales": {"s": list(scale)}, "scale": "s", "backbone": copy.deepcopy(rows), "head": list(head)}
    model, _ = parse_model(d, ch=3, verbose=False)
    return model


def _widths(model, imgsz=32):
    x, outs = torch.zeros(1, 3, imgsz, imgsz), []
    model.eval()
    with torch.no_grad():
        for m in model:
            x = m([outs[j] for j in m.f] if isinstance(m.f, list) else (x if m.f == -1 else outs[m.f]))
            outs.append(x)
    return [o.shape[1] for o in outs]


def test_conv_like_blocks_scale_exactly_like_conv():
    for args in ([64, 3, 2], [100, 3, 2], [2048, 3, 2]):  # 2048 > max_channels 256
        ref = _widths(_parse([[-1, 1, "Conv", [16, 3, 1]], [-1, 1, "Conv", args]]))[-1]
        for block in ("SPDConv", "DCN"):
            got = _widths(_parse([[-1, 1, "Conv", [16, 3, 1]], [-1, 1, block, args]]))[-1]
            assert got == ref, (block, args)
    ref = _widths(_parse([[-1, 1, "Conv", [16, 3, 1]], [-1, 2, "C2f", [96, True]]]))[-1]
    assert _widths(_parse([[-1, 1, "Conv", [16, 3, 1]], [-1, 2, "C2f_DCN", [96, True]]]))[-1] == ref
    model = _parse([[-1, 1, "Conv", [16, 3, 1]], [-1, 3, "C2f_DCN", [96, True]]], scale=(0.67, 0.5, 256))
    assert len(model[1].m) == 2  # depth-scaled repeats, as C2f: max(round(3 * 0.67), 1)


def test_space_to_depth_reports_four_times_the_width():
    model = _parse([[-1, 1, "Conv", [32, 3, 1]], [-1, 1, "SPD", []], [-1, 1, "Conv", [32, 1, 1]]])
    assert _widths(model) == [16, 64, 16]
    assert model[2].conv.in_channels == 64


def test_fusion_blocks_receive_every_input_width():
    rows = [
        [-1, 1, "Conv", [32, 3, 2]],  # 0: 16 ch, /2
        [-1, 1, "Conv", [64, 3, 2]],  # 1: 32 ch, /4
        [-1, 1, "Conv", [128, 3, 2]],  # 2: 64 ch, /8
        [[0, 1, 2], 1, "ASFF", [48, 1]],  # 3: fused at /4, 24 ch
        [[-1, 1], 1, "AFF", [64]],  # 4: 24 + 32 -> 32
        [[1, 4], 1, "iAFF", []],  # 5: 32 + 32 -> 32 (equal widths, no c2)
    ]
    model = _parse(rows)
    assert model[3].resize[0][-1].conv.in_channels == 16 and model[3].resize[2].conv.in_channels == 64
    assert model[4].align[0].conv.in_channels == 24 and isinstance(model[4].align[1], torch.nn.Identity)
    assert _widths(model, 64)[3:] == [24, 32, 32]


def test_ready_configs_have_a_header_saying_where_and_why():
    for c in CONFIGS:
        text = (Path(yolo_attn.MODEL_YAMLS) / c).read_text()
        head = text.split("nc:")[0]
        assert "Where:" in head and "Why:" in head and "Paper:" in head, c
        d = yaml.safe_load(text)
        assert set(d["scales"]) == set(SCALES)


def test_generated_configs_are_up_to_date():
    """The ready configs written by scripts/make_ready_configs.py are what it writes now (edit the script, not them)."""
    import runpy

    from conftest import REPO

    script = runpy.run_path(str(REPO / "scripts" / "make_ready_configs.py"))
    targets = script["targets"]()
    assert len(targets) == (len(registry.PLACEMENTS) - len(script["HAND_WRITTEN"])) * 2 + len(registry.PLACEMENTS)  # generated v8/11 pairs, every placement on yolo26
    for family, suffix in targets:
        path = REPO / "model_yamls" / f"{family}-{suffix}.yaml"
        assert path.read_text() == script["build_text"](suffix, family), path.name
    for stem in script["SQR_BASES"]:  # RT-DETR + SQR: Ultralytics' YAML with the `sqr:` key, rows untouched
        path = REPO / "model_yamls" / f"{stem}-sqr.yaml"
        text = path.read_text()
        assert text == script["build_sqr_text"](stem), path.name
        assert yaml.safe_load(text) == {**yaml_of(f"{stem}.yaml"), "sqr": "selective"}
    shipped = {p.name for p in (REPO / "model_yamls").glob("rtdetr*.yaml")}
    assert shipped == {f"{stem}-sqr.yaml" for stem in script["SQR_BASES"]}


def yaml_of(name: str) -> dict:
    """Ultralytics' own model YAML, as shipped with the installed release."""
    import ultralytics

    (path,) = (Path(ultralytics.__file__).parent / "cfg" / "models").rglob(name)
    return yaml.safe_load(path.read_text())
