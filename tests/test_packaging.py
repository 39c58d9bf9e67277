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
    assert {"_yolo_attn_hook.py", "yolo_attn_activate.pth", "yolo_attn/__init__.py", "yolo_attn/patch.py",
            "yolo_attn/placements.yaml", "yolo_attn/ablate/worker.py"} <= names
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
    for src in [*(REPO / "yolo_attn").rglob("*.py"), *(REPO / "yolo_attn").rglob("*.yaml")]:
        dst = installed / src.relative_to(REPO / "yolo_attn")
        assert dst.is_file() and hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest(), (
            f"{dst} differs from {src}: run `bash scripts/test.sh` (it reinstalls) instead of pytest directly"
        )
    import yolo_attn

    assert Path(yolo_attn.MODEL_YAMLS) == installed / "model_yamls"


def _imports(path: Path, module: str, is_package: bool) -> set[str]:
    """The yolo_attn modules a file imports anywhere (top level and inside functions), by full name."""
    import ast

    known = {_module_name(p) for p in (REPO / "yolo_attn").rglob("*.py")}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module if is_package else module.rsplit(".", 1)[0]  # what `from .` means in this file
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "yolo_attn"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                target = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").split(".")[0] == "yolo_attn":
                target = node.module
            else:
                continue
            for a in node.names:  # `from . import names` imports the module yolo_attn.names
                out.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
    return out


def _module_name(p: Path) -> str:
    rel = p.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_the_package_has_no_import_cycle():
    """No module of yolo_attn imports, directly or through others, a module that imports it back; imports inside
    functions count (they run, and a cycle through them is a cycle of meaning)."""
    graph = {}
    for p in (REPO / "yolo_attn").rglob("*.py"):
        name = _module_name(p)
        graph[name] = _imports(p, name, p.name == "__init__.py") - {name}
    assert "yolo_attn.names" in graph["yolo_attn.patch"] and "yolo_attn.names" in graph["yolo_attn.cli"]
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_only_the_contact_modules_touch_ultralytics_internals():
    """Ultralytics' internals (patching nn.tasks, its callbacks, its loaders) are touched by patch, parser_ast,
    releases, checkpoints and export only; other modules use its public API (YOLO, the model classes, LOGGER, utils)."""
    import re

    contact = {"patch.py", "parser_ast.py", "releases.py", "checkpoints.py", "export.py"}
    internal = re.compile(r"tasks\.(parse_model|check_yaml|yaml_model_load|BaseModel\.load|load_checkpoint|"
                          r"attempt_load_one_weight)\s*=|default_callbacks|torch\.serialization\.add_safe_globals|"
                          r"register_custom_op_symbolic")  # fmt: skip
    for p in (REPO / "yolo_attn").rglob("*.py"):
        if p.name in contact:
            continue
        hits = internal.findall(p.read_text(encoding="utf-8"))
        assert not hits, f"{p.relative_to(REPO)} touches Ultralytics internals: {hits}"
