"""Training and evaluation of image models that follow :class:`dgl_capsules.models.ImageModel`.

A run is described by one :class:`TrainConfig`. :func:`train` validates it
before any data is loaded, builds the model with
:func:`~dgl_capsules.models.get_model` and the data with
:func:`~dgl_capsules.data.get_dataset`, and drives the model only through
``out = model(x, y)``, ``model.loss(out, y, step)`` and ``model.scores(out)``,
so every registered model shares this loop. A run directory ``out`` holds

- ``checkpoint.pt``: the configuration and everything needed to resume (model,
  optimizer, epoch, step, RNG states, best validation model, curve) as
  tensors and plain values only, rewritten atomically after every epoch;
- ``model.pt``: the model selected on the validation split, with the
  configuration and input shape that rebuild it (:func:`load_model`);
- ``metrics.json``: the configuration (``dataclasses.asdict``) and the results:
  test_accuracy, best_val_accuracy, best_epoch, epochs, seconds, cpu_seconds,
  parameters, processes, threads, machine and the per-epoch curve;
- ``routing_trace/epoch_NNN.pt`` with ``trace_routing`` > 0: the routing of a
  fixed handful of validation images after initialisation and every epoch.

The checkpoint, the resume check and ``metrics.json`` all use
``asdict(config)``, so they cannot drift apart: resuming with any setting
changed, except a larger number of epochs, is refused.

Data-parallel training runs under ``torchrun``: every process gets a
:class:`~torch.utils.data.DistributedSampler` shard, gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, nccl on
GPUs), and only rank 0 writes files.
"""
import copy
import json
import math
import os
import platform
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from .data import ImageDataset, affine_mnist, get_augmentation, multi_mnist, pad_to, random_affine, random_shift
from .evaluation import accuracy, evaluate, pack_correct
from .files import load_file, save_atomic

__all__ = [
    "TrainConfig", "train", "evaluate", "accuracy", "eval_set", "fit_images", "load_model", "load_file",
    "save_atomic", "learning_rate", "NonFiniteLossError", "set_threads", "reuse_freed_memory",
]

RUN_FILES = ("checkpoint.pt", "model.pt", "metrics.json")
"""The files that make a directory a run directory (:func:`train` refuses to mix two runs)."""

_SHAPE_KEYS = ("in_channels", "image_size", "n_classes")  # settings that come from the data


# ---------------------------------------------------------------------------- configuration


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
        from .models import list_models, model_presets, model_settings

        if self.model not in list_models():
            raise ValueError(f"model: unknown model {self.model!r}; expected one of {', '.join(list_models())}")
        presets = model_presets(self.model)
        if self.preset is not None and self.preset not in presets:
            raise ValueError(f"preset: unknown {self.model} preset {self.preset!r}; "
                             f"expected one of {', '.join(presets) or 'none'}")
        if not isinstance(self.settings, dict) or not all(isinstance(k, str) for k in self.settings):
            raise TypeError(f"settings must be a dict of setting name -> value; got {self.settings!r}")
        known = [s for s in model_settings(self.model) if s not in _SHAPE_KEYS]
        for key in self.settings:
            if key in _SHAPE_KEYS:
                raise ValueError(f"settings: {key} comes from the data, not from the settings"
                                 + (" (use image_size)" if key == "image_size" else ""))
            if key not in known:
                raise ValueError(f"settings: {self.model} has no setting {key!r}; settings are {', '.join(known)}")
            if _has_nan(self.settings[key]):
                raise ValueError(f"settings: {key} must not be NaN; got {self.settings[key]!r}")


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


def set_threads(n=None):
    """Give torch and DGL the same number of OpenMP threads; return it.

    torch and DGL 2.1 link two different OpenMP runtimes (torch its bundled
    ``libgomp``, DGL the system's), so each has a thread pool of its own;
    this sizes both (:func:`torch.set_num_threads`,
    :func:`dgl.utils.set_num_threads`) and ``OMP_NUM_THREADS`` for child processes.

    Parameters
    ----------
    n : int, optional
        Threads per process. Default: ``OMP_NUM_THREADS`` if it is set, else
        the usable cores divided by the processes on this machine
        (``LOCAL_WORLD_SIZE`` under torchrun), at least 1.
    """
    if n is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        if env.isdigit() and int(env) > 0:
            n = int(env)
        else:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            n = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if not _is_int(n) or n < 1:
        raise ValueError(f"threads must be a positive integer; got {n!r}")
    from dgl.utils import set_num_threads

    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(int(n))
    set_num_threads(int(n))
    return int(n)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters in glibc's malloc.h


def reuse_freed_memory():
    """Keep memory freed by one training step for the next one; return whether it applied (glibc only).

    Routing allocates and frees edge tensors of tens of MB on every step. By
    default glibc gives blocks above its mmap threshold (at most 32 MB) back to
    the kernel when they are freed, so the next step's tensor of the same size
    is faulted in again page by page, zeroed by the kernel: on a 2-core VM
    this cost a quarter of a MatrixCapsNet step (``bench/bench_em_step.py``).
    This asks glibc (``mallopt``) to serve every block from its heap
    (``M_MMAP_MAX = 0``) and never to trim the heap (``M_TRIM_THRESHOLD`` at
    its largest), so freed blocks are reused without page faults; the resident
    memory of the process then stays at its peak, which a training process
    reaches in its first step anyway. The same as starting Python with
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` in the
    environment. The ``dgl-capsules`` command does this for the command it
    runs; call it at the start of your own training script. It lasts for the
    whole process and does nothing (returns ``False``) on a C library other
    than glibc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))


# ---------------------------------------------------------------------------- metrics and data


def fit_images(dataset, image_size, name="dataset"):
    """``dataset`` with its images centred on a black canvas of side ``image_size`` (a model's input side).

    Raises
    ------
    ValueError
        Naming ``name`` if the images are larger than ``image_size``.
    """
    side = dataset.images.shape[-1]
    if image_size is None or side == image_size:
        return dataset
    if side > image_size:
        raise ValueError(f"{name}: the images are {side}x{side} but the model takes {image_size}x{image_size}; "
                         f"train it with image_size={side}")
    return ImageDataset(pad_to(dataset.images, image_size), dataset.labels, dataset.n_classes)


def eval_set(on, splits, image_size=None, seed=0):
    """A test set derived from ``splits``, padded to ``image_size``.

    Parameters
    ----------
    on : str
        ``"test"`` (the test split), ``"affine"`` (40x40 affNIST-style) or
        ``"multi"`` (36x36 MultiMNIST pairs); a model trained on pairs has
        only ``"test"`` = ``"multi"``.
    splits : Splits
        The data the model was trained on, at its own size.
    image_size : int, optional
        The model's input side (see :func:`fit_images`).
    seed : int
        Seed of the generated affine / multi sets.
    """
    if on not in ("test", "affine", "multi"):
        raise ValueError(f"on: unknown evaluation set {on!r}; expected test, affine or multi")
    if on == "test" or (on == "multi" and splits.test.labels.dim() == 2):
        dataset = splits.test
    elif splits.test.labels.dim() == 2:  # trained on pairs (multi:SPEC)
        raise ValueError(f"on: {on!r}: the model was trained on MultiMNIST pairs; use test or multi")
    elif on == "affine":
        dataset = affine_mnist(splits.test, size=40, seed=seed)
    else:
        dataset = multi_mnist(splits.test, size=36, seed=seed)
    return fit_images(dataset, image_size, name=f"on {on!r}")


def _machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import dgl

    return dict(cpu=cpu, machine=platform.machine(), cores=os.cpu_count(), python=platform.python_version(),
                torch=torch.__version__, dgl=dgl.__version__)


# ---------------------------------------------------------------------------- files


def _build_model(config, shape):
    """The model of ``config`` for inputs of ``shape``; a bad setting's error names ``settings``."""
    from .models import get_model

    try:
        return get_model(config.model, config.preset, **shape, **config.settings)
    except (TypeError, ValueError) as e:
        first = str(e).split(" ", 1)[0].split("=", 1)[0].rstrip(":")
        if first in config.settings:
            raise type(e)(f"settings: {e}") from e
        raise


class NonFiniteLossError(FloatingPointError):
    """The training loss stopped being finite; the message names the step, the learning rate and the remedy."""


def load_model(path):
    """Rebuild the model saved in ``model.pt`` or ``checkpoint.pt`` (its validation-selected weights).

    The file is loaded with :func:`load_file` (no code in it runs).

    Returns
    -------
    (torch.nn.Module, dict)
        The model in eval mode and the saved file, whose ``"config"`` is the
        run's :class:`TrainConfig` as a dict.
    """
    ckpt = load_file(path, "path")
    if isinstance(ckpt, dict) and "model_args" in ckpt and "config" not in ckpt:  # the format before TrainConfig
        args = dict(ckpt["model_args"])
        settings = dict(args.pop("overrides", None) or {})
        if args.pop("width", None) is not None:
            settings["width"] = ckpt["model_args"]["width"]
        ckpt["shape"] = {k: args.pop(k) for k in _SHAPE_KEYS}
        ckpt["config"] = asdict(TrainConfig(model=args["model"], preset=args["preset"], settings=settings,
                                            data=ckpt.get("data", "mnist5k"), image_size=ckpt.get("image_size")))
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "shape" not in ckpt:
        raise ValueError(f"path {os.fspath(path)!r} is not a dgl-capsules checkpoint (no config and input shape)")
    fields = {k: v for k, v in ckpt["config"].items() if k in TrainConfig.__dataclass_fields__}
    model = _build_model(TrainConfig(**fields), ckpt["shape"])
    best = ckpt.get("state", {}).get("best_model")
    model.load_state_dict(best if best is not None else ckpt["model"])
    return model.eval(), ckpt


def _check_run_dir(out, resume, overwrite):
    """Refuse to mix two runs in ``out``; the path of its checkpoint."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a directory path; got {out!r}")
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True exclude each other")
    ckpt_path = os.path.join(out, "checkpoint.pt")
    if resume and not os.path.isfile(ckpt_path):
        raise ValueError(f"resume: there is no checkpoint to resume at {ckpt_path}")
    present = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
    if present and not resume and not overwrite:
        raise ValueError(f"out {os.fspath(out)!r} holds another run ({', '.join(present)}); "
                         f"continue it with resume=True or replace it with overwrite=True")
    return ckpt_path


def _clear_run_dir(out):
    """Remove the files of the run in ``out`` (``overwrite=True``), its routing trace included."""
    for f in RUN_FILES:
        if os.path.exists(os.path.join(out, f)):
            os.remove(os.path.join(out, f))
    shutil.rmtree(os.path.join(out, "routing_trace"), ignore_errors=True)


# ---------------------------------------------------------------------------- randomness and processes


def _rng_state():
    """The random states as tensors and plain values (a checkpoint loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return dict(torch=torch.get_rng_state(), numpy=(kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                     int(has_gauss), float(gauss)),
                python=random.getstate())


def _set_rng_state(s):
    torch.set_rng_state(s["torch"])
    kind, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(s["python"])


def _seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _dist_info():
    """``(rank, world_size)``; initialises the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


# ---------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """The state of one training run that the steps below share."""

    config: TrainConfig
    out: str
    splits: object
    net: torch.nn.Module
    avg: torch.nn.Module  # what is validated, selected and tested (the net itself without ema)
    opt: torch.optim.Optimizer
    shape: dict
    rank: int = 0
    world: int = 1
    eval_sets: dict = field(default_factory=dict)  # config.eval_each_epoch: name -> ImageDataset
    state: dict = field(default_factory=lambda: dict(epoch=0, step=0, best_val=-1.0, best_epoch=0,
                                                     best_model=None, curve=[], seconds=0.0, cpu_seconds=0.0))

    @property
    def ckpt_path(self):
        return os.path.join(self.out, "checkpoint.pt")


def _start(config, splits, out, rank, world):
    """Seed, build the model, optimizer and weight average (in this order: it decides the weights)."""
    eval_sets = _eval_sets(config.eval_each_epoch, splits)
    c, h, _ = splits.train.image_shape
    shape = dict(in_channels=c, image_size=h, n_classes=splits.train.n_classes)
    _seed_all(config.seed)
    net = _build_model(config, shape)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    avg = copy.deepcopy(net) if config.ema else net
    return _Run(config, os.fspath(out), splits, net, avg, opt, shape, rank, world, eval_sets)


def _eval_sets(names, splits):
    """``{name: ImageDataset}`` of the splits' attributes ``names`` (``config.eval_each_epoch``)."""
    out = {}
    for name in names:
        dataset = getattr(splits, name, None)
        if not isinstance(dataset, ImageDataset):
            have = [k for k in ("test", *sorted(vars(splits) if hasattr(splits, "__dict__") else ()))
                    if isinstance(getattr(splits, k, None), ImageDataset)]
            raise ValueError(f"eval_each_epoch: the data has no evaluation set {name!r}; it has "
                             f"{', '.join(have)}")
        out[name] = dataset
    return out


def _resume(run):
    """Load ``run.ckpt_path`` into ``run``; refuse a checkpoint written with other settings."""
    ckpt = load_file(run.ckpt_path, "resume")
    saved = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(saved, dict) or "state" not in ckpt:
        raise ValueError(f"resume: {run.ckpt_path} is not a dgl-capsules training checkpoint")
    defaults = asdict(TrainConfig())
    for key, new in asdict(run.config).items():
        old = saved.get(key, defaults[key])  # a field added after the checkpoint was written has its default
        if key == "epochs" and new >= old:
            continue
        if old != new:
            detail = "; a resumed run may only raise epochs" if key == "epochs" else ""
            raise ValueError(f"{key}: {run.ckpt_path} was written with {key}={old!r}; got {key}={new!r}{detail}")
    run.net.load_state_dict(ckpt["model"])
    if run.config.ema:
        run.avg.load_state_dict(ckpt["average"])
    run.opt.load_state_dict(ckpt["optimizer"])
    run.state = ckpt["state"]
    run.state.setdefault("cpu_seconds", None)  # unknown for the epochs of a checkpoint written before the field
    _set_rng_state(ckpt["rng"])


@torch.no_grad()
def _update_average(avg, net, decay):
    """``avg = decay * avg + (1 - decay) * net`` for parameters; buffers are copied."""
    for a, p in zip(avg.parameters(), net.parameters()):
        a.mul_(decay).add_(p.detach(), alpha=1 - decay)
    for a, b in zip(avg.buffers(), net.buffers()):
        a.copy_(b)


def _one_epoch(run, epoch, loader, model, progress):
    """Train ``run.net`` for one epoch through ``model`` (the net or its DDP wrapper); ``(loss, accuracy)``."""
    config, net = run.config, run.net
    if hasattr(run.splits.train, "set_epoch"):  # data drawn anew every epoch (MultiPairs)
        run.splits.train.set_epoch(epoch)
    augment = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch * 7919 + run.rank)
    net.train()
    total, right, seen = 0.0, 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=not progress or run.rank != 0)
    for x, y in bar:
        if config.shift:
            x = random_shift(x, config.shift, augment)
        if config.rotate or config.scale:
            x = random_affine(x, augment, rotation=config.rotate, scale=(1 - config.scale, 1 + config.scale))
        if config.augment:
            x = get_augmentation(config.augment)(x, augment)
        lr = learning_rate(config, epoch, run.state["step"])
        for group in run.opt.param_groups:
            group["lr"] = lr
        out = model(x, y)
        loss = net.loss(out, y, run.state["step"])
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"loss: the training loss is {value} at step {run.state['step'] + 1} (epoch {epoch + 1}) with "
                f"learning rate {lr:.3g}; nothing of this epoch was saved: lower lr (or raise its decay) and "
                f"resume from the last checkpoint, or start again")
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        if config.ema:
            _update_average(run.avg, net, config.ema)
        run.state["step"] += 1
        b = x.shape[0]
        total += value * b
        right += accuracy(net.scores(out).detach(), y) * b
        seen += b
        bar.set_postfix(loss=f"{total / seen:.4f}", acc=f"{right / seen:.3f}")
    return total / seen, right / seen


def _cpu_seconds(since, world):
    """CPU seconds of the training processes since ``since`` (this process's ``time.process_time()``),
    summed over the processes of a data-parallel run."""
    spent = time.process_time() - since
    if world > 1:
        total = torch.tensor([spent], dtype=torch.float64)
        dist.all_reduce(total)
        spent = float(total)
    return spent


def _validate(run, epoch, train_loss, train_acc, t0, c0):
    """Validate the selected weights after ``epoch`` (begun at time ``t0``, process time ``c0``); update the
    curve and the best model."""
    state = run.state
    bad = next((name for name, p in run.avg.state_dict().items()
                if torch.is_floating_point(p) and not bool(torch.isfinite(p).all())), None)
    if bad is not None:
        raise NonFiniteLossError(
            f"weights: {bad} holds non-finite values after epoch {epoch + 1} (learning rate "
            f"{run.opt.param_groups[0]['lr']:.3g}); nothing of this epoch was saved: lower lr and resume from the "
            f"last checkpoint, or start again")
    val_acc = evaluate(run.avg, run.splits.val)
    state["seconds"] += time.time() - t0
    if state["cpu_seconds"] is not None:
        state["cpu_seconds"] += _cpu_seconds(c0, run.world)
    state["epoch"] = epoch + 1
    row = dict(epoch=epoch + 1, step=state["step"], train_loss=train_loss, train_accuracy=train_acc,
               val_accuracy=val_acc, lr=run.opt.param_groups[0]["lr"], seconds=round(state["seconds"], 2))
    state["curve"].append(row)
    if run.eval_sets:  # scored after the clock stops, without touching the random state
        rng = _rng_state()
        row.update({f"{name}_accuracy": evaluate(run.avg, data) for name, data in run.eval_sets.items()})
        _set_rng_state(rng)
    if val_acc > state["best_val"]:
        state.update(best_val=val_acc, best_epoch=epoch + 1, best_model=copy.deepcopy(run.avg.state_dict()))
    return row


def _save_checkpoint(run):
    save_atomic(dict(config=asdict(run.config), shape=run.shape, model=run.net.state_dict(),
                     average=run.avg.state_dict() if run.config.ema else None, optimizer=run.opt.state_dict(),
                     state=run.state, rng=_rng_state()), run.ckpt_path)


def _trace_routing(run, epoch):
    """Record the routing of the selected weights on ``config.trace_routing`` validation images (rank 0)."""
    if not run.config.trace_routing or run.rank != 0:
        return
    from .viz import record_routing

    rng, was_training = _rng_state(), run.avg.training  # tracing must not change the run
    path = os.path.join(run.out, "routing_trace", f"epoch_{epoch:03d}.pt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record_routing(run.avg, run.splits.val, path, n=run.config.trace_routing)
    run.avg.train(was_training)
    _set_rng_state(rng)


def _finish(run, log):
    """Test the last and the selected weights; write ``model.pt`` and ``metrics.json`` (rank 0); the metrics."""
    state, net = run.state, run.net
    last_test_acc = evaluate(run.avg, run.splits.test)
    if state["best_model"] is not None:
        net.load_state_dict(state["best_model"])
    right = evaluate(net, run.splits.test, per_sample=True)
    test_acc = right.float().mean().item()
    metrics = dict(asdict(run.config), test_accuracy=test_acc, last_test_accuracy=last_test_acc,
                   test_correct=pack_correct(right), best_val_accuracy=state["best_val"],
                   best_epoch=state["best_epoch"], epochs=state["epoch"], seconds=round(state["seconds"], 2),
                   cpu_seconds=None if state["cpu_seconds"] is None else round(state["cpu_seconds"], 2),
                   parameters=sum(p.numel() for p in net.parameters()), processes=run.world,
                   threads=torch.get_num_threads(), machine=_machine(), curve=state["curve"])
    if run.rank == 0:
        save_atomic(dict(config=asdict(run.config), shape=run.shape, model=net.state_dict()),
                    os.path.join(run.out, "model.pt"))
        tmp = os.path.join(run.out, "metrics.json.tmp")
        with open(tmp, "w") as f:
            json.dump(metrics, f, indent=2)
        os.replace(tmp, os.path.join(run.out, "metrics.json"))
        log(f"test accuracy {test_acc:.4f} (model of epoch {state['best_epoch']}, val {state['best_val']:.4f}; "
            f"last epoch {last_test_acc:.4f}); {state['seconds']:.0f}s; wrote {run.out}/metrics.json")
    return metrics


def train(config, out, *, resume=False, overwrite=False, progress=True, splits=None, log=print,
          return_model=False):
    """Train the model of ``config``, select it on the validation split, test it, write the run directory ``out``.

    Parameters
    ----------
    config : TrainConfig
        The run; validated before any data or model is loaded.
    out : str
        Run directory (created). One that holds another run is refused
        unless ``resume`` or ``overwrite``.
    resume : bool
        Continue from ``out/checkpoint.pt`` (which must exist, written with
        the same config except possibly fewer epochs).
    overwrite : bool
        Replace the run in ``out``.
    progress : bool
        Progress bars.
    splits : Splits, optional
        Data to use instead of ``config.data`` (for tests and scripts), at
        ``config.image_size`` if that is set.
    log : callable
        Receives one line per epoch.
    return_model : bool
        Also return the trained (validation-selected) model.

    Returns
    -------
    dict
        ``asdict(config)`` and the results, also written to ``out/metrics.json``
        (and the model with ``return_model``).

    Raises
    ------
    ValueError, TypeError
        Naming the config field or argument at fault.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    config.validate()
    if splits is not None and config.image_size is not None and splits.train.image_shape[-1] != config.image_size:
        side, want = splits.train.image_shape[-1], config.image_size
        raise ValueError(f"image_size: the config asks for {want}x{want} images but splits holds {side}x{side}; "
                         f"pad them (get_dataset(..., image_size={want}) or fit_images) or set image_size=None")
    rank, world = _dist_info()
    ckpt_path = _check_run_dir(out, resume, overwrite)
    if splits is None:
        from .data import get_dataset

        splits = get_dataset(config.data, config.image_size)
    run = _start(config, splits, out, rank, world)
    if rank == 0:
        if overwrite:  # only now that the data and the model are there
            _clear_run_dir(out)
        os.makedirs(out, exist_ok=True)
    if resume:
        _resume(run)
        log(f"resuming {ckpt_path} after epoch {run.state['epoch']} (step {run.state['step']})")
    else:
        _trace_routing(run, 0)
    model = torch.nn.parallel.DistributedDataParallel(run.net) if world > 1 else run.net
    sampler = DistributedSampler(splits.train, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
    loader = DataLoader(splits.train, batch_size=config.batch_size, sampler=sampler)
    if rank == 0:
        log(f"{config.model} ({sum(p.numel() for p in run.net.parameters()):,} parameters) on {config.data}: "
            f"train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)}; {world} process(es)")
    for epoch in range(run.state["epoch"], config.epochs):
        t0, c0 = time.time(), time.process_time()
        sampler.set_epoch(epoch)
        loss, acc = _one_epoch(run, epoch, loader, model, progress)
        row = _validate(run, epoch, loss, acc, t0, c0)
        if rank == 0:
            log(f"epoch {epoch + 1:3d}  loss {loss:.4f}  train {acc:.4f}  val {row['val_accuracy']:.4f}  "
                f"({run.state['seconds']:.0f}s)")
            _save_checkpoint(run)
        _trace_routing(run, epoch + 1)
    metrics = _finish(run, log)
    return (metrics, run.net) if return_model else metrics
