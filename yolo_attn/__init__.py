"""yolo_attn: attention, fusion and convolution blocks from the literature as names in Ultralytics YOLO YAMLs.

Importing this package activates it (see ``yolo_attn.patch``); an installed start-up file does the same in every
process the moment ``ultralytics.nn.tasks`` is imported, so the ``yolo`` command and DDP workers need no import.
"""

from ._version import __version__
from . import modules, registry  # noqa: E402
from .names import MODEL_YAMLS  # noqa: E402
from .patch import activate, deactivate, is_active  # noqa: E402
from .registry import BLOCKS, LayerError  # noqa: E402

activate()

__all__ = ("BLOCKS", "LayerError", "MODEL_YAMLS", "__version__", "activate", "deactivate", "is_active", "modules",
           "registry")  # fmt: skip
