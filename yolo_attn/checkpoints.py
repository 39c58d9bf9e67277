"""Checkpoints: loading Ultralytics ``.pt`` files across releases, and the classes a yolo_attn checkpoint names.

Part of the Ultralytics contact (with ``patch``, ``parser_ast`` and ``releases``). Checkpoints pickle whole models,
so the import paths of the classes in ``yolo_attn.modules`` are part of the format: keep them stable.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

from . import modules
from .releases import hook_error


def load_checkpoint(path: str):
    """(model, checkpoint dict) of an Ultralytics ``.pt``: ``load_checkpoint`` from 8.3.x's later releases on,
    ``attempt_load_one_weight`` before that."""
    import ultralytics.nn.tasks as tasks

    fn = getattr(tasks, "load_checkpoint", None) or getattr(tasks, "attempt_load_one_weight", None)
    if fn is None:
        raise hook_error("ultralytics.nn.tasks has neither load_checkpoint nor attempt_load_one_weight")
    return fn(str(path))


def checkpoint_classes() -> list[type]:
    """Every class a yolo_attn checkpoint can reference: all nn.Module classes defined in yolo_attn.modules."""
    found = []
    for info in pkgutil.iter_modules(modules.__path__):
        mod = importlib.import_module(f"{modules.__name__}.{info.name}")
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == mod.__name__:
                found.append(obj)
    return found


def register_safe_globals() -> None:
    """Allow our classes under ``ULTRALYTICS_SAFE_LOAD=1`` (``torch.load(weights_only=True)``)."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no weights_only allow-list; Ultralytics then loads normally
        add(checkpoint_classes())
