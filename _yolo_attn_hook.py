"""Start-up hook for yolo_attn, run by ``yolo_attn_activate.pth`` in every Python process.

It installs a one-shot ``sys.meta_path`` finder that waits for ``ultralytics.nn.tasks`` to be imported and then
imports ``yolo_attn``, which registers the blocks with Ultralytics' model parser. It imports nothing heavy itself
(no torch, no ultralytics), so a Python start that never touches Ultralytics pays almost nothing.

Switch it off with the environment variable ``YOLO_ATTN_DISABLE=1``; ``import yolo_attn`` still activates.
"""

import os
import sys

_TARGET = "ultralytics.nn.tasks"


class _ActivateAfterTasks:
    """Meta-path finder: lets the normal finders locate ``ultralytics.nn.tasks`` and activates yolo_attn after it runs."""

    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        _remove()  # one-shot: the finders below find the real spec, and later imports never reach us
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ExecThenActivate(spec.loader)
        return spec


class _ExecThenActivate:
    """Loader wrapper: runs the real loader, restores it on the module, then imports yolo_attn."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        import yolo_attn  # noqa: F401  (importing activates; errors propagate so a broken hook is never silent)

    def __getattr__(self, item):  # get_source, get_code, ... of the real loader
        return getattr(self.loader, item)


def _remove():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _ActivateAfterTasks)]


def install():
    """Arm the hook unless switched off, already armed, or the target is already imported."""
    if os.environ.get("YOLO_ATTN_DISABLE", "").lower() in {"1", "true", "yes", "on"}:
        return
    if _TARGET in sys.modules:
        import yolo_attn  # noqa: F401
        return
    if not any(isinstance(f, _ActivateAfterTasks) for f in sys.meta_path):
        sys.meta_path.insert(0, _ActivateAfterTasks())


install()
