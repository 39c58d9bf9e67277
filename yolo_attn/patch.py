"""Activation: the hook points where yolo_attn meets Ultralytics.

The Ultralytics contact is this module and three helpers, and no other module of the package touches Ultralytics
internals: ``parser_ast`` (the recompiled ``parse_model``), ``releases`` (supported releases, what a YAML needs from
a newer one) and ``checkpoints`` (loading ``.pt`` files across releases, the classes a checkpoint names).

``activate()`` makes four changes to ``ultralytics.nn.tasks``, each marked with ``__yolo_attn_patched__`` and
keeping the original in ``__wrapped__``:

1. ``parse_model`` is recompiled by ``parser_ast`` with three hook points calling ``ParserHooks``: the name lookup
   (our blocks, and one-line errors with close matches for unknown names), a dispatch in front of Ultralytics'
   module chain that applies our blocks' channel rules (``registry``), and the construction of each layer (errors
   naming the YAML layer, ``identity_start: true``, the ``sqr:`` key of RT-DETR heads).
2. ``check_yaml`` (as called by ``yaml_model_load``) resolves names with ``names.resolve``: files, the shipped ready
   configs, Ultralytics' YAMLs and composed names (``yolo26n-cbam.yaml``). It wraps whatever ``check_yaml`` was there.
3. ``BaseModel.load`` (behind ``YOLO(...).load(...)`` and every ``pretrained=``) matches layers by structure when
   the source or the target has yolo_attn blocks (``yolo_attn.transfer``); plain models keep Ultralytics' behaviour.
4. yolo_attn's classes are added to torch's safe globals so ``ULTRALYTICS_SAFE_LOAD=1`` loads our checkpoints.

Besides ``tasks``, an ``on_export_start`` callback is added to Ultralytics' default callbacks (``yolo_attn.export``):
ONNX DeformConv for DCN, and clear errors for formats a block cannot be exported to.

If a hook point is missing, ``UltralyticsHookError`` names the installed Ultralytics version and the supported
range. Set ``YOLO_ATTN_DISABLE=1`` to stop the automatic activation at start-up (see ``_yolo_attn_hook``).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
import threading

import torch

from . import checkpoints, compose, dialects, names, parser_ast, registry, transfer
from .modules._common import IdentityStart
from .modules.composite import Composite
from .releases import (NEWER_MODULES, NEWER_YAML_KEYS, SUPPORTED, YOLO26, UltralyticsHookError, UltralyticsTooOld,
                       at_least, hook_error, needs)  # fmt: skip

MARK = "__yolo_attn_patched__"

_lock = threading.Lock()
_active = False
_logged: set = set()


def _log_once(key, line: str) -> None:
    """One log line per (model YAML, scale, layer, message) in a process: Ultralytics builds a model more than once.
    Nothing while a recorder collects the decisions (``yolo-attn check`` reports them itself)."""
    if key not in _logged and _recorder is None:
        _logged.add(key)
        from ultralytics.utils import LOGGER

        LOGGER.info(line)


class Recorder:
    """The decisions on every row of ours in the models built while it is active (``yolo-attn check``). With
    ``keep_going`` a refused row is recorded and built with its block's defaults, so every row gets a verdict."""

    def __init__(self, keep_going: bool = True):
        self.keep_going = keep_going
        self.rows: list[tuple] = []  # (layer, decision or None, error or None)

    def decided(self, layer, decision) -> None:
        self.rows.append((layer, decision, None))

    def refused(self, spec, alias, layer, error):
        self.rows.append((layer, None, error))
        values = spec.defaults()
        if values.get("c2") is registry.REQUIRED:  # a width-changing block: its first arg, as written, if it is one
            first = layer.args[0] if layer.args else None
            values["c2"] = first if isinstance(first, (int, float)) and not isinstance(first, bool) and first > 0 else 64
        if spec.inner is not None:
            values["block_args"] = {}
        return dialects.Decision(spec, values, dialects.Reading("refused", values), "")


_recorder: Recorder | None = None


@contextlib.contextmanager
def recording(keep_going: bool = True):
    """Record the row decisions of the models built inside the ``with`` (one recorder at a time)."""
    global _recorder
    with _lock:
        if _recorder is not None:
            raise RuntimeError("yolo_attn: a recording is already active")
        _recorder = Recorder(keep_going)
    try:
        yield _recorder
    finally:
        _recorder = None


# ----------------------------------------------------------------------------------------------------------------
# What the patched parse_model calls
# ----------------------------------------------------------------------------------------------------------------
class ParserHooks:
    """What the patched ``parse_model`` calls into yolo_attn (bound into it as the closure variable ``_yolo_attn``)."""

    def __init__(self, reads: frozenset = frozenset(NEWER_YAML_KEYS)):
        self.classes = frozenset(registry.block_classes())
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
            raise registry.UnknownBlockError(index, name, f"the {family} module {name} {needs(since)}")
        why = registry.composite_problem(name)
        if why:
            raise registry.UnknownBlockError(index, name, why)
        known = registry.known_names() + [
            k for k, v in module_globals.items() if isinstance(v, type) and issubclass(v, torch.nn.Module)
        ]
        raise registry.UnknownBlockError(
            index,
            name,
            f"unknown module name. {registry.did_you_mean(name, known)}yolo_attn blocks: {', '.join(registry.BLOCKS)} "
            "(community names and C2f_/C3k2_ composites: yolo-attn list); Ultralytics modules are named as in its own "
            "YAMLs, torch ones as nn.Name.",
        )

    def handles(self, m) -> bool:
        return m in self.classes

    @staticmethod
    def clears_legacy(m, d: dict | None = None) -> bool:
        """A C3k2 composite clears the head's legacy flag, as Ultralytics' parser does for C3k2 rows; so does any of
        our rows in a YAML with ``legacy: false`` (the YAML editor writes it where our blocks replaced the C3k2 /
        A2C2f / C2fCIB rows that gave a YOLO11/12/26 its head)."""
        return issubclass(m, registry.COMPOSITE_HOSTS["C3k2"][0]) or (d or {}).get("legacy") is False

    def parse(self, i, f, n, m, args, ch, width, max_channels, d):
        """Read the row (``dialects.read``) and apply the block's channel rule: returns (c2, constructor args, n)."""
        row = (d.get("backbone", []) + d.get("head", []))[i]
        spec, alias = registry.lookup(row[2])
        layer = registry.Layer(i, f, n, row[2], list(args), ch, width, max_channels, row[1], d.get("scale"))
        for x in [f] if isinstance(f, int) else f if isinstance(f, (list, tuple)) else []:
            if isinstance(x, int) and not -len(ch) <= x < len(ch):  # len(ch) == i: only earlier layers
                raise layer.error(f"'from' index {x} does not name an earlier layer (valid: -1 or 0..{i - 1})")
        try:
            decision = dialects.read(spec, alias, layer)
        except registry.LayerError as e:
            if _recorder is None or not _recorder.keep_going:
                raise
            decision = _recorder.refused(spec, alias, layer, e)
        else:
            if _recorder is not None:
                _recorder.decided(layer, decision)
        if decision.conversion:
            what = decision.conversion.split("; canonical row: ")[0]
            # a row in our dialect whose note is about its block (a composite's placement): once per model and name
            where = (row[2], what) if decision.reading.rule == "yolo_attn" and alias is None else (i, decision.conversion)
            _log_once((d.get("yaml_file"), d.get("scale"), *where),
                      f"yolo_attn: YAML layer {i} ({row[2]}): {decision.conversion}")  # fmt: skip
        return spec.rule(layer, decision.values)

    def built(self, module, d: dict, i: int | None = None) -> None:
        """After construction of layer ``i``: arm the identity start of the layer's blocks when the YAML asks for it
        (the layer itself, its repeats and a composite's bottleneck blocks; not blocks nested inside another block:
        AFF's MS-CAMs are used through ``weights()``, so gates there would be parameters without gradients); give
        the RT-DETR head its query recollection decoder when the YAML says ``sqr:``."""
        for key, (since, what) in self.unread.items():
            if key in d:  # this release would build the model without it: a different model, silently
                raise UltralyticsTooOld(f"yolo_attn: model YAML key {key!r} ({what}) {needs(since)}")
        if d.get("sqr") is not None:
            self.recollect(module, d, i)
        if d.get("identity_start"):
            for m in module if isinstance(module, torch.nn.Sequential) else [module]:
                if isinstance(m, (IdentityStart, Composite)):
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

    def build_failed(self, i, m, args, exc: Exception, d: dict | None = None) -> None:
        """Re-raise a failed construction of one of our blocks as a LayerError; other modules' errors pass."""
        if m not in self.classes or isinstance(exc, (registry.LayerError, UltralyticsTooOld)):
            return
        name = (d.get("backbone", []) + d.get("head", []))[i][2] if d else m.__name__
        spec = registry.get(name) if isinstance(name, str) else None
        block = spec.inner if spec is not None and spec.inner else spec.name if spec is not None else m.__name__
        msg = str(exc)
        for prefix in (f"{block}: ", f"{m.__name__}: "):
            if msg.startswith(prefix):
                msg = msg[len(prefix) :]
                break
        else:
            msg = f"could not be built from args {args}: {msg}"
        raise registry.LayerError(i, name, msg) from exc


# ----------------------------------------------------------------------------------------------------------------
# parse_model
# ----------------------------------------------------------------------------------------------------------------
def _patch_parse_model(tasks) -> None:
    current = getattr(tasks, "parse_model", None)
    if getattr(current, MARK, False):
        return
    patched = parser_ast.patched_parse_model(tasks, ParserHooks)
    setattr(patched, MARK, True)
    tasks.parse_model = patched
    nn_pkg = sys.modules.get("ultralytics.nn")  # re-exports parse_model (only once its own import has finished)
    if nn_pkg is not None and getattr(nn_pkg, "parse_model", None) is current:
        nn_pkg.parse_model = patched


# ----------------------------------------------------------------------------------------------------------------
# YAML lookup
# ----------------------------------------------------------------------------------------------------------------
_soft_errors: dict = {}  # unified name -> the ComposeError of its soft lookup (the name as the user wrote it)


def _patch_check_yaml(tasks) -> None:
    current = getattr(tasks, "check_yaml", None)
    loader = getattr(tasks, "yaml_model_load", None)
    if current is None or loader is None or "check_yaml" not in loader.__code__.co_names:
        raise hook_error("ultralytics.nn.tasks.yaml_model_load no longer calls check_yaml")
    if getattr(current, MARK, False):
        return

    def check_yaml(file, suffix=(".yaml", ".yml"), hard=True):
        """Ultralytics' check_yaml, resolving names as ``yolo_attn.names.resolve`` does: a file, a shipped ready config,
        an Ultralytics YAML (by the name or its unified name), then a composed name (``yolo26n-cbam.yaml``)."""
        name, key = str(file), names.unscaled(str(file))
        try:
            found = names.resolve(name, lambda n: current(n, suffix=suffix, hard=False) or None)
        except compose.ComposeError as e:
            if not hard:  # yaml_model_load asks for one form of the name softly, then the other (unified or scaled)
                _soft_errors[key] = e
                return None
            raise _soft_errors.pop(key, e) from None  # the error for the name as typed
        if found:
            return str(found.path)
        if hard and key in _soft_errors:  # yolov10s-dcn.yaml refused; yolov10-dcn.yaml has no base
            raise _soft_errors.pop(key) from None
        try:
            return current(file, suffix=suffix, hard=hard)
        except FileNotFoundError:
            base = os.path.basename(name)
            if re.match(r"^yolo(e-)?26", base) and not at_least(YOLO26):
                raise UltralyticsTooOld(f"yolo_attn: {base}: YOLO26 {needs(YOLO26)}") from None
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


def _patch_load(tasks) -> None:
    base = getattr(tasks, "BaseModel", None)
    current = getattr(base, "load", None)
    if current is None or "weights" not in inspect.signature(current).parameters:
        raise hook_error("ultralytics.nn.tasks.BaseModel.load(weights, verbose) is missing")
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
        raise hook_error(f"ultralytics.utils.callbacks.base.default_callbacks is missing ({e})") from e
    hooks = default_callbacks.get("on_export_start")
    if not isinstance(hooks, list):
        raise hook_error("Ultralytics' default callbacks have no 'on_export_start' list")
    if export.on_export_start not in hooks:
        hooks.append(export.on_export_start)


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
        checkpoints.register_safe_globals()
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
