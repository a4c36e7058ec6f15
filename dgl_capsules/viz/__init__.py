"""Pictures of routing: coupling entropy, coupling histograms and bipartite animations.

Every routing function records the coupling of each iteration with
``return_trace=True``; these functions turn such a trace into figures and
animations for any algorithm (dynamic, EM, Heinsen) and any capsule graph.
They return the matplotlib objects and never show or close them, so scripts,
notebooks and Sphinx-gallery can all use them.
"""
from ..functional import coupling_entropy
from .bipartite import animate_bipartite
from .entropy import entropy_curve, plot_entropy
from .histogram import animate_histogram
from .report import routing_report
from .save import save_animation

__all__ = [
    "coupling_entropy",
    "entropy_curve",
    "plot_entropy",
    "animate_histogram",
    "animate_bipartite",
    "save_animation",
    "routing_report",
]
