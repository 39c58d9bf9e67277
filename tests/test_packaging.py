"""The wheel a user installs: configs inside the package, the start-up hook at the root, no images; and the tests
really exercise the installed copy of this tree."""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest

from conftest import BIN, REPO, run


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    run([BIN / "python", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, REPO], out)
    (path,) = out.glob("yolo_attn-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_contents(wheel):
    names = set(wheel.namelist())
    yamls = {n for n in names if n.startswith("yolo_attn/model_yamls/") and n.endswith(".yaml")}
    assert yamls == {f"yolo_attn/model_yamls/{p.name}" for p in (REPO / "model_yamls").glob("*.yaml")}
    assert {"_yolo_attn_hook.py", "yolo_attn_activate.pth", "yolo_attn/__init__.py", "yolo_attn/patch.py"} <= names
    assert wheel.read("yolo_attn_activate.pth").decode().strip() == "import _yolo_attn_hook"
    data = [n for n in names if n.lower().endswith((".jpg", ".png")) or n.startswith(("data/", "tests/"))]
    labels = [n for n in names if n.endswith(".txt") and ".dist-info/" not in n]
    assert not data and not labels
    meta = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "Name: yolo-attn" in meta and "Requires-Dist: ultralytics<8.5,>=8.3.0" in meta
    entry = next(wheel.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "yolo-attn = yolo_attn.cli:main" in entry


def test_tests_run_against_an_up_to_date_install():
    """scripts/test.sh reinstalls the package; running pytest on a stale install would test other code."""
    spec = importlib.util.find_spec("yolo_attn")
    installed = Path(spec.origin).parent
    assert installed != REPO / "yolo_attn", "tests must import the installed (non-editable) package"
    for src in (REPO / "yolo_attn").rglob("*.py"):
        dst = installed / src.relative_to(REPO / "yolo_attn")
        assert dst.is_file() and hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest(), (
            f"{dst} differs from {src}: run `bash scripts/test.sh` (it reinstalls) instead of pytest directly"
        )
    import yolo_attn

    assert Path(yolo_attn.MODEL_YAMLS) == installed / "model_yamls"
