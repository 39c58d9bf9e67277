"""End to end as a user runs it: the plain `yolo` command in another directory trains a ready config for one epoch on
the repository's COCO sample and validates it; the checkpoint reloads in fresh processes (normally and with
ULTRALYTICS_SAFE_LOAD=1) with identical predictions on real COCO images."""

from __future__ import annotations

import csv
import pickletools
import zipfile

import numpy as np
import pytest
from conftest import BIN, SAMPLE, python, run

# every block once, both families, one s-scale model
CONFIGS = [
    "yolov8n-ca.yaml",
    "yolov8s-cbam.yaml",
    "yolov8n-simam.yaml",
    "yolo11n-asff.yaml",
    "yolov8n-spdconv.yaml",
    "yolov8n-aff.yaml",
    "yolo11n-iaff.yaml",
    "yolo11n-dcn.yaml",
    "yolov8n-bifpn.yaml",  # neck-changing: weighted Concats with an extra backbone edge
    "yolo11n-slimneck.yaml",  # GSConv + VoVGSCSP neck
    "yolo11n-faster.yaml",  # every C3k2 replaced: the head must stay YOLO11's
]
IMGSZ = 160

PREDICT = """
import sys, numpy as np, torch, cv2
from ultralytics import YOLO
best, out, imgsz = sys.argv[1], sys.argv[2], int(sys.argv[3])
paths = sorted(sys.argv[4:])
model = YOLO(best)
net = model.model.float().eval()
x = torch.from_numpy(np.stack([cv2.resize(cv2.imread(p), (imgsz, imgsz))[..., ::-1] for p in paths]).copy())
x = x.permute(0, 3, 1, 2).float() / 255
with torch.no_grad():
    raw = net(x)[0].numpy()
    # the same weights in a model built from the YAML stored in the checkpoint
    from ultralytics.nn.tasks import DetectionModel
    rebuilt = DetectionModel(net.yaml, verbose=False).eval()
    rebuilt.load_state_dict(net.state_dict())
    raw_rebuilt = rebuilt(x)[0].numpy()
    raw_fused = net.fuse(verbose=False)(x)[0].numpy()
res = model.predict(paths, imgsz=imgsz, conf=0.001, device="cpu", verbose=False)
boxes = np.concatenate([r.boxes.data.numpy() for r in res]) if res else np.zeros((0, 6))
np.savez(out, raw=raw, raw_rebuilt=raw_rebuilt, raw_fused=raw_fused, boxes=boxes)
print("classes", sorted({type(m).__module__ for m in net.modules() if type(m).__module__.startswith("yolo_attn")}))
"""


def pickled_globals(checkpoint) -> set[str]:
    """Every 'module.name' global the checkpoint's pickle references (read from its opcodes, nothing is loaded)."""
    with zipfile.ZipFile(checkpoint) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
        elif isinstance(arg, str):
            strings.append(arg)
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.mark.parametrize("config", [c if c == "yolov8n-ca.yaml" else pytest.param(c, marks=pytest.mark.slow)
                                    for c in CONFIGS])  # fmt: skip
def test_yolo_cli_train_val_and_reload(config, workdir, sample_data, val_images):
    """The `yolo` command's smoke test (one config by default, every block kind with --full)."""
    name = config.removesuffix(".yaml")
    project = workdir / "runs"
    run(
        [BIN / "yolo", "train", f"model={config}", f"data={sample_data}", "epochs=1", f"imgsz={IMGSZ}", "batch=8",
         "device=cpu", "workers=0", "plots=False", f"project={project}", f"name={name}", "exist_ok=True"],
        workdir,
    )  # fmt: skip
    best = project / name / "weights" / "best.pt"
    assert best.is_file()
    rows = list(csv.DictReader(open(project / name / "results.csv")))
    assert len(rows) == 1 and "metrics/mAP50-95(B)" in {k.strip() for k in rows[0]}

    val = run(
        [BIN / "yolo", "val", f"model={best}", f"data={sample_data}", f"imgsz={IMGSZ}", "device=cpu", "plots=False",
         f"project={project}", f"name={name}-val", "exist_ok=True"],
        workdir,
    )  # fmt: skip
    out = val.stdout + val.stderr
    assert any(line.split()[:1] == ["all"] for line in out.splitlines()), out[-2000:]

    # class paths in the checkpoint: only our stable module paths, nothing from __main__ or the patch module
    names = pickled_globals(best)
    ours = {n for n in names if n.startswith("yolo_attn")}
    assert ours and all(n.startswith("yolo_attn.modules.") for n in ours)
    assert not any(n.startswith("__main__") for n in names)

    script = workdir / "predict.py"
    script.write_text(PREDICT)
    images = [str(p) for p in val_images[:4]]
    results = {}
    for mode, extra in (("plain", {}), ("safe", {"ULTRALYTICS_SAFE_LOAD": 1})):
        npz = workdir / f"{name}-{mode}.npz"
        p = run([BIN / "python", script, best, npz, IMGSZ, *images], workdir, **extra)
        assert "yolo_attn.modules" in p.stdout
        results[mode] = dict(np.load(npz))
    a, b = results["plain"], results["safe"]
    assert np.array_equal(a["raw"], b["raw"]) and np.array_equal(a["boxes"], b["boxes"])
    assert np.array_equal(a["raw"], a["raw_rebuilt"])  # the pickled model is the YAML's model with its weights
    assert np.allclose(a["raw"], a["raw_fused"], rtol=1e-3, atol=1e-3)  # Ultralytics' fuse() keeps our blocks right
    assert a["raw"].shape[0] == 4


def test_python_api_train_from_a_user_script(tmp_path, sample_data):
    """The documented Python route, with `import yolo_attn` nowhere in the script."""
    code = (
        "from ultralytics import YOLO\n"
        "m = YOLO('yolo11n-ca.yaml')\n"
        f"r = m.train(data=r'{sample_data}', epochs=1, imgsz=96, batch=4, device='cpu', workers=0, plots=False,"
        f" project=r'{tmp_path}', name='api', val=True)\n"
        "print('MAP', r.box.map)\n"
    )
    p = python(code, tmp_path)
    assert "MAP" in p.stdout and (tmp_path / "api" / "weights" / "best.pt").is_file()


def test_sample_dataset_is_small_and_licensed():
    imgs = list(SAMPLE.glob("images/*/*.jpg"))
    assert 0 < len(imgs) <= 16
    for img in imgs:
        assert (SAMPLE / "labels" / img.parent.name / (img.stem + ".txt")).is_file()
    note = (SAMPLE / "README.md").read_text()
    assert "CC BY 4.0" in note and "Flickr" in note


@pytest.mark.compile  # 4 minutes of inductor compilation per config on CPU
@pytest.mark.parametrize("config", ["yolov8n-se.yaml", "yolo11n-cbam.yaml"])
def test_yolo_train_with_compile(config, workdir, sample_data):
    """Ultralytics' own compile=True (torch.compile, inductor) trains and validates a ready config, no graph breaks."""
    p = run([BIN / "yolo", "train", f"model={config}", f"data={sample_data}", "epochs=1", "imgsz=64", "batch=4",
             "device=cpu", "workers=0", "plots=False", "compile=True", f"project={workdir / 'compiled'}", "name=c",
             "exist_ok=True"], workdir, TORCH_LOGS="graph_breaks")  # fmt: skip
    out = p.stdout + p.stderr
    assert "compile complete" in out and "mAP50-95" in out
    breaks = [line for line in out.splitlines() if "graph break" in line.lower()]
    ours = [line for line in breaks if "yolo_attn" in line]  # Ultralytics' own code may break; our blocks may not
    assert not ours, "\n".join(ours)
