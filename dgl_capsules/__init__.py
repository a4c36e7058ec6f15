"""dgl_capsules: capsule networks as bipartite DGL graphs.

Capsule layers are graphs whose edges carry votes and routing state; dynamic,
EM and Heinsen routing are message passing over them.
"""
__version__ = "0.1.0"

from . import data, functional, nn, routing, viz
from .graph import capsule_graph, conv_capsule_graph
from .routing import RoutingResult

__all__ = [
    "__version__",
    "capsule_graph",
    "conv_capsule_graph",
    "RoutingResult",
    "data",
    "functional",
    "nn",
    "routing",
    "viz",
]
