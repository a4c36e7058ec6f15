"""The description of a training run: :class:`TrainConfig` and its learning-rate schedule.

A run is one :class:`TrainConfig`; :func:`~dgl_capsules.train.train` stores
``dataclasses.asdict(config)`` in the checkpoint and ``metrics.json`` and
refuses to resume with any field changed except a larger ``epochs``.
"""
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = ["TrainConfig", "learning_rate", "SHAPE_KEYS"]

#: The model settings that come from the data set, not from the user: channels, image side, classes.
SHAPE_KEYS = ("in_channels", "image_size", "n_classes")


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _has_nan(value):
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    if isinstance(value, (list, tuple)):
        return any(_has_nan(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return False


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in its checkpoint and written to its metrics.

    Parameters
    ----------
    model : str
        A registered model (:func:`~dgl_capsules.models.list_models`): ``"capsnet"``, ``"cnn"``, ...
    preset : str or None
        One of the model's presets (:func:`~dgl_capsules.models.model_presets`);
        ``None``: the model's defaults.
    settings : dict
        Single settings that replace the preset's (``{"n_iters": 2}``,
        ``{"width": 0.5}`` for the CNN); the input shape comes from the data.
    data : str
        A data spec for :func:`~dgl_capsules.data.get_dataset` (recorded only
        when :func:`train` is given ``splits``).
    image_size : int or None
        Pad the images to this side (e.g. 40 for the affNIST-style test).
    epochs : int
        Total epochs; a resumed run continues up to this number.
    batch_size : int
        Per process.
    lr, lr_decay : float
        Adam learning rate, multiplied by ``lr_decay`` after every epoch (or
        every ``lr_decay_steps`` steps).
    lr_decay_steps : int
        0: decay once per epoch. ``N > 0``: decay smoothly per optimiser step,
        ``lr * lr_decay ** (step / N)`` (Sabour et al.'s published code: 0.96
        every 2,000 steps).
    lr_floor : float
        The learning rate never falls below this (0: no floor).
    shift : int
        Random shifts of up to this many pixels per axis (training only).
    rotate, scale : float
        Random rotations uniform in ``±rotate`` degrees and scalings uniform in
        ``[1 - scale, 1 + scale]`` about the image centre (training only, after
        the shift; see :func:`~dgl_capsules.data.random_affine`).
    augment : str
        A named augmentation (:func:`~dgl_capsules.data.list_augmentations`)
        applied to every training batch after the shift, rotation and scaling;
        ``""``: none.
    ema : float
        With ``0 < ema < 1``, validate, select and test an exponential moving
        average of the weights, updated after every step as
        ``avg = ema * avg + (1 - ema) * weights`` (0: the weights themselves).
    seed : int
        Seeds initialisation, shuffling and augmentation: the same seed gives
        the same run (on one thread), interrupted and resumed or not.
    trace_routing : int
        With N > 0, record the routing of N fixed validation images after
        initialisation and after every epoch
        (:func:`dgl_capsules.viz.record_routing`).
    eval_each_epoch : tuple of str
        Extra evaluation sets scored after every epoch with the weights being
        validated, recorded in each curve row as ``<name>_accuracy``:
        ``"test"`` or any other attribute of the splits that is an
        :class:`~dgl_capsules.data.ImageDataset` (``"novel"`` of
        :class:`~dgl_capsules.data.ViewpointSplits`); not ``"train"`` or
        ``"val"``, whose accuracies the curve already has. Checked against the
        data when it is loaded, before training. Scoring them changes neither
        the run nor its ``seconds`` (training and validation time only); they
        select nothing.

    Examples
    --------
    >>> config = TrainConfig(preset="tiny", epochs=2, settings={"n_iters": 2})
    >>> config.validate().epochs
    2
    >>> TrainConfig(lr_decay=0).validate()
    Traceback (most recent call last):
    ...
    ValueError: lr_decay must be a finite number > 0; got 0
    """

    model: str = "capsnet"
    preset: Optional[str] = "small"
    settings: dict = field(default_factory=dict)
    data: str = "mnist5k"
    image_size: Optional[int] = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    lr_decay: float = 1.0
    lr_decay_steps: int = 0
    lr_floor: float = 0.0
    shift: int = 0
    rotate: float = 0.0
    scale: float = 0.0
    augment: str = ""
    ema: float = 0.0
    seed: int = 0
    trace_routing: int = 0
    eval_each_epoch: tuple = ()

    def __post_init__(self):
        if isinstance(self.eval_each_epoch, list):  # JSON gives lists; the checkpoint compares tuples
            self.eval_each_epoch = tuple(self.eval_each_epoch)

    def validate(self):
        """Check every field (model, preset and setting names against the registry); return ``self``.

        Raises
        ------
        ValueError
            Naming the field, what was expected and what came.
        TypeError
            For a field of the wrong type (``settings`` not a dict, ``data`` not a string).
        """
        self._check_model()
        if not isinstance(self.data, str) or not self.data:
            raise TypeError(f"data must be a data set spec string; got {self.data!r}")
        for name, low in (("epochs", 1), ("batch_size", 1), ("shift", 0), ("trace_routing", 0),
                          ("lr_decay_steps", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an integer; got {self.seed!r}")
        if self.image_size is not None and (not _is_int(self.image_size) or self.image_size < 1):
            raise ValueError(f"image_size must be None or a positive integer; got {self.image_size!r}")
        for name in ("lr", "lr_decay"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        if not _is_number(self.lr_floor) or not 0 <= self.lr_floor <= self.lr:
            raise ValueError(f"lr_floor must be a number in [0, lr] = [0, {self.lr!r}]; got {self.lr_floor!r}")
        for name, low, high, interval in (("rotate", 0, 180, "[0, 180] degrees"), ("scale", 0, 1, "[0, 1)"),
                                          ("ema", 0, 1, "[0, 1)")):
            value = getattr(self, name)
            inside = _is_number(value) and low <= value <= high and (name == "rotate" or value < high)
            if not inside:
                raise ValueError(f"{name} must be in {interval}; got {value!r}")
        if self.augment != "":
            from .data import get_augmentation

            get_augmentation(self.augment)
        self._check_eval_each_epoch()
        return self

    def _check_eval_each_epoch(self):
        names = self.eval_each_epoch
        if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) and n for n in names):
            raise TypeError(f"eval_each_epoch must be a tuple of evaluation set names such as ('test', 'novel'); "
                            f"got {names!r}")
        clash = [n for n in names if n in ("train", "val")]
        if clash or len(set(names)) != len(names):
            why = f"{clash[0]!r} is scored every epoch already" if clash else "a name is repeated"
            raise ValueError(f"eval_each_epoch must name distinct extra evaluation sets ({why}); got {names!r}")

    def _check_model(self):
        """The model, preset and setting names, by the model registry's own check (one wording)."""
        from .models import check_model

        if not isinstance(self.settings, dict) or not all(isinstance(k, str) for k in self.settings):
            check_model(self.model, self.preset)
            raise TypeError(f"settings must be a dict of setting name -> value; got {self.settings!r}")
        check_model(self.model, self.preset, **{k: v for k, v in self.settings.items() if k not in SHAPE_KEYS})
        for key, value in self.settings.items():
            if key in SHAPE_KEYS:
                raise ValueError(f"settings: {key} comes from the data, not from the settings"
                                 + (" (use image_size)" if key == "image_size" else ""))
            if _has_nan(value):
                raise ValueError(f"settings: {key} must not be NaN; got {value!r}")


def learning_rate(config, epoch, step):
    """The learning rate of ``config`` in ``epoch`` (0-based) at optimiser ``step`` (0-based, over the run).

    Examples
    --------
    >>> learning_rate(TrainConfig(lr=1e-3, lr_decay=0.5), epoch=2, step=0)
    0.00025
    >>> learning_rate(TrainConfig(lr=1e-3, lr_decay=0.96, lr_decay_steps=2000), epoch=0, step=4000)
    0.0009216
    >>> learning_rate(TrainConfig(lr=1e-3, lr_decay=0.5, lr_floor=4e-4), epoch=2, step=0)
    0.0004
    """
    if config.lr_decay_steps:
        lr = config.lr * config.lr_decay ** (step / config.lr_decay_steps)
    else:
        lr = config.lr * config.lr_decay ** epoch
    return max(lr, config.lr_floor)
