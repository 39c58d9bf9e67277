"""The surgery on Ultralytics' ``parse_model``: recompile it from its own source with yolo_attn's hook points.

Part of the Ultralytics contact (with ``patch``, ``releases`` and ``checkpoints``). Three small AST edits inside the
layer loop ``for i, (f, n, m, args) in enumerate(...)``, each calling the hooks object (``patch.ParserHooks``), bound
as the closure variable ``_yolo_attn``:

- the name lookup ``globals()[m]`` -> ``_yolo_attn.lookup(m, globals(), i)``;
- the module chain ``if m in base_modules: ...`` (a set literal in 8.3.0) ->
  ``if _yolo_attn.handles(m): c2, args, n = _yolo_attn.parse(...) else: <Ultralytics' chain>``;
- the construction ``m_ = ...`` -> ``try: m_ = ...; _yolo_attn.built(m_, d, i) except: _yolo_attn.build_failed(...)``;
- where the function has Ultralytics' ``legacy`` head flag (8.4), a ``C3k2_<Block>`` row clears it as C3k2 does.

Ultralytics' ``base_modules`` sets are built inside the function, so this is the only way to give blocks their own
channel rules. Before recompiling, the current function is compared with the file's source: if another add-on has
replaced it, ``UltralyticsHookError`` says so instead of silently undoing that add-on's change.
"""

from __future__ import annotations

import __future__
import ast
import inspect
from pathlib import Path
from typing import Callable

from .releases import UltralyticsHookError, hook_error


def _is_name(node, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _layer_loop(fdef: ast.FunctionDef) -> ast.For:
    """The ``for i, (f, n, m, args) in enumerate(...)`` loop over YAML rows."""
    for node in ast.walk(fdef):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Tuple) and len(node.target.elts) == 2:
            first, rest = node.target.elts
            if _is_name(first, "i") and isinstance(rest, ast.Tuple):
                if [getattr(e, "id", None) for e in rest.elts] == ["f", "n", "m", "args"]:
                    return node
    raise hook_error("parse_model has no 'for i, (f, n, m, args) in ...' layer loop")


def _is_channel_chain(node) -> bool:
    """The head of the layer loop's module chain: ``if m in base_modules:`` (8.3.100, 8.3.253 and 8.4 checked) or
    ``if m in {Classify, Conv, ...}:`` (a set literal, the 8.3.0 shape)."""
    t = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(t, ast.Compare)
        and _is_name(t.left, "m")
        and len(t.ops) == 1
        and isinstance(t.ops[0], ast.In)
        and (_is_name(t.comparators[0], "base_modules") or isinstance(t.comparators[0], ast.Set))
    )


def _dispatch_first(loop: ast.For, legacy: bool = False) -> int:
    """``if m in <chain>: ...``  ->  ``if _yolo_attn.handles(m): <the block's rule> else: <Ultralytics' chain>``, on
    the loop's own statements only (the chain's branches hold further ``if m in {...}`` tests); returns the count.
    ``legacy``: the function has the ``legacy`` flag (8.4) that Ultralytics clears for C3k2 rows, and so does a
    ``C3k2_<Block>`` row, or any of our rows in a YAML with ``legacy: false`` (the head it builds depends on it)."""
    found = 0
    for k, stmt in enumerate(loop.body):
        if _is_channel_chain(stmt):
            found += 1
            new = ast.parse(
                "if _yolo_attn.handles(m):\n"
                "    c2, args, n = _yolo_attn.parse(i, f, n, m, args, ch, width, max_channels, d)\n"
                + ("    legacy = legacy and not _yolo_attn.clears_legacy(m, d)\n" if legacy else "")
                + "else:\n"
                "    pass\n"
            ).body[0]
            new.orelse = [stmt]
            loop.body[k] = _located(new, stmt)
    return found


class _PatchParseModel(ast.NodeTransformer):
    """The lookup and build edits inside the layer loop; each counts its matches so a missing hook point is
    detected."""

    def __init__(self):
        self.found = {"lookup": 0, "build": 0}

    def visit_Subscript(self, node):  # globals()[m]  ->  _yolo_attn.lookup(m, globals(), i)
        self.generic_visit(node)
        if isinstance(node.value, ast.Call) and _is_name(node.value.func, "globals") and _is_name(node.slice, "m"):
            self.found["lookup"] += 1
            return _located(ast.parse("_yolo_attn.lookup(m, globals(), i)", mode="eval").body, node)
        return node

    def visit_Assign(self, node):  # m_ = ...  ->  try: m_ = ...; built(m_, d) except Exception as e: report; raise
        self.generic_visit(node)
        if len(node.targets) == 1 and _is_name(node.targets[0], "m_"):
            self.found["build"] += 1
            new = ast.parse(
                "try:\n"
                "    pass\n"
                "    _yolo_attn.built(m_, d, i)\n"
                "except Exception as _yolo_attn_error:\n"
                "    _yolo_attn.build_failed(i, m, args, _yolo_attn_error, d)\n"
                "    raise\n"
            ).body[0]
            new.body[0] = node
            return _located(new, node)
        return node


def _located(new: ast.AST, old: ast.AST) -> ast.AST:
    """Give the template nodes of ``new`` the position of the node they replace (tracebacks point at the file)."""
    kept = {id(n) for n in ast.walk(old)}
    for n in ast.walk(new):
        if id(n) not in kept and "lineno" in n._attributes:
            ast.copy_location(n, old)
    return new


def _future_flags(fn) -> int:
    """The ``from __future__`` compiler flags ``fn`` was compiled with (tasks.py uses ``annotations``)."""
    return fn.__code__.co_flags & sum(getattr(__future__, f).compiler_flag for f in __future__.all_feature_names)


def patched_parse_model(tasks, make_hooks: Callable[[frozenset], object]):
    """``tasks.parse_model`` recompiled with the hook points; ``make_hooks(reads)`` makes the hooks object, ``reads``
    being the string constants the function reads (the YAML keys this release knows)."""
    current = getattr(tasks, "parse_model", None)
    if current is None or not inspect.isfunction(current):
        raise hook_error("ultralytics.nn.tasks.parse_model is missing")
    filename = current.__code__.co_filename
    try:
        source = Path(tasks.__file__).read_text(encoding="utf-8")
    except OSError as e:
        raise hook_error(f"the source of ultralytics.nn.tasks cannot be read ({e})") from e
    # Is the function still the one in the file? Compiling the whole file reproduces its bytecode exactly.
    compiled = compile(source, tasks.__file__, "exec", dont_inherit=True)
    original = next((c for c in compiled.co_consts if inspect.iscode(c) and c.co_name == "parse_model"), None)
    if original is None:
        raise hook_error("ultralytics/nn/tasks.py defines no top-level parse_model")
    if filename != tasks.__file__ or original.co_code != current.__code__.co_code:
        raise UltralyticsHookError(
            "ultralytics.nn.tasks.parse_model has been replaced by something else (another add-on?): yolo_attn "
            "recompiles that function from Ultralytics' source and would silently undo the other change. "
            "Start without one of the two (YOLO_ATTN_DISABLE=1 switches yolo_attn's automatic activation off)."
        )

    fdef = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "parse_model")
    assigned = {n.id for n in ast.walk(fdef) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    assigned |= {a.arg for a in fdef.args.args}
    missing = {"d", "ch", "width", "max_channels", "c2"} - assigned
    if missing:
        raise hook_error(f"parse_model no longer defines {sorted(missing)}")
    loop = _layer_loop(fdef)
    patcher = _PatchParseModel()
    dispatch = _dispatch_first(loop, legacy="legacy" in assigned)
    loop.body = [patcher.visit(stmt) for stmt in loop.body]
    absent = [k for k, v in {"dispatch": dispatch, **patcher.found}.items() if v != 1]
    if absent:
        raise hook_error(f"parse_model's layer loop changed shape (hook points not found once: {absent})")

    # Wrap in a factory so the hooks object is a closure variable: nothing is added to the tasks module namespace.
    factory = ast.parse("def _yolo_attn_factory(_yolo_attn):\n    pass\n").body[0]
    factory.body = [fdef, ast.Return(value=ast.Name(id="parse_model", ctx=ast.Load()))]
    module = ast.Module(body=[factory], type_ignores=[])
    ast.fix_missing_locations(module)
    namespace: dict = {}
    code = compile(module, filename, "exec", flags=_future_flags(current), dont_inherit=True)
    exec(code, tasks.__dict__, namespace)
    reads = frozenset(n.value for n in ast.walk(fdef) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    patched = namespace["_yolo_attn_factory"](make_hooks(reads))
    patched.__doc__ = current.__doc__
    patched.__wrapped__ = current
    return patched
