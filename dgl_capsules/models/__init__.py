"""Whole networks, by name: :func:`get_model` builds any registered image model with a preset.

Every image model follows one protocol, :class:`ImageModel`, which
:mod:`dgl_capsules.train` relies on: ``out = model(x, y=None)``,
``model.loss(out, y, step)``, ``model.scores(out)`` ``(B, n_classes)`` and
``model.routing(x)``, a list of :class:`RoutedLayer` for every routed layer
(its graph, routing result with trace, routing family and the strengths of
its parents and children). A new model is one :func:`register_model` where
it is defined.
"""
from .registry import (
    ImageModel, RoutedLayer, check_model, get_model, list_models, model_presets, model_settings, n_parameters,
    register_model, unregister_model,
)
from .weights import Weights, get_weights, list_weights
from .capsnet import CapsNet, CapsNetOutput  # noqa: E402  (registers "capsnet")
from .efficient import EfficientCapsNet  # noqa: E402  (registers "efficient-capsnet")
from .baseline import BaselineCNN, CNNOutput  # noqa: E402  (registers "cnn")
from .matrix import MatrixCapsNet, MatrixCapsOutput  # noqa: E402  (registers "matrixcaps")
from .heinsen_images import HeinsenImageNet, HeinsenImageOutput  # noqa: E402  (registers "heinsen")
from .sequence import SequenceCapsClassifier, SequenceCapsOutput  # noqa: E402

__all__ = [
    "BaselineCNN", "CNNOutput", "CapsNet", "CapsNetOutput", "EfficientCapsNet", "HeinsenImageNet", "HeinsenImageOutput",
    "ImageModel", "MatrixCapsNet", "MatrixCapsOutput", "RoutedLayer", "SequenceCapsClassifier",
    "SequenceCapsOutput", "check_model", "get_model", "list_models", "model_presets", "model_settings",
    "n_parameters", "register_model", "unregister_model", "Weights", "get_weights", "list_weights",
]
