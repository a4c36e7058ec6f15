"""Instruments for what routing does in a trained network, for every routing family.

- :mod:`~dgl_capsules.analysis.metrics` measures one routed layer from its couplings: normalised entropy, how
  static the routing is across inputs, dead capsules, agreement between votes and poses, credit chained across
  layers;
- :func:`analyze` (:mod:`~dgl_capsules.analysis.summary`) accumulates them over a data set for every routed
  layer and iteration of a trained model;
- :func:`swapped_routing` and :func:`routing_swap` (:mod:`~dgl_capsules.analysis.swap`) replace the routing at
  test time (uniform or random couplings, other iteration counts) and score the model;
- :func:`robustness` (:mod:`~dgl_capsules.analysis.curves`) draws accuracy against the size of one
  transformation for several models;
- :mod:`~dgl_capsules.analysis.plots` draws all of these, and :func:`write_analysis` writes them all to a
  folder (``dgl-capsules analyze``).
"""
from .curves import TRANSFORMS, robustness
from .metrics import (
    agreement, chain_credit, dead_share, normalised_entropy, routing_dynamics, static_index, weighted_mean,
)
from .plots import plot_dead, plot_entropy, plot_robustness, plot_swap
from .summary import analyze
from .swap import MODES, routed_modules, routing_swap, swapped_routing
from .report import write_analysis

__all__ = ["analyze", "write_analysis", "routing_swap", "swapped_routing", "routed_modules", "MODES", "robustness",
           "TRANSFORMS", "plot_entropy", "plot_swap", "plot_dead", "plot_robustness", "agreement", "chain_credit",
           "dead_share", "normalised_entropy", "routing_dynamics", "static_index", "weighted_mean"]
