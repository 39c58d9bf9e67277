"""Every contact between yolo_attn and Ultralytics internals, in one place.

``activate()`` makes four changes to ``ultralytics.nn.tasks``, each marked with ``__yolo_attn_patched__`` and
keeping the original in ``__wrapped__``:

1. ``parse_model`` is recompiled from its own source with three small AST edits inside its layer loop:
   - the name lookup ``globals()[m]`` resolves yolo_attn's block names (and raises a clear error with close
     matches for unknown names instead of a bare ``KeyError``);
   - in front of the ``if m in base_modules`` chain (a set literal in 8.3.0), a dispatch applies the block's channel rule
     (``yolo_attn.registry``) for yolo_attn blocks; every other module takes Ultralytics' own path unchanged;
   - the module construction ``m_ = ...`` reports a failure of one of our blocks with the YAML layer index, arms
     the blocks' identity start when the YAML says ``identity_start: true``, and, when the YAML says ``sqr:``, gives
     the RT-DETR head (Ultralytics' own ``RTDETRDecoder``) the query-recollection decoder ``SQRDecoder``.
   Ultralytics' ``base_modules`` sets are built inside the function, so this is the only way to give blocks their
   own channel rules. Before recompiling, the current function is compared with the file's source: if another
   add-on has replaced it, activation stops with an error instead of silently undoing that add-on's change.
2. ``check_yaml`` (as called by ``yaml_model_load``) also finds the ready configs shipped in yolo_attn, by bare file
   name, after files that exist as given, and then builds composed names (``yolo26n-cbam.yaml``, yolo_attn.compose)
   that nothing else resolves. It wraps whatever ``check_yaml`` was there, so it composes.
3. ``BaseModel.load`` (behind ``YOLO(...).load(...)`` and every ``pretrained=``) matches layers by structure when
   the source or the target has yolo_attn blocks (``yolo_attn.transfer``); plain models keep Ultralytics' behaviour.
4. yolo_attn's classes are added to torch's safe globals so ``ULTRALYTICS_SAFE_LOAD=1`` loads our checkpoints.

Besides ``tasks``, an ``on_export_start`` callback is added to Ultralytics' default callbacks (``yolo_attn.export``):
ONNX DeformConv for DCN, and clear errors for formats a block cannot be exported to.

If a hook point is missing, ``UltralyticsHookError`` names the installed Ultralytics version and the supported
range. Set ``YOLO_ATTN_DISABLE=1`` to stop the automatic activation at start-up (see ``_yolo_attn_hook``).
"""

from __future__ import annotations

import __future__
import ast
import inspect
import os
import re
import sys
import threading
from pathlib import Path

import torch

from . import compose, registry, transfer
from .modules._common import IdentityStart

SUPPORTED = ">=8.3.0,<8.5"
# Ultralytics modules and model-YAML keys newer than the oldest supported release, with the first release that has
# them (read off the released wheels). On an older release a YAML naming one gets a one-line error saying which
# release it needs, instead of an unknown name or, for the keys, a model built without them.
NEWER_MODULES = {
    "A2C2f": ("8.3.78", "YOLO12"), "YOLOEDetect": ("8.3.99", "YOLOE"), "YOLOESegment": ("8.3.99", "YOLOE"),
    "Segment26": ("8.4.0", "YOLO26"), "Pose26": ("8.4.0", "YOLO26"), "OBB26": ("8.4.0", "YOLO26"),
    "YOLOESegment26": ("8.4.0", "YOLOE-26"), "SemanticSegment": ("8.4.52", "YOLO26-sem"), "Depth": ("8.4.104", "YOLO26-depth"),
}  # fmt: skip
NEWER_YAML_KEYS = {"end2end": ("8.4.0", "YOLO26's end-to-end head"), "reg_max": ("8.4.0", "YOLO26's DFL bins")}
MARK = "__yolo_attn_patched__"
MODEL_YAMLS = Path(__file__).with_name("model_yamls")
if not MODEL_YAMLS.is_dir():  # running from a source checkout: configs sit at the top of the repository
    MODEL_YAMLS = Path(__file__).resolve().parents[1] / "model_yamls"

_lock = threading.Lock()
_active = False


class UltralyticsHookError(RuntimeError):
    """The installed Ultralytics lacks a hook point yolo_attn needs, or another add-on changed it first."""


def _ultralytics_version() -> str:
    from ultralytics import __version__

    return __version__


def _release(version: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


class UltralyticsTooOld(ValueError):
    """A YAML needs a module or key that the installed Ultralytics release does not have yet."""


def _needs(since: str) -> str:
    return (f"needs ultralytics>={since}; the installed Ultralytics is {_ultralytics_version()}: "
            f"pip install 'ultralytics>={since},<8.5'")  # fmt: skip


def _hook_error(what: str) -> UltralyticsHookError:
    return UltralyticsHookError(
        f"yolo_attn cannot hook into Ultralytics {_ultralytics_version()}: {what}. yolo_attn supports "
        f"ultralytics{SUPPORTED}; install one (pip install 'ultralytics{SUPPORTED}'), or set YOLO_ATTN_DISABLE=1 "
        "to start Ultralytics without yolo_attn."
    )


# ----------------------------------------------------------------------------------------------------------------
# What the patched parse_model calls
# ----------------------------------------------------------------------------------------------------------------
class ParserHooks:
    """What the patched ``parse_model`` calls into yolo_attn (bound into it as the closure variable ``_yolo_attn``)."""

    def __init__(self, reads: frozenset = frozenset(NEWER_YAML_KEYS)):
        self.by_class = {spec.cls: spec for spec in registry.BLOCKS.values()}
        self.unread = {k: v for k, v in NEWER_YAML_KEYS.items() if k not in reads}  # keys this parse_model ignores

    def lookup(self, name: str, module_globals: dict, index: int):
        """Resolve a YAML module name that is neither ``nn.X`` nor ``torchvision.ops.X``."""
        spec = registry.get(name)
        if spec is not None:
            return spec.cls
        if name in module_globals:
            return module_globals[name]
        if name in NEWER_MODULES:
            since, family = NEWER_MODULES[name]
            raise registry.UnknownBlockError(index, name, f"the {family} module {name} {_needs(since)}")
        known = list(registry.BLOCKS) + [
            k for k, v in module_globals.items() if isinstance(v, type) and issubclass(v, torch.nn.Module)
        ]
        close = registry.suggest(name, known)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise registry.UnknownBlockError(
            index,
            name,
            f"unknown module name. {hint}yolo_attn blocks: {', '.join(registry.BLOCKS)}; "
            "Ultralytics modules are named as in its own YAMLs, torch ones as nn.Name.",
        )

    def handles(self, m) -> bool:
        return m in self.by_class

    def parse(self, i, f, n, m, args, ch, width, max_channels, d):
        """Apply the block's channel rule: returns (c2, constructor args, repeats)."""
        spec = self.by_class[m]
        yaml_n = (d.get("backbone", []) + d.get("head", []))[i][1]  # before depth scaling
        layer = registry.Layer(i, f, n, spec.name, list(args), ch, width, max_channels, yaml_n)
        for x in [f] if isinstance(f, int) else f if isinstance(f, (list, tuple)) else []:
            if isinstance(x, int) and not -len(ch) <= x < len(ch):  # len(ch) == i: only earlier layers
                raise layer.error(f"'from' index {x} does not name an earlier layer (valid: -1 or 0..{i - 1})")
        return spec.build_args(layer)

    def built(self, module, d: dict, i: int | None = None) -> None:
        """After construction of layer ``i``: arm the identity start of the layer's blocks when the YAML asks for it
        (only the layer itself or its repeats, not blocks nested inside it: AFF's MS-CAMs are used through
        ``weights()``, so gates there would be parameters without gradients); give the RT-DETR head its query
        recollection decoder when the YAML says ``sqr:``."""
        for key, (since, what) in self.unread.items():
            if key in d:  # this release would build the model without it: a different model, silently
                raise UltralyticsTooOld(f"yolo_attn: model YAML key {key!r} ({what}) {_needs(since)}")
        if d.get("sqr") is not None:
            self.recollect(module, d, i)
        if d.get("identity_start"):
            for m in module if isinstance(module, torch.nn.Sequential) else [module]:
                if isinstance(m, IdentityStart):
                    m.identity_start()

    @staticmethod
    def recollect(module, d: dict, i: int | None) -> None:
        """``sqr: selective|dense`` on the last row (the head): swap the RT-DETR decoder's layer loop for
        ``SQRDecoder``, which keeps the same layers. Anything else with the key set is refused in one line."""
        from ultralytics.nn.modules import RTDETRDecoder

        from .modules.sqr import SQRDecoder, mode_of

        try:
            mode = mode_of(d["sqr"])
        except ValueError as e:
            raise registry.YAMLKeyError("sqr", str(e)) from None
        rows = d.get("backbone", []) + d.get("head", [])
        if mode is None or i is None or i != len(rows) - 1:
            return
        if not isinstance(module, RTDETRDecoder) or not isinstance(getattr(module, "decoder", None), torch.nn.Module):
            raise registry.YAMLKeyError(
                "sqr", f"query recollection trains an RT-DETR decoder, but the model's head (layer {i}) is {rows[i][2]}, "
                "not RTDETRDecoder; use it with an RT-DETR YAML such as rtdetr-l.yaml or remove the key"
            )  # fmt: skip
        module.decoder = SQRDecoder(module.decoder, mode)

    def build_failed(self, i, m, args, exc: Exception) -> None:
        """Re-raise a failed construction of one of our blocks as a LayerError; other modules' errors pass."""
        spec = self.by_class.get(m)
        if spec is None or isinstance(exc, (registry.LayerError, UltralyticsTooOld)):
            return
        msg = str(exc)
        prefix = f"{spec.name}: "
        msg = msg[len(prefix) :] if msg.startswith(prefix) else f"could not be built from args {args}: {msg}"
        raise registry.LayerError(i, spec.name, msg) from exc


# ----------------------------------------------------------------------------------------------------------------
# parse_model
# ----------------------------------------------------------------------------------------------------------------
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
    raise _hook_error("parse_model has no 'for i, (f, n, m, args) in ...' layer loop")


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


def _dispatch_first(loop: ast.For) -> int:
    """``if m in <chain>: ...``  ->  ``if _yolo_attn.handles(m): <the block's rule> else: <Ultralytics' chain>``, on
    the loop's own statements only (the chain's branches hold further ``if m in {...}`` tests); returns the count."""
    found = 0
    for k, stmt in enumerate(loop.body):
        if _is_channel_chain(stmt):
            found += 1
            new = ast.parse(
                "if _yolo_attn.handles(m):\n"
                "    c2, args, n = _yolo_attn.parse(i, f, n, m, args, ch, width, max_channels, d)\n"
                "else:\n"
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
                "    _yolo_attn.build_failed(i, m, args, _yolo_attn_error)\n"
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


def _patch_parse_model(tasks) -> None:
    current = getattr(tasks, "parse_model", None)
    if current is None or not inspect.isfunction(current):
        raise _hook_error("ultralytics.nn.tasks.parse_model is missing")
    if getattr(current, MARK, False):
        return
    filename = current.__code__.co_filename
    try:
        source = Path(tasks.__file__).read_text(encoding="utf-8")
    except OSError as e:
        raise _hook_error(f"the source of ultralytics.nn.tasks cannot be read ({e})") from e
    # Is the function still the one in the file? Compiling the whole file reproduces its bytecode exactly.
    compiled = compile(source, tasks.__file__, "exec", dont_inherit=True)
    original = next((c for c in compiled.co_consts if inspect.iscode(c) and c.co_name == "parse_model"), None)
    if original is None:
        raise _hook_error("ultralytics/nn/tasks.py defines no top-level parse_model")
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
        raise _hook_error(f"parse_model no longer defines {sorted(missing)}")
    loop = _layer_loop(fdef)
    patcher = _PatchParseModel()
    dispatch = _dispatch_first(loop)
    loop.body = [patcher.visit(stmt) for stmt in loop.body]
    absent = [k for k, v in {"dispatch": dispatch, **patcher.found}.items() if v != 1]
    if absent:
        raise _hook_error(f"parse_model's layer loop changed shape (hook points not found once: {absent})")

    # Wrap in a factory so the hooks object is a closure variable: nothing is added to the tasks module namespace.
    factory = ast.parse("def _yolo_attn_factory(_yolo_attn):\n    pass\n").body[0]
    factory.body = [fdef, ast.Return(value=ast.Name(id="parse_model", ctx=ast.Load()))]
    module = ast.Module(body=[factory], type_ignores=[])
    ast.fix_missing_locations(module)
    namespace: dict = {}
    code = compile(module, filename, "exec", flags=_future_flags(current), dont_inherit=True)
    exec(code, tasks.__dict__, namespace)
    reads = frozenset(n.value for n in ast.walk(fdef) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    patched = namespace["_yolo_attn_factory"](ParserHooks(reads))
    patched.__doc__ = current.__doc__
    patched.__wrapped__ = current
    setattr(patched, MARK, True)

    tasks.parse_model = patched
    nn_pkg = sys.modules.get("ultralytics.nn")  # re-exports parse_model (only once its own import has finished)
    if nn_pkg is not None and getattr(nn_pkg, "parse_model", None) is current:
        nn_pkg.parse_model = patched


# ----------------------------------------------------------------------------------------------------------------
# YAML lookup
# ----------------------------------------------------------------------------------------------------------------
def find_config(file) -> str | None:
    """Path of a shipped ready config for a bare file name (``yolov8-ca.yaml``), unless ``file`` exists as given."""
    s = str(file)
    if not s or os.path.exists(s) or os.path.basename(s) != s:
        return None
    path = MODEL_YAMLS / s
    return str(path) if path.is_file() else None


_soft_errors: dict = {}  # unscaled name -> the ComposeError of its soft lookup (the name as the user wrote it)


def _patch_check_yaml(tasks) -> None:
    current = getattr(tasks, "check_yaml", None)
    loader = getattr(tasks, "yaml_model_load", None)
    if current is None or loader is None or "check_yaml" not in loader.__code__.co_names:
        raise _hook_error("ultralytics.nn.tasks.yaml_model_load no longer calls check_yaml")
    if getattr(current, MARK, False):
        return

    def check_yaml(file, suffix=(".yaml", ".yml"), hard=True):
        """Ultralytics' check_yaml, also finding yolo_attn's ready configs by bare name, and building composed names
        (``yolo26n-cbam.yaml``: see yolo_attn.compose) when nothing else has that name."""
        # the name, then its unified form (yolo26s-eca.yaml -> yolo26-eca.yaml, as yaml_model_load tries next): a file
        # on disk, a shipped ready config or an Ultralytics YAML of either name wins over composing one
        for name in dict.fromkeys((str(file), compose.unscaled(str(file)))):
            found = find_config(name) or current(name, suffix=suffix, hard=False)
            if found:
                return found
        try:
            found = compose.compose(str(file), lambda n: find_config(n) or current(n, suffix=suffix, hard=False) or None)
        except compose.ComposeError as e:
            if not hard:  # yaml_model_load asks for one form of the name softly, then the other (unified or scaled)
                _soft_errors[compose.unscaled(str(file))] = e
                return current(file, suffix=suffix, hard=False)
            raise _soft_errors.pop(compose.unscaled(str(file)), e) from None  # the error for the name as typed
        if found:
            return found
        if hard and compose.unscaled(str(file)) in _soft_errors:  # yolov10s-dcn.yaml refused; yolov10-dcn.yaml has no base
            raise _soft_errors.pop(compose.unscaled(str(file))) from None
        try:
            return current(file, suffix=suffix, hard=hard)
        except FileNotFoundError:
            name = os.path.basename(str(file))
            if re.match(r"^yolo(e-)?26", name) and _release(_ultralytics_version()) < (8, 4, 0):
                raise UltralyticsTooOld(f"yolo_attn: {name}: YOLO26 {_needs('8.4.0')}") from None
            raise

    check_yaml.__wrapped__ = current
    setattr(check_yaml, MARK, True)
    tasks.check_yaml = check_yaml


# ----------------------------------------------------------------------------------------------------------------
# Pretrained weights
# ----------------------------------------------------------------------------------------------------------------
def structural_load(model, weights, verbose: bool, original) -> None:
    """``BaseModel.load`` that re-indexes the source by structure when either side has yolo_attn blocks."""
    source = (weights.get("ema") or weights["model"]) if isinstance(weights, dict) else weights
    if not (
        isinstance(source, torch.nn.Module)
        and transfer.layers_of(source) is not None
        and transfer.layers_of(model) is not None
        and (transfer.has_blocks(model) or transfer.has_blocks(source))
    ):
        return original(model, weights, verbose)
    p = transfer.plan(source, model)
    total = len(source.state_dict())
    proxy = transfer.reindexed(source, p, len(transfer.layers_of(model)))
    original(model, proxy, verbose)
    if verbose:
        from ultralytics.utils import LOGGER
        from ultralytics.utils.torch_utils import intersect_dicts  # the match Ultralytics' load applies

        loaded = set(intersect_dicts(proxy.state_dict(), model.state_dict()))
        LOGGER.info(transfer.describe(p, model, loaded, total))


def load_checkpoint(path: str):
    """(model, checkpoint dict) of an Ultralytics ``.pt``: ``load_checkpoint`` from 8.3.x's later releases on,
    ``attempt_load_one_weight`` before that."""
    import ultralytics.nn.tasks as tasks

    fn = getattr(tasks, "load_checkpoint", None) or getattr(tasks, "attempt_load_one_weight", None)
    if fn is None:
        raise _hook_error("ultralytics.nn.tasks has neither load_checkpoint nor attempt_load_one_weight")
    return fn(str(path))


def _patch_load(tasks) -> None:
    base = getattr(tasks, "BaseModel", None)
    current = getattr(base, "load", None)
    if current is None or "weights" not in inspect.signature(current).parameters:
        raise _hook_error("ultralytics.nn.tasks.BaseModel.load(weights, verbose) is missing")
    if getattr(current, MARK, False):
        return

    def load(self, weights, verbose=True):
        return structural_load(self, weights, verbose, current)

    load.__doc__ = (current.__doc__ or "") + "\n(yolo_attn: layers are matched by structure; see yolo_attn.transfer)"
    load.__wrapped__ = current
    setattr(load, MARK, True)
    base.load = load


# ----------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------
def _add_export_callback() -> None:
    """Add ``yolo_attn.export.on_export_start`` to Ultralytics' default callbacks (copied into every Exporter)."""
    from . import export

    try:
        from ultralytics.utils.callbacks.base import default_callbacks
    except ImportError as e:
        raise _hook_error(f"ultralytics.utils.callbacks.base.default_callbacks is missing ({e})") from e
    hooks = default_callbacks.get("on_export_start")
    if not isinstance(hooks, list):
        raise _hook_error("Ultralytics' default callbacks have no 'on_export_start' list")
    if export.on_export_start not in hooks:
        hooks.append(export.on_export_start)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------
def checkpoint_classes() -> list[type]:
    """Every class a yolo_attn checkpoint can reference: all nn.Module classes defined in yolo_attn.modules."""
    import importlib
    import pkgutil

    from . import modules

    found = []
    for info in pkgutil.iter_modules(modules.__path__):
        mod = importlib.import_module(f"{modules.__name__}.{info.name}")
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == mod.__name__:
                found.append(obj)
    return found


def _register_safe_globals() -> None:
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no weights_only allow-list; Ultralytics then loads normally
        add(checkpoint_classes())


# ----------------------------------------------------------------------------------------------------------------
def activate() -> None:
    """Hook yolo_attn into Ultralytics (idempotent, thread-safe)."""
    global _active
    if _active:
        return
    with _lock:
        if _active:
            return
        try:
            import ultralytics.nn.tasks as tasks
        except ImportError as e:
            raise UltralyticsHookError(f"yolo_attn needs ultralytics{SUPPORTED}: {e}") from e
        _patch_parse_model(tasks)
        _patch_check_yaml(tasks)
        _patch_load(tasks)
        _add_export_callback()
        _register_safe_globals()
        _active = True


def is_active() -> bool:
    """Whether yolo_attn's hooks are in place in this process."""
    try:
        import ultralytics.nn.tasks as tasks
    except ImportError:
        return False
    return all(getattr(fn, MARK, False) for fn in (tasks.parse_model, tasks.check_yaml, tasks.BaseModel.load))


def deactivate() -> None:
    """Restore Ultralytics' own functions (for comparisons with plain Ultralytics in one process)."""
    global _active
    with _lock:
        import ultralytics.nn.tasks as tasks

        if getattr(tasks.BaseModel.load, MARK, False):
            tasks.BaseModel.load = tasks.BaseModel.load.__wrapped__
        from ultralytics.utils.callbacks.base import default_callbacks

        from . import export

        if export.on_export_start in default_callbacks.get("on_export_start", []):
            default_callbacks["on_export_start"].remove(export.on_export_start)
        for name in ("parse_model", "check_yaml"):
            fn = getattr(tasks, name)
            if getattr(fn, MARK, False):
                setattr(tasks, name, fn.__wrapped__)
                nn_pkg = sys.modules.get("ultralytics.nn")
                if name == "parse_model" and nn_pkg is not None and getattr(nn_pkg, name, None) is fn:
                    nn_pkg.parse_model = fn.__wrapped__
        _active = False
