"""Instruments for what routing does in a trained network, for every routing family.

:mod:`~dgl_capsules.analysis.metrics` measures one routed layer from its
couplings: normalised entropy, how static the routing is across inputs, dead
capsules, agreement between votes and poses, and credit chained across layers; :func:`~dgl_capsules.analysis.analyze.analyze`
accumulates them over a data set for every routed layer of a trained model.
"""
from .analyze import analyze
from .swap import MODES, routed_modules, routing_swap, swapped_routing
from .metrics import (
    agreement, chain_credit, dead_share, normalised_entropy, routing_dynamics, static_index, weighted_mean,
)

__all__ = ["analyze", "routing_swap", "swapped_routing", "routed_modules", "MODES", "agreement", "chain_credit", "dead_share", "normalised_entropy", "routing_dynamics", "static_index",
           "weighted_mean"]
