"""The run directory of :func:`~dgl_capsules.train.train`: its files, its checkpoint, and models rebuilt from them.

A run directory ``out`` holds

- ``checkpoint.pt``: the configuration and everything needed to resume (model,
  optimizer, epoch, step, random states, best validation model, curve) as
  tensors and plain values only, rewritten atomically after every epoch and
  when a run is stopped by a signal (then with ``"partial"``: where in the
  epoch it stopped);
- ``model.pt``: the model selected on the validation split, with the
  configuration and input shape that rebuild it (:func:`load_model`);
- ``metrics.json``: the configuration and the results;
- ``routing_trace/epoch_NNN.pt`` with ``trace_routing`` > 0;
- ``.lock`` while a process trains into it (:class:`~dgl_capsules.files.FolderLock`).

Every file is read with :func:`~dgl_capsules.files.load_file`: nothing in it runs.
"""
import os
import random
import shutil
from dataclasses import asdict

import numpy as np
import torch

from .config import SHAPE_KEYS, TrainConfig
from .files import check_writable_folder, load_file

__all__ = ["RUN_FILES", "check_run_dir", "clear_run_dir", "read_checkpoint", "load_model", "build_model",
           "rng_state", "set_rng_state", "seed_all"]

RUN_FILES = ("checkpoint.pt", "model.pt", "metrics.json")
"""The files that make a directory a run directory (:func:`~dgl_capsules.train.train` refuses to mix two runs)."""


def check_run_dir(out, resume, overwrite):
    """Refuse to mix two runs in ``out``, or to write where no directory can be; the path of its checkpoint.

    Raises
    ------
    TypeError
        If ``out`` is not a path.
    ValueError
        If ``out`` is a file, cannot be written, holds another run (unless
        ``resume`` or ``overwrite``), or ``resume`` finds no checkpoint.
    """
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a directory path; got {out!r}")
    out = os.fspath(out)
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True exclude each other")
    check_writable_folder(out, "out", "a directory for the run")
    ckpt_path = os.path.join(out, "checkpoint.pt")
    if resume and not os.path.isfile(ckpt_path):
        raise ValueError(f"resume: there is no checkpoint to resume at {ckpt_path}")
    present = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if present and not resume and not overwrite:
        raise ValueError(f"out {out!r} holds another run ({', '.join(present)}); "
                         f"continue it with resume=True or replace it with overwrite=True")
    return ckpt_path


def clear_run_dir(out):
    """Remove the files of the run in ``out`` (``overwrite=True``), its routing trace included."""
    for f in RUN_FILES:
        if os.path.exists(os.path.join(out, f)):
            os.remove(os.path.join(out, f))
    shutil.rmtree(os.path.join(out, "routing_trace"), ignore_errors=True)


def read_checkpoint(path, config):
    """The checkpoint at ``path``, checked against ``config`` (a resumed run may only raise ``epochs``).

    Raises
    ------
    ValueError
        If the file is not a training checkpoint, does not load as tensors and
        plain values, or was written with another setting (naming the field).
    """
    ckpt = load_file(path, "resume")
    saved = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict) or "state" not in ckpt:
        raise ValueError(f"resume: {path} is not a dgl-capsules training checkpoint")
    defaults = asdict(TrainConfig())
    for key, new in asdict(config).items():
        old = saved.get(key, defaults[key])  # a field the checkpoint lacks has its default
        if key == "epochs" and new >= old:
            continue
        if old != new:
            detail = "; a resumed run may only raise epochs" if key == "epochs" else ""
            raise ValueError(f"{key}: {path} was written with {key}={old!r}; got {key}={new!r}{detail}")
    return ckpt


def build_model(config, shape):
    """The model of ``config`` for inputs of ``shape``; a bad setting's error names ``settings``."""
    from .models import get_model

    try:
        return get_model(config.model, config.preset, **shape, **config.settings)
    except (TypeError, ValueError) as e:
        first = str(e).split(" ", 1)[0].split("=", 1)[0].rstrip(":")
        if first in config.settings:
            raise type(e)(f"settings: {e}") from e
        raise


def load_model(path):
    """Rebuild the model saved in ``model.pt`` or ``checkpoint.pt`` (its validation-selected weights).

    The file is loaded with :func:`~dgl_capsules.files.load_file` (no code in it runs).

    Returns
    -------
    (torch.nn.Module, dict)
        The model in eval mode and the saved file, whose ``"config"`` is the
        run's :class:`~dgl_capsules.train.TrainConfig` as a dict and ``"shape"``
        the input shape (``in_channels``, ``image_size``, ``n_classes``).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file is not a dgl-capsules model or checkpoint, or holds more
        than tensors and plain values.
    """
    ckpt = load_file(path, "path")
    if isinstance(ckpt, dict) and "model_args" in ckpt and "config" not in ckpt:  # model and shape in one dict
        args = dict(ckpt["model_args"])
        settings = dict(args.pop("overrides", None) or {})
        if args.pop("width", None) is not None:
            settings["width"] = ckpt["model_args"]["width"]
        ckpt["shape"] = {k: args.pop(k) for k in SHAPE_KEYS}
        ckpt["config"] = asdict(TrainConfig(model=args["model"], preset=args["preset"], settings=settings,
                                            data=ckpt.get("data", "mnist5k"), image_size=ckpt.get("image_size")))
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "shape" not in ckpt:
        raise ValueError(f"path {os.fspath(path)!r} is not a dgl-capsules checkpoint (no config and input shape)")
    fields = {k: v for k, v in ckpt["config"].items() if k in TrainConfig.__dataclass_fields__}
    model = build_model(TrainConfig(**fields), ckpt["shape"])
    best = ckpt.get("state", {}).get("best_model")
    model.load_state_dict(best if best is not None else ckpt["model"])
    return model.eval(), ckpt


def rng_state():
    """The random states as tensors and plain values (a checkpoint loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return dict(torch=torch.get_rng_state(), numpy=(kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                     int(has_gauss), float(gauss)),
                python=random.getstate())


def set_rng_state(s):
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(s["torch"])
    kind, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(s["python"])


def seed_all(seed):
    """Seed torch, numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
