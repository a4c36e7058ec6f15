"""dgl_capsules: capsule networks as bipartite DGL graphs.

Capsule layers are graphs whose edges carry votes and routing state; dynamic,
EM and Heinsen routing are message passing over them.

The core (graphs, routing, layers, functional) is imported with the package;
the outer subpackages (``models``, ``data``, ``train``, ``viz``, ``testing``,
...) are imported on first use, so ``import dgl_capsules as dc`` stays fast
and ``dc.models.MatrixCapsNet`` still works.
"""
__version__ = "0.1.0"

import importlib

from . import functional, nn, routing
from .graph import capsule_graph, conv_capsule_graph
from .routing import RoutingResult

# Subpackages and modules reached as attributes of the package, imported on first use.
_LAZY = ("cli", "data", "models", "reproduce", "testing", "train", "viz")

__all__ = [
    "__version__",
    "capsule_graph",
    "conv_capsule_graph",
    "RoutingResult",
    "functional",
    "nn",
    "routing",
    "data",
    "models",
    "testing",
    "train",
    "viz",
]


def __getattr__(name):
    if name in _LAZY:
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
