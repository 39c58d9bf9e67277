"""Ultralytics releases: which ones yolo_attn supports, and what a YAML needs from a newer one.

Part of the Ultralytics contact (with ``patch``, ``parser_ast`` and ``checkpoints``): the one place that reads the
installed Ultralytics version, parses release strings and words the errors about them.
"""

from __future__ import annotations

import re

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
YOLO26 = "8.4.0"  # the first release with YOLO26's model YAMLs


class UltralyticsHookError(RuntimeError):
    """The installed Ultralytics lacks a hook point yolo_attn needs, or another add-on changed it first."""


class UltralyticsTooOld(ValueError):
    """A YAML needs a module or key that the installed Ultralytics release does not have yet."""


def installed() -> str:
    """The installed Ultralytics version string."""
    from ultralytics import __version__

    return __version__


def release(version: str) -> tuple[int, ...]:
    """'8.4.190' -> (8, 4, 190); '8.3.0.dev1' -> (8, 3, 0)."""
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def at_least(since: str) -> bool:
    """Whether the installed Ultralytics is ``since`` or newer."""
    return release(installed()) >= release(since)


def needs(since: str) -> str:
    return (f"needs ultralytics>={since}; the installed Ultralytics is {installed()}: "
            f"pip install 'ultralytics>={since},<8.5'")  # fmt: skip


def hook_error(what: str) -> UltralyticsHookError:
    return UltralyticsHookError(
        f"yolo_attn cannot hook into Ultralytics {installed()}: {what}. yolo_attn supports "
        f"ultralytics{SUPPORTED}; install one (pip install 'ultralytics{SUPPORTED}'), or set YOLO_ATTN_DISABLE=1 "
        "to start Ultralytics without yolo_attn."
    )
