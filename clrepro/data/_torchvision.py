"""The one place that imports torchvision.

The PyPI torchvision wheel is a CUDA build; next to the CPU torch wheel its import fails with
``operator torchvision::nms does not exist`` (pytorch/vision#9337) because the compiled ops
library cannot load. Datasets and transforms never call those ops, so declaring their schemas
is enough for the import to succeed. The workaround only runs when the plain import fails.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_keepalive = []  # a torch.library.Library unregisters its definitions when collected


def import_torchvision() -> ModuleType:
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        if "torchvision::nms does not exist" not in str(error):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS.values():
        try:
            library.define(schema)
        except RuntimeError:  # already defined by a partial earlier import
            pass
    _keepalive.append(library)
    return importlib.import_module("torchvision")
