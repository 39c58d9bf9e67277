"""The YAML editor and the `yolo-attn` command, run as a user runs them (subprocesses, other directories)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import BIN, run, save_checkpoint, tensors_of
from conftest import yolo_attn as yolo_attn_cli

import yolo_attn
from yolo_attn import names

FAMILIES = ("yolov8.yaml", "yolo11.yaml", "yolo26.yaml")


cli = yolo_attn_cli  # in this process, through cli.main (test_cli_script_smoke runs the console script)


def build(path, scale="n"):
    from ultralytics.nn.tasks import DetectionModel

    d = yaml.safe_load(Path(path).read_text())
    d["scale"] = scale
    return DetectionModel(d, verbose=False).eval()


def structure(model) -> list[tuple]:
    """What a YAML means once built: each layer's type, wiring and output width."""
    widths = []
    x, outs = torch.zeros(1, 3, 64, 64), []
    with torch.no_grad():
        for m in model.model[:-1]:
            x = m([outs[j] for j in m.f] if isinstance(m.f, list) else (x if m.f == -1 else outs[m.f]))
            outs.append(x)
            widths.append(x.shape[1])
    return [(type(m).__name__, m.f, w) for m, w in zip(model.model, widths)] + [("Detect", model.model[-1].f, None)]


def detect_inputs(model, x) -> list[torch.Tensor]:
    """The feature maps Detect receives."""
    got = []
    h = model.model[-1].register_forward_pre_hook(lambda mod, args: got.extend(t.clone() for t in args[0]))
    model(x)
    h.remove()
    return got


@pytest.mark.parametrize("family", FAMILIES)
def test_insert_at_backbone_stages_keeps_the_base_function(family, tmp_path):
    """With identity start, the edited model loaded from the base computes exactly the base: every consumer was
    redirected correctly. With the gates open the blocks change the output and all their parameters learn."""
    out = tmp_path / family.replace(".yaml", "-cbam.yaml")
    p = cli("insert", family, "CBAM", "--at", "backbone-p3,backbone-p4,backbone-p5", "--identity-start", "-o", out,
            cwd=tmp_path)  # fmt: skip
    assert "inserted CBAM as layer 5 after layer 4" in p.stdout and "layer 11" in p.stdout
    torch.manual_seed(0)
    base = build(names.require(family).path)
    edited = build(out)
    assert [i for i, m in enumerate(edited.model) if type(m).__name__ == "CBAM"] == [5, 8, 11]
    assert edited.model[-1].f == [i + 3 for i in base.model[-1].f]  # Detect reads the same layers, shifted
    edited.load(base)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(edited(x)[0], base(x)[0])
        ref, got = detect_inputs(base, x), detect_inputs(edited, x)
        assert all(torch.equal(a, b) for a, b in zip(ref, got))
        for m in edited.modules():
            if getattr(m, "gate", None) is not None:
                m.gate.fill_(0.5)
        opened = detect_inputs(edited, x)
        assert all((a - b).abs().max() > 1e-2 * a.abs().max() for a, b in zip(ref, opened))  # relative: tiny at init
    edited.train()
    sum(t.float().square().mean() for t in tensors_of(edited(x))).backward()
    dead = [n for n, p in edited.named_parameters() if "model.5." in n and p.grad is None]
    assert not dead


@pytest.mark.parametrize("family", FAMILIES)
def test_insert_at_neck_outputs_feeds_detect(family, tmp_path):
    out = tmp_path / "neck.yaml"
    cli("insert", family, "CA", "--at", "neck-outputs", "--args", "[16]", "-o", out, cwd=tmp_path)
    base, edited = build(names.require(family).path), build(out)
    ca = [i for i, m in enumerate(edited.model) if type(m).__name__ == "CA"]
    assert edited.model[-1].f == ca and len(ca) == 3
    for j, i in enumerate(ca):  # each CA reads the layer Detect used to read
        assert edited.model[i].f == -1 and type(edited.model[i - 1]) is type(base.model[base.model[-1].f[j]])
    assert edited.model[ca[0]].conv1.out_channels == max(8, edited.model[ca[0] - 1].cv2.conv.out_channels // 16)


@pytest.mark.parametrize("family, block", [("yolov8", "ca"), ("yolov8", "simam"), ("yolo11", "cbam")])
def test_insert_reproduces_the_ready_configs(family, block, tmp_path):
    name = {"ca": "CA", "simam": "SimAM", "cbam": "CBAM"}[block]
    out = tmp_path / "x.yaml"
    cli("insert", f"{family}.yaml", name, "--after", "4,6,8", "-o", out, cwd=tmp_path)
    ready = yolo_attn.MODEL_YAMLS / f"{family}-{block}.yaml"
    assert structure(build(out, "s")) == structure(build(ready, "s"))


@pytest.mark.parametrize(
    "family, layers, block, ready",
    [
        ("yolov8", "1,3,5,7,16,19", "SPDConv", "spdconv"),
        ("yolov8", "11,14,17,20", "AFF", "aff"),
        ("yolov8", "11,14,17,20", "iAFF", "iaff"),
        ("yolov8", "4,6,8", "C2f_DCN", "dcn"),
        ("yolo11", "1,3,5,7,17,20", "SPDConv", "spdconv"),
        ("yolo11", "12,15,18,21", "AFF", "aff"),
        ("yolo11", "4,6,8", "C2f_DCN", "dcn"),
    ],
)
def test_replace_reproduces_the_ready_configs(family, layers, block, ready, tmp_path):
    out = tmp_path / "x.yaml"
    cli("replace", f"{family}.yaml", "--layers", layers, "--with", block, "-o", out, cwd=tmp_path)
    for scale in "nm":
        assert structure(build(out, scale)) == structure(build(yolo_attn.MODEL_YAMLS / f"{family}-{ready}.yaml", scale))


def test_replace_in_yolo26(tmp_path):
    out = tmp_path / "y26.yaml"
    cli("replace", "yolo26.yaml", "--layers", "1,3", "--with", "DCN", "-o", out, cwd=tmp_path)
    m = build(out)
    assert [type(m.model[i]).__name__ for i in (1, 3)] == ["DCN", "DCN"]
    out2 = tmp_path / "y26aff.yaml"
    cli("replace", "yolo26.yaml", "--layers", "12,15", "--with", "AFF", "-o", out2, cwd=tmp_path)
    m = build(out2)
    assert [type(m.model[i]).__name__ for i in (12, 15)] == ["AFF", "AFF"] and m.model[-1].f == [16, 19, 22]


def test_comments_kept_and_input_untouched(tmp_path):
    src = tmp_path / "mine.yaml"
    text = (names.require("yolov8.yaml").path).read_text().replace("# cat backbone P3", "# my note: cat P3")
    src.write_text(text)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "mine-ca.yaml"
    cli("insert", src, "CA", "--after", "4", "-o", out, cwd=tmp_path)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
    new = out.read_text()
    assert new.startswith("# Made by: yolo-attn insert")
    for line in text.splitlines():
        if line.strip().startswith("#"):
            assert line in new
    assert "# my note: cat P3" in new
    assert "- [-1, 1, Conv, [512, 3, 2]] # 6-P4/16" in new  # index comments follow their row (was 5-P4/16)
    cli("insert", src, "SimAM", "--after", "2", "--in-place", cwd=tmp_path)
    assert "SimAM" in src.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["insert", "yolov8.yaml", "CBMA", "--after", "4", "-o", "o.yaml"], "unknown block 'CBMA'; did you mean CBAM"),
        (["insert", "yolov8.yaml", "CA", "--after", "40", "-o", "o.yaml"], "position 40 is not a layer of"),
        (["insert", "yolov8.yaml", "CA", "--after", "22", "-o", "o.yaml"], "layer 22 is the Detect head"),
        (["insert", "yolov8.yaml", "CA", "--after", "4", "--at", "neck-outputs", "-o", "o.yaml"], "exactly one of"),
        (["insert", "yolov8.yaml", "CA", "-o", "o.yaml"], "exactly one of --after"),
        (["insert", "yolov8.yaml", "CA", "--at", "backbone-p9", "-o", "o.yaml"], "unknown role 'backbone-p9'"),
        (["insert", "yolov8.yaml", "CA", "--after", "4,x", "-o", "o.yaml"], "--after must be comma-separated"),
        (["insert", "yolov8.yaml", "CA", "--after", "4"], "give the output file with -o"),
        (["insert", "yolov8.yaml", "ASFF", "--after", "4", "-o", "o.yaml"], "insert adds channel-preserving blocks"),
        (["insert", "yolov8.yaml", "CA", "--after", "4", "--args", "[0]", "-o", "o.yaml"],
         "does not build, nothing written to o.yaml: yolo_attn: YAML layer 5 (CA): reduction must be"),
        (["insert", "nope.yaml", "CA", "--after", "4", "-o", "o.yaml"], "no model YAML named 'nope.yaml'"),
        (["insert", "yolov8-ca.yaml", "CA", "--after", "4", "--in-place"], "refusing to edit yolov8-ca.yaml in place: it is a shipped ready config"),
        (["replace", "yolov8.yaml", "--layers", "0", "--with", "SPDConv", "-o", "o.yaml"], None),
        (["replace", "yolov8.yaml", "--layers", "2", "--with", "DCN", "-o", "o.yaml"], "layer 2 is C2f; no drop-in C2f -> DCN"),
        (["info", "missing.pt"], "no checkpoint 'missing.pt'"),
        (["info", "model.onnx"], "MODEL must be a .yaml config or a .pt checkpoint"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line(args, message, tmp_path):
    p = cli(*args, cwd=tmp_path, check=False)
    if message is None:  # layer 0 is a strided Conv: allowed (the ready configs keep the stem by choice)
        assert p.returncode == 0, p.stderr
        return
    assert p.returncode == 2, (p.stdout, p.stderr)
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("yolo-attn: error: ") and message in err[0], p.stderr
    assert not (tmp_path / "o.yaml").exists()


def test_replace_rejects_a_stride_one_conv(tmp_path):
    src = tmp_path / "s1.yaml"
    src.write_text(names.require("yolov8.yaml").path.read_text().replace("[-1, 1, Conv, [256, 3, 2]]", "[-1, 1, Conv, [256, 3, 1]]", 1))
    p = cli("replace", src, "--layers", "3", "--with", "SPDConv", "-o", "o.yaml", cwd=tmp_path, check=False)
    assert p.returncode == 2 and "layer 3 is a stride-1 Conv; SPDConv replaces strided convs" in p.stderr


def test_list_json(tmp_path):
    rows = json.loads(cli("list", "--json", cwd=tmp_path).stdout)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(yolo_attn.BLOCKS) | {"SQR"}
    assert by_name["SQR"]["ready_configs"] == [f"rtdetr-{v}-sqr.yaml" for v in ("l", "resnet101", "resnet50", "x")]
    assert {"yolov8-ca.yaml", "yolo11-ca.yaml"} <= set(by_name["CA"]["ready_configs"])
    assert by_name["DCN"]["ready_configs"] and by_name["ASFF"]["yaml_args"] == "[c2, level=0, compress=16]"
    assert by_name["CBAM"]["class"] == "yolo_attn.modules.attention.CBAM"
    text = cli("list", cwd=tmp_path).stdout
    assert "Coordinate Attention" in text


def test_info_yaml_and_checkpoint(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    info = json.loads(cli("info", "yolov8s-cbam.yaml", "--imgsz", "320", "--json", cwd=tmp_path).stdout)
    assert info["parameters"] == sum(p.numel() for p in DetectionModel("yolov8s-cbam.yaml", verbose=False).parameters())
    base = info["base"]
    assert base["config"] == "yolov8s.yaml"
    assert [a["layer"] for a in base["added_layers"]] == [5, 8, 11] and not base["removed_layers"]
    assert base["parameters_delta"] == info["parameters"] - base["parameters"] > 0
    info = json.loads(cli("info", "yolo11n-spdconv.yaml", "--json", cwd=tmp_path).stdout)
    assert [r["layer"] for r in info["base"]["replaced_layers"]] == [1, 3, 5, 7, 17, 20]
    assert len(info["table"]) == info["layers"] == 24
    # a checkpoint
    ckpt = save_checkpoint(DetectionModel("yolov8n-simam.yaml", verbose=False), tmp_path / "ck" / "weights" / "last.pt")
    text = cli("info", ckpt, cwd=tmp_path).stdout
    assert "against yolov8n.yaml: +0 parameters" in text and "+ layer 5: SimAM" in text


def test_edited_file_takes_a_scale_letter(tmp_path):
    cli("insert", "yolov8.yaml", "CBAM", "--at", "backbone-outputs", "-o", tmp_path / "yolov8-mycbam.yaml", cwd=tmp_path)
    code = "from ultralytics import YOLO; m = YOLO('yolov8s-mycbam.yaml'); print(m.model.yaml['scale'], m.model.model[5].type)"
    out = run([BIN / "python", "-c", code], tmp_path).stdout.split()
    assert out[-2:] == ["s", "yolo_attn.modules.attention.CBAM"]


# ----------------------------------------------------------------------------------------------------------------
# One name, one meaning: every command reads composed, chained and task-variant names as `yolo train` does
# ----------------------------------------------------------------------------------------------------------------
NAMES = ["yolo11n-cbam-aff.yaml", "yolo11n-seg-cbam.yaml"]


@pytest.mark.parametrize("name", NAMES)
def test_every_command_takes_composed_names(name, tmp_path, val_images):
    from ultralytics import YOLO

    from yolo_attn import names as resolver

    trained = YOLO(name).model  # what `yolo train model=NAME` builds
    layers = [(type(m).__name__, m.f) for m in trained.model]
    n_params = sum(p.numel() for p in trained.parameters())

    shown = cli("show", name, cwd=tmp_path).stdout
    assert shown == resolver.require(name).text() and shown.startswith("# yolo_attn composed config:")

    info = json.loads(cli("info", name, "--imgsz", 64, "--json", cwd=tmp_path).stdout)
    assert info["parameters"] == n_params and [(r["module"], r["from"]) for r in info["table"]] == layers
    base = resolver.base_of(name)
    assert info["base"]["config"] == base and base == name.replace("-cbam", "").replace("-aff", "")
    assert info["base"]["parameters"] == sum(p.numel() for p in YOLO(base).model.parameters())
    assert {a["module"] for a in info["base"]["added_layers"]} == {"CBAM"}

    out = tmp_path / "edited.yaml"
    cli("insert", name, "SimAM", "--at", "backbone-p5", "-o", out, cwd=tmp_path)
    edited = YOLO(str(out)).model
    assert [type(m).__name__ for m in edited.model].count("SimAM") == 1
    assert type(edited) is type(trained) and sum(p.numel() for p in edited.parameters()) == n_params

    out2 = tmp_path / "replaced.yaml"  # layer 1: the first stride-2 Conv of every YOLO family
    cli("replace", name, "--layers", 1, "--with", "SPDConv", "-o", out2, cwd=tmp_path)
    assert type(YOLO(str(out2)).model.model[1]).__name__ == "SPDConv"

    viz = cli("viz", name, val_images[0], "--imgsz", 64, "--out", tmp_path / "viz", cwd=tmp_path).stdout
    assert f"wrote {sum(m == 'CBAM' for m, _ in layers) + sum(m == 'AFF' for m, _ in layers)} attention maps" in viz

    p = cli("insert", name, "CA", "--after", 4, "--in-place", cwd=tmp_path, check=False)
    assert p.returncode == 2 and "refusing to edit" in p.stderr and "a composed config in the cache" in p.stderr


def test_cli_script_smoke(tmp_path):
    """The installed `yolo-attn` console script itself (every other CLI test calls cli.main in this process)."""
    p = run([BIN / "yolo-attn", "show", "yolo11n-seg-cbam.yaml"], tmp_path)
    assert p.stdout.startswith("# yolo_attn composed config: yolo11-seg.yaml + CBAM")
    p = run([BIN / "yolo-attn", "info", "yolo11n-cbma.yaml"], tmp_path, check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert p.stderr.startswith("yolo-attn: error: yolo11n-cbma.yaml: no such file, and 'cbma' is not a block suffix")
