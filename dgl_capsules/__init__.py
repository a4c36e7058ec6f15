"""dgl_capsules: capsule networks as bipartite DGL graphs.

Capsule layers are graphs whose edges carry votes and routing state; dynamic,
EM and Heinsen routing are message passing over them.

The core (graphs, routing, layers, functional) is imported with the package;
the outer subpackages (``models``, ``data``, ``train``, ``viz``, ``testing``,
...) are imported on first use, so ``import dgl_capsules as dc`` stays fast
and ``dc.models.MatrixCapsNet`` still works.
"""
#: The version of the package.
__version__ = "0.1.0"

import importlib
import os as _os
import sys as _sys

# NOTE: large tensors in transparent huge pages. Routing streams edge tensors of tens of MB that
# are allocated fresh on every step; with 4 KB pages the kernel's first-touch page faults cost more
# than the arithmetic (EM routing's training step: 1.3-1.6x faster with huge pages on a 2-core VM,
# bench/bench_em_step.py). PyTorch reads THP_MEM_ALLOC_ENABLE once, at its first allocation, so this
# only takes effect when dgl_capsules is imported before torch (the CLI, the benchmarks, scripts
# that import it first); THP_MEM_ALLOC_ENABLE=0 in the environment turns it off. It is a trade: without
# dgl_capsules.train.reuse_freed_memory() it makes HeinsenImageNet's step 1.6x slower; with it, every model
# is at its fastest and the page size matters within 5 % (docs/performance.rst).
if "torch" not in _sys.modules:
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from . import functional, nn, routing
from .graph import capsule_graph, conv_capsule_graph
from .routing import RoutingResult

# Subpackages and modules reached as attributes of the package, imported on first use.
_LAZY = ("analysis", "cli", "data", "models", "reproduce", "testing", "train", "viz")

__all__ = [
    "__version__",
    "capsule_graph",
    "conv_capsule_graph",
    "RoutingResult",
    "functional",
    "nn",
    "routing",
    "analysis",
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
