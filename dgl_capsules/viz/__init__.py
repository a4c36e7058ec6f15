"""Pictures of routing: coupling entropy, coupling histograms and bipartite animations.

Every routing function records the coupling of each iteration with
``return_trace=True``; these functions turn such a trace into figures and
animations for any registered routing family and any capsule graph.
:func:`visualize_model`, :func:`record_routing` and
:func:`animate_over_training` do it for every routed layer of a trained
model (what its ``routing(x)`` returns), and over its training, labelled
with each family's registered label. They return the matplotlib objects (or
the paths they wrote) and never show or close figures, so scripts, notebooks
and Sphinx-gallery can all use them.
"""
from ..functional import coupling_entropy
from .bipartite import BipartiteOptions, animate_bipartite, edge_scale
from .entropy import entropy_curve, plot_entropy
from .histogram import animate_histogram
from .reconstruction import reconstruction_grid
from .report import routing_report
from .save import save_animation
from .trained import model_routing, visualize_model
from .training import animate_over_training, record_routing

__all__ = [
    "coupling_entropy",
    "entropy_curve",
    "plot_entropy",
    "animate_histogram",
    "animate_bipartite",
    "BipartiteOptions",
    "edge_scale",
    "save_animation",
    "routing_report",
    "model_routing",
    "visualize_model",
    "reconstruction_grid",
    "record_routing",
    "animate_over_training",
]
