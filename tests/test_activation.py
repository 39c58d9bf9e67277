"""Activation: with no import of yolo_attn, in any process; idempotent; loud when a hook point is missing; never
silently undoing another add-on; Ultralytics' own models unchanged."""

from __future__ import annotations

import json
import types

import pytest
import torch

from conftest import ddp_worker_output, python

import yolo_attn
from yolo_attn import names, patch
from yolo_attn.releases import UltralyticsHookError


def test_a_process_that_imports_only_ultralytics_gets_the_blocks(tmp_path):
    p = python(
        "import sys\n"
        "from ultralytics import YOLO\n"
        "m = YOLO('yolo11n-cbam.yaml')\n"
        "print(sorted({type(x).__name__ for x in m.model.modules()} & {'CBAM', 'Detect'}), 'yolo_attn' in sys.modules)",
        tmp_path,
    )
    assert p.stdout.strip().splitlines()[-1] == "['CBAM', 'Detect'] True"


def test_startup_hook_imports_nothing_heavy(tmp_path):
    p = python(
        "import sys, json\n"
        "print(json.dumps({'loaded': [m for m in ('torch', 'ultralytics', 'yolo_attn') if m in sys.modules],"
        " 'armed': any(type(f).__name__ == '_ActivateAfterTasks' for f in sys.meta_path)}))",
        tmp_path,
    )
    assert json.loads(p.stdout) == {"loaded": [], "armed": True}


def test_switched_off_by_environment(tmp_path):
    p = python(
        "import sys\n"
        "import ultralytics.nn.tasks as t\n"
        "print('yolo_attn' in sys.modules, hasattr(t.parse_model, '__yolo_attn_patched__'))",
        tmp_path,
        YOLO_ATTN_DISABLE=1,
    )
    assert p.stdout.split()[-2:] == ["False", "False"]  # after any notice Ultralytics prints on its first import


def test_ddp_worker_script_builds_the_blocks(tmp_path, sample_data):
    """Ultralytics' own DDP launcher file, run in a fresh interpreter: the worker rebuilds the model from the YAML."""
    probe = "trainer.setup_model(); print('BUILT', sorted({type(m).__name__ for m in trainer.model.modules()} & {'ASFF'}))"
    out = ddp_worker_output("ultralytics.models.yolo.detect.DetectionTrainer", "yolov8n-asff.yaml", sample_data,
                            tmp_path, probe)  # fmt: skip
    assert "BUILT ['ASFF']" in out


def test_activation_is_idempotent():
    import ultralytics.nn.tasks as tasks

    before = tasks.parse_model, tasks.check_yaml
    yolo_attn.activate()
    yolo_attn.activate()
    assert (tasks.parse_model, tasks.check_yaml) == before
    assert patch.is_active()
    assert getattr(tasks.parse_model, patch.MARK) and tasks.parse_model.__wrapped__.__name__ == "parse_model"


def test_ultralytics_models_are_unchanged():
    """yolov8n built with the patched parser equals the one built by Ultralytics' own parser."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    ours = DetectionModel("yolov8n.yaml", verbose=False).eval()
    patch.deactivate()
    try:
        assert not patch.is_active()
        torch.manual_seed(0)
        plain = DetectionModel("yolov8n.yaml", verbose=False).eval()
    finally:
        yolo_attn.activate()
    assert patch.is_active()
    a, b = ours.state_dict(), plain.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x)[0], plain(x)[0])


def test_refuses_to_undo_another_addon(tmp_path):
    p = python(
        "import ultralytics.nn.tasks as t\n"
        "orig = t.parse_model\n"
        "def other_addon(d, ch, verbose=True):\n"
        "    return orig(d, ch, verbose)\n"
        "t.parse_model = other_addon\n"
        "try:\n"
        "    import yolo_attn\n"
        "except RuntimeError as e:\n"
        "    print('REFUSED', e)\n",
        tmp_path,
        YOLO_ATTN_DISABLE=1,
    )
    assert "REFUSED ultralytics.nn.tasks.parse_model has been replaced by something else" in p.stdout


def test_composes_with_another_check_yaml_wrapper(tmp_path):
    p = python(
        "import ultralytics.nn.tasks as t\n"
        "seen = []\n"
        "orig = t.check_yaml\n"
        "t.check_yaml = lambda f, *a, **k: (seen.append(str(f)), orig(f, *a, **k))[1]\n"
        "import yolo_attn\n"
        "from ultralytics import YOLO\n"
        "YOLO('yolov8n.yaml'); YOLO('yolov8n-ca.yaml')\n"
        "print(seen)\n",
        tmp_path,
        YOLO_ATTN_DISABLE=1,
    )
    # the other wrapper still sees Ultralytics' own lookups (8.3.0 asks for the unified yolov8.yaml first)
    assert "'yolov8n.yaml'" in p.stdout or "'yolov8.yaml'" in p.stdout


def test_missing_hook_point_names_the_version(tmp_path):
    src = tmp_path / "tasks.py"
    src.write_text("def parse_model(d, ch, verbose=True):\n    return None\n")
    fake = types.ModuleType("fake_tasks")
    fake.__file__ = str(src)
    exec(compile(src.read_text(), str(src), "exec"), fake.__dict__)
    with pytest.raises(UltralyticsHookError) as e:
        patch._patch_parse_model(fake)
    from ultralytics import __version__

    msg = str(e.value)
    assert f"Ultralytics {__version__}" in msg and "ultralytics>=8.3.0,<8.5" in msg and "parse_model" in msg


def test_local_yaml_takes_precedence_over_ready_configs(tmp_path):
    import yaml

    d = yaml.safe_load((yolo_attn.MODEL_YAMLS / "yolov8-ca.yaml").read_text())
    d["nc"] = 3
    (tmp_path / "yolov8-ca.yaml").write_text(yaml.safe_dump(d))
    p = python("from ultralytics import YOLO; print(YOLO('yolov8n-ca.yaml').model.yaml['nc'])", tmp_path)
    assert p.stdout.strip().splitlines()[-1] == "3"
    assert names.ready_config("yolov8-ca.yaml") == yolo_attn.MODEL_YAMLS / "yolov8-ca.yaml"
    assert names.ready_config("sub/yolov8-ca.yaml") is None and names.ready_config("nope.yaml") is None


def test_dispatch_finds_both_shapes_of_the_module_chain():
    """8.3.0's layer loop tests `m in {Classify, Conv, ...}` (a set literal, with nested `m in {...}` tests inside its
    branch); later releases test `m in base_modules`. The dispatch goes in front of the loop's own chain, once."""
    import ast

    from yolo_attn.parser_ast import _dispatch_first

    for chain in ("{Conv, C2f}", "base_modules"):
        src = (f"for i, (f, n, m, args) in rows:\n    m = globals()[m]\n    if m in {chain}:\n"
               "        if m in {C2f}:\n            n = 1\n    elif m is Concat:\n        pass\n    m_ = m(*args)\n")  # fmt: skip
        loop = ast.parse(src).body[0]
        assert _dispatch_first(loop) == 1
        head = loop.body[1]
        assert ast.unparse(head.test) == "_yolo_attn.handles(m)" and ast.unparse(head.orelse[0].test) == f"m in {chain}"
    loop = ast.parse("for i, (f, n, m, args) in rows:\n    if m is Conv:\n        pass\n").body[0]
    assert _dispatch_first(loop) == 0  # a loop without the chain: activation reports the missing hook point
