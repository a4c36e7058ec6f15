"""Whole networks: every image model follows one protocol that :mod:`dgl_capsules.train` relies on.

``out = model(x, y=None)``, ``model.loss(out, y, step)``, ``model.scores(out)``
``(B, n_classes)`` and ``model.routing(x)``, a list of ``(name, graph,
RoutingResult, parent_strength)`` for every routed layer.
"""
from .baseline import BaselineCNN
from .capsnet import CapsNet, CapsNetOutput
from .matrix import MatrixCapsNet, MatrixCapsOutput
from .sequence import SequenceCapsClassifier, SequenceCapsOutput

__all__ = ["BaselineCNN", "CapsNet", "CapsNetOutput", "MatrixCapsNet", "MatrixCapsOutput", "SequenceCapsClassifier", "SequenceCapsOutput"]
