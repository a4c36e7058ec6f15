"""Trained weights that ship inside the package: ``get_model(name, preset, weights="mnist")``.

Each entry of the manifest (``models/weights/manifest.json``) names one file
of the same folder and says how it was made: the model, preset and settings
it rebuilds (routing settings such as ``n_iters`` change the outputs without
changing the state dict, so they are part of the entry), the data it was
trained on, its parameter count, the test accuracy of the shipped file, the
mean ± std of the experiment it comes from, the command and commit that
trained it, and the file's SHA-256, checked on every load. Files hold tensors
only (floating-point ones in half precision) and load with
``weights_only=True``; nothing is downloaded.
"""
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..files import load_file

__all__ = ["Weights", "list_weights", "get_weights", "load_weights", "weights_dir"]

_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def weights_dir():
    """The folder of the shipped weight files and their ``manifest.json``."""
    return _DIR


@dataclass(frozen=True)
class Weights:
    """One shipped set of trained weights (an entry of the manifest).

    Attributes
    ----------
    model, preset, name : str
        ``get_model(model, preset, weights=name)`` loads it.
    file : str
        File name in :func:`weights_dir`.
    sha256 : str
        The file's SHA-256, checked on load.
    settings : dict
        Model settings beyond the preset it was trained with (routing settings included).
    shape : dict
        ``in_channels``, ``image_size``, ``n_classes``.
    data : str
        The data spec it was trained on.
    parameters : int
        Parameter count of the model.
    accuracy : float
        Test accuracy of the shipped file (half-precision weights) on ``data``'s test split.
    experiment : dict
        ``name``, ``row``, ``seed`` of the run, and ``mean``, ``std``, ``seeds``: the row's test accuracy over
        its finished seeds when the file was made.
    command : str
        The command that trained it (and the one that made the file).
    commit : str
        The commit the run trained with.
    routing : dict
        The routing the model was trained with: ``family`` (a :func:`~dgl_capsules.routing.list_routings`
        name, or ``None`` for a model without routing) and its settings (``n_iters``, ...).
    dtype : str
        How floating-point tensors are stored (``"float16"``).
    """

    model: str
    preset: str
    name: str
    file: str
    sha256: str
    settings: dict = field(default_factory=dict)
    shape: dict = field(default_factory=dict)
    data: str = "mnist"
    parameters: int = 0
    accuracy: float = 0.0
    experiment: dict = field(default_factory=dict)
    command: str = ""
    commit: str = ""
    routing: dict = field(default_factory=dict)
    dtype: str = "float16"

    @property
    def path(self):
        """Where the file is."""
        return os.path.join(weights_dir(), self.file)


def _manifest():
    path = os.path.join(weights_dir(), "manifest.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        entries = json.load(f)
    return [Weights(**e) for e in entries]


def list_weights(model=None):
    """The shipped weights (of ``model`` only, if given), sorted by model, preset and name.

    Returns
    -------
    list of Weights
    """
    out = [w for w in _manifest() if model is None or w.model == model]
    return sorted(out, key=lambda w: (w.model, w.preset, w.name))


def get_weights(model, preset=None, name="mnist"):
    """The :class:`Weights` entry of ``model`` (and ``preset``) called ``name``.

    With ``preset=None``, the one entry of that model and name, whatever its preset.

    Raises
    ------
    ValueError
        Naming what is shipped, if there is no such entry (or several without a preset).
    """
    found = [w for w in list_weights(model) if w.name == name and (preset is None or w.preset == preset)]
    if len(found) == 1:
        return found[0]
    shipped = ", ".join(f"{w.model} {w.preset} {w.name!r}" for w in list_weights()) or "none"
    what = f"{model}" + (f" {preset}" if preset is not None else "")
    if not found:
        raise ValueError(f"weights: no shipped weights {name!r} for {what}; shipped: {shipped}")
    raise ValueError(f"weights: {what} has {name!r} weights for presets {', '.join(w.preset for w in found)}; "
                     f"give the preset")


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_weights(model, entry):
    """Load the shipped ``entry`` into ``model`` (strict), after checking the file's SHA-256.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If the file's SHA-256 differs from the manifest's (altered or damaged).
    """
    path = entry.path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights: the file of {entry.model} {entry.preset} {entry.name!r} is missing "
                                f"({path}); reinstall dgl_capsules")
    digest = _sha256(path)
    if digest != entry.sha256:
        raise ValueError(f"weights: {path} has SHA-256 {digest[:16]}..., the manifest says {entry.sha256[:16]}...: "
                         f"the file was altered or damaged; reinstall dgl_capsules")
    state = load_file(path, "weights")
    like = next((p.dtype for p in model.parameters()), torch.float32)
    model.load_state_dict({k: v.to(like) if torch.is_floating_point(v) else v for k, v in state.items()})
    return model


def check_settings(entry, settings):
    """Refuse ``settings`` that differ from those ``entry`` was trained with (they would change its outputs)."""
    trained = dict(entry.settings, **entry.shape)
    for key, value in settings.items():
        if key in trained and trained[key] != value:
            raise ValueError(f"settings: the {entry.name!r} weights of {entry.model} {entry.preset} were trained "
                             f"with {key}={trained[key]!r}; got {key}={value!r} (build the model without weights "
                             f"to change it)")
        if key not in trained:
            raise ValueError(f"settings: the {entry.name!r} weights of {entry.model} {entry.preset} fix every "
                             f"setting; got {key}={value!r}")


def entry_for(name, preset, weights) -> Optional[Weights]:
    """The entry ``get_model`` loads (``None`` without ``weights``)."""
    if weights is None:
        return None
    if not isinstance(weights, str) or not weights:
        raise ValueError(f"weights must be the name of shipped weights such as 'mnist'; got {weights!r}")
    return get_weights(name, preset, weights)
