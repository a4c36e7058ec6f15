"""Training and evaluation of image models that follow the :mod:`dgl_capsules.models` protocol.

A model is driven only through ``out = model(x, y)``, ``model.loss(out, y,
step)`` and ``model.scores(out)``, so CapsNet, the CNN baseline and
MatrixCapsNet share this loop. A run directory holds

- ``checkpoint.pt``: everything needed to resume (model, optimizer, scheduler,
  epoch, step, RNG states, best validation model, curve), rewritten
  atomically after every epoch;
- ``model.pt``: the model selected on the validation split, with the
  arguments that rebuild it (for ``evaluate`` and ``visualize``);
- ``metrics.json``: test_accuracy, best_val_accuracy, epochs, seconds,
  parameters and the per-epoch curve.

Data-parallel training runs under ``torchrun``: every process gets a
:class:`~torch.utils.data.DistributedSampler` shard, gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, nccl on
GPUs), and only rank 0 writes files.
"""
import copy
import json
import os
import random
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from .data import MNIST, SmallNORB, mnist5k
from .data.affine import affine_mnist, multi_mnist, multi_splits, pad_to, random_affine, random_shift
from .data.mnist import ImageDataset, Splits

__all__ = [
    "UsageError", "MODELS", "load_data", "build_model", "parse_overrides", "accuracy", "evaluate", "train",
    "save_atomic", "load_model",
]

MODELS = ("capsnet", "cnn", "matrixcaps")
PRESETS = ("small", "paper", "tiny")
DATASETS = ("mnist5k", "mnist:PATH", "smallnorb:PATH", "multi:SPEC")


class UsageError(ValueError):
    """A bad command-line value (unknown model or data set, missing path); the CLI prints it in one line."""


# ---------------------------------------------------------------------------- data


def load_data(spec, image_size=None):
    """Train / val / test splits named by a data spec.

    Parameters
    ----------
    spec : str
        ``"mnist5k"`` (bundled), ``"mnist:PATH"`` (IDX files in ``PATH``) or
        ``"smallnorb:PATH"`` (binary matrix files in ``PATH``); ``"multi:SPEC"``
        makes 36x36 MultiMNIST-style pairs of the digits of ``SPEC`` (e.g.
        ``multi:mnist5k``) with :func:`~dgl_capsules.data.multi_splits`:
        10 training pairs per training digit, drawn anew every epoch; labels two-hot.
    image_size : int, optional
        Centre every image on a black canvas of this side (e.g. 40 to train
        for the affNIST-style test).

    Raises
    ------
    UsageError
        For an unknown name or a path that does not exist.
    """
    name, _, path = spec.partition(":")
    if name == "multi" and path:
        base = load_data(path)
        if base.train.labels.dim() != 1:
            raise UsageError(f"--data {spec}: {path!r} already holds pairs")
        size = 36 if image_size is None else image_size
        if size < 36:
            raise UsageError(f"--image-size must be at least 36 for MultiMNIST pairs; got {size}")
        return multi_splits(base, size=size)  # drawn at the final size
    if name == "mnist5k" and not path:
        splits = mnist5k()
    elif name in ("mnist", "smallnorb") and path:
        if not os.path.isdir(path):
            raise UsageError(f"--data {spec}: {path!r} is not a directory")
        try:
            splits = MNIST(path) if name == "mnist" else SmallNORB(path)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(f"--data {spec}: {e}") from e
    else:
        raise UsageError(f"unknown data set {spec!r}; expected one of {', '.join(DATASETS)}")
    if image_size is not None and image_size != splits.train.images.shape[-1]:
        splits = Splits(*(ImageDataset(pad_to(s.images, image_size), s.labels, s.n_classes) for s in splits))
    return splits


def eval_set(spec, splits, seed=0):
    """A test set derived from ``splits``: ``"test"``, ``"affine"`` (40×40 affNIST-style) or ``"multi"`` (MultiMNIST)."""
    if spec == "test":
        return splits.test
    if splits.test.labels.dim() == 2:  # trained on pairs (multi:SPEC): its test split is the multi set
        if spec == "multi":
            return splits.test
        raise UsageError(f"--on {spec}: the model was trained on MultiMNIST pairs; use --on test or multi")
    if spec == "affine":
        return affine_mnist(splits.test, size=40, seed=seed)
    if spec == "multi":
        return multi_mnist(splits.test, size=36, seed=seed)
    raise UsageError(f"unknown evaluation set {spec!r}; expected test, affine or multi")


# ---------------------------------------------------------------------------- models


def build_model(model, in_channels=1, image_size=28, n_classes=10, preset="small", width=None,
                overrides=None):
    """A model by name: ``"capsnet"``, ``"cnn"`` or ``"matrixcaps"``.

    ``preset`` picks the CapsNet / MatrixCapsNet configuration and
    ``overrides`` (a dict, e.g. ``{"stem_stride": 1}``) replaces single
    settings of it. The CNN's ``width`` defaults to the one matching the
    parameter count of the CapsNet of the same preset (the paper's comparison).
    """
    import inspect

    from .models import BaselineCNN, CapsNet, MatrixCapsNet

    shape = dict(in_channels=in_channels, image_size=image_size, n_classes=n_classes)
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    capsule_models = dict(capsnet=CapsNet, matrixcaps=MatrixCapsNet)
    if model == "cnn" and not overrides:
        if width is None:
            n = sum(p.numel() for p in CapsNet.from_preset(preset, **shape).parameters())
            return BaselineCNN.matching(n, **shape)
        return BaselineCNN(width=width, **shape)
    if model not in capsule_models:
        if model == "cnn":
            raise UsageError(f"--set works for --model capsnet and matrixcaps, not {model!r}")
        raise UsageError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    cls = capsule_models[model]
    if not overrides:
        return cls.from_preset(preset, **shape)
    known = sorted(set(inspect.signature(cls.__init__).parameters) - {"self", *shape})
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise UsageError(f"--set: {cls.__name__} has no setting {unknown[0]!r}; settings are {', '.join(known)}")
    try:
        return cls.from_preset(preset, **shape, **overrides)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--set: {e}") from e


def parse_overrides(items):
    """``["stem_stride=1", "inverse_temperatures=[0.01, 0.02]"]`` -> ``{"stem_stride": 1, ...}``.

    Values are Python literals (numbers, lists, ``None``); anything else is kept as a string.

    Examples
    --------
    >>> parse_overrides(["stem_stride=1", "step_scale=2e3", "inverse_temperatures=[0.01, 0.02]"])
    {'stem_stride': 1, 'step_scale': 2000.0, 'inverse_temperatures': [0.01, 0.02]}
    """
    import ast

    out = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set takes KEY=VALUE; got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def n_parameters(model):
    return sum(p.numel() for p in model.parameters())


def load_model(path):
    """Rebuild the model saved in ``model.pt`` or ``checkpoint.pt`` (its validation-selected weights).

    Returns
    -------
    (torch.nn.Module, dict)
        The model in eval mode and the saved run arguments.
    """
    if not os.path.isfile(path):
        raise UsageError(f"--checkpoint {path!r}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu")
    except Exception as e:  # a truncated or foreign file
        raise UsageError(f"--checkpoint {path!r} is not a dgl-capsules checkpoint ({type(e).__name__})") from e
    if not isinstance(ckpt, dict) or "model_args" not in ckpt:
        raise UsageError(f"--checkpoint {path!r} is not a dgl-capsules checkpoint")
    model = build_model(**ckpt["model_args"])
    best = ckpt.get("state", {}).get("best_model")
    model.load_state_dict(best if best is not None else ckpt["model"])
    return model.eval(), ckpt


# ---------------------------------------------------------------------------- metrics


def accuracy(scores, y):
    """Fraction of samples classified right.

    For labels ``(B,)``, the arg-max score must be the label; for multi-hot
    labels ``(B, K)`` with ``k`` ones, the ``k`` highest scores must be
    exactly those classes (MultiMNIST: both digits right).

    Examples
    --------
    >>> import torch
    >>> accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
    0.5
    """
    if y.dim() == 1:
        return (scores.argmax(1) == y).float().mean().item()
    k = int(y[0].sum().item())
    top = torch.zeros_like(y).scatter_(1, scores.topk(k, dim=1).indices, 1.0)
    return (top == y).all(1).float().mean().item()


@torch.no_grad()
def evaluate(model, dataset, batch_size=256):
    """Accuracy of ``model`` on ``dataset`` (eval mode, no decoder masking by labels)."""
    was_training = model.training
    model.eval()
    scores = []
    for i in range(0, len(dataset), batch_size):
        x = dataset.images[i:i + batch_size]
        scores.append(model.scores(model(x)))
    model.train(was_training)
    return accuracy(torch.cat(scores), dataset.labels)


# ---------------------------------------------------------------------------- checkpoints


def save_atomic(obj, path):
    """``torch.save`` to a temporary file next to ``path``, then ``os.replace`` it into place.

    A crash in the middle leaves the previous file at ``path`` untouched (the
    temporary file is removed).
    """
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _rng_state():
    return dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate())


def _set_rng_state(s):
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def _seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ---------------------------------------------------------------------------- distributed


def _dist_info():
    """``(rank, world_size)``; initialises the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


# ---------------------------------------------------------------------------- training


@torch.no_grad()
def _update_average(avg, net, decay):
    """``avg = decay * avg + (1 - decay) * net`` for parameters; buffers are copied."""
    for a, p in zip(avg.parameters(), net.parameters()):
        a.mul_(decay).add_(p.detach(), alpha=1 - decay)
    for a, b in zip(avg.buffers(), net.buffers()):
        a.copy_(b)


def train(model="capsnet", data="mnist5k", epochs=10, batch_size=64, lr=1e-3, seed=0, out="runs/train",
          resume=False, preset="small", width=None, shift=0, lr_decay=1.0, image_size=None,
          progress=True, splits=None, log=print, return_model=False, overrides=None, rotate=0.0, scale=0.0,
          ema=0.0):
    """Train a model, select it on the validation split, test it, write ``out``.

    Parameters
    ----------
    model : str
        ``"capsnet"``, ``"cnn"`` or ``"matrixcaps"`` (see :func:`build_model`).
    data : str
        Data spec for :func:`load_data` (ignored when ``splits`` is given).
    epochs : int
        Total epochs; with ``resume`` the run continues up to this number.
    batch_size : int
        Per process.
    lr, lr_decay : float
        Adam learning rate, multiplied by ``lr_decay`` after every epoch.
    seed : int
        Seeds initialisation, shuffling and augmentation: the same seed gives
        the same run, interrupted and resumed or not.
    out : str
        Run directory (created).
    resume : bool
        Continue from ``out/checkpoint.pt`` if it exists.
    shift : int
        Random shifts of up to this many pixels per axis (training only).
    rotate, scale : float
        Random rotations uniform in ``±rotate`` degrees and scalings uniform in
        ``[1 - scale, 1 + scale]`` about the image centre (training only, after
        the shift; see :func:`~dgl_capsules.data.random_affine`).
    image_size : int, optional
        Pad the images to this side (see :func:`load_data`).
    ema : float
        With ``0 < ema < 1``, validate, select and test an exponential moving
        average of the weights, updated after every step as
        ``avg = ema * avg + (1 - ema) * weights`` (0: the weights themselves).
    overrides : dict, optional
        Settings that replace those of the preset (see :func:`build_model`);
        they are saved with the run, so ``evaluate`` and ``--resume`` rebuild the same model.
    splits : Splits, optional
        Data to use instead of ``data`` (for tests and scripts).
    return_model : bool
        Also return the trained (validation-selected) model.

    Returns
    -------
    dict
        The metrics also written to ``out/metrics.json`` (and the model).
    """
    if model not in MODELS:
        raise UsageError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer; got {value!r}")
    if not lr > 0:
        raise UsageError(f"--lr must be > 0; got {lr}")
    if not 0 <= rotate <= 180:
        raise UsageError(f"--rotate must be in [0, 180] degrees; got {rotate}")
    if not 0 <= scale < 1:
        raise UsageError(f"--scale must be in [0, 1); got {scale}")
    if not 0 <= ema < 1:
        raise UsageError(f"--ema must be in [0, 1); got {ema}")
    rank, world = _dist_info()
    if splits is None:
        splits = load_data(data, image_size)
    c, h, _ = splits.train.image_shape
    model_args = dict(model=model, in_channels=c, image_size=h, n_classes=splits.train.n_classes,
                      preset=preset, width=width)
    if overrides:
        model_args["overrides"] = dict(overrides)
    _seed_all(seed)
    net = build_model(**model_args)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    avg = copy.deepcopy(net) if ema else net  # what is validated, selected and tested
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_decay)
    state = dict(epoch=0, step=0, best_val=-1.0, best_epoch=0, best_model=None, curve=[], seconds=0.0)

    ckpt_path = os.path.join(out, "checkpoint.pt")
    if rank == 0:
        os.makedirs(out, exist_ok=True)
    if resume and os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location="cpu")
        if ckpt["model_args"] != model_args or ckpt["seed"] != seed:
            raise UsageError(
                f"--resume: {ckpt_path} was written for {ckpt['model_args']} with seed {ckpt['seed']}, "
                f"not {model_args} with seed {seed}"
            )
        net.load_state_dict(ckpt["model"])
        if ema:
            if ckpt.get("average") is None:
                raise UsageError(f"--resume --ema: {ckpt_path} was written without --ema")
            avg.load_state_dict(ckpt["average"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        _set_rng_state(ckpt["rng"])
        log(f"resuming {ckpt_path} after epoch {state['epoch']} (step {state['step']})")

    ddp = net
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(net)
    sampler = DistributedSampler(splits.train, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(splits.train, batch_size=batch_size, sampler=sampler)
    if rank == 0:
        log(f"{model} ({n_parameters(net):,} parameters) on {data}: train {len(splits.train)}, "
            f"val {len(splits.val)}, test {len(splits.test)}; {world} process(es)")

    for epoch in range(state["epoch"], epochs):
        t0 = time.time()
        sampler.set_epoch(epoch)
        if hasattr(splits.train, "set_epoch"):  # data drawn anew every epoch (MultiPairs)
            splits.train.set_epoch(epoch)
        augment = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + rank)
        net.train()
        total, right, seen = 0.0, 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress or rank != 0)
        for x, y in bar:
            if shift:
                x = random_shift(x, shift, augment)
            if rotate or scale:
                x = random_affine(x, augment, rotation=rotate, scale=(1 - scale, 1 + scale))
            out_ = ddp(x, y)
            loss = net.loss(out_, y, state["step"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema:
                _update_average(avg, net, ema)
            state["step"] += 1
            b = x.shape[0]
            total += loss.item() * b
            right += accuracy(net.scores(out_).detach(), y) * b
            seen += b
            bar.set_postfix(loss=f"{total / seen:.4f}", acc=f"{right / seen:.3f}")
        sched.step()
        val_acc = evaluate(avg, splits.val)
        state["seconds"] += time.time() - t0
        state["epoch"] = epoch + 1
        row = dict(epoch=epoch + 1, step=state["step"], train_loss=total / seen, train_accuracy=right / seen,
                   val_accuracy=val_acc, lr=opt.param_groups[0]["lr"], seconds=round(state["seconds"], 2))
        state["curve"].append(row)
        if val_acc > state["best_val"]:
            state.update(best_val=val_acc, best_epoch=epoch + 1, best_model=copy.deepcopy(avg.state_dict()))
        if rank == 0:
            log(f"epoch {epoch + 1:3d}  loss {row['train_loss']:.4f}  train {row['train_accuracy']:.4f}  "
                f"val {val_acc:.4f}  ({state['seconds']:.0f}s)")
            save_atomic(dict(model_args=model_args, seed=seed, data=data, model=net.state_dict(),
                             average=avg.state_dict() if ema else None, optimizer=opt.state_dict(),
                             scheduler=sched.state_dict(), state=state, rng=_rng_state()), ckpt_path)

    if state["best_model"] is not None:
        net.load_state_dict(state["best_model"])
    test_acc = evaluate(net, splits.test)
    metrics = dict(model=model, preset=preset, data=data, test_accuracy=test_acc,
                   best_val_accuracy=state["best_val"], best_epoch=state["best_epoch"], epochs=state["epoch"],
                   seconds=round(state["seconds"], 2), parameters=n_parameters(net), batch_size=batch_size,
                   lr=lr, lr_decay=lr_decay, shift=shift, rotate=rotate, scale=scale, ema=ema, seed=seed,
                   processes=world, overrides=dict(overrides or {}), curve=state["curve"])
    if rank == 0:
        save_atomic(dict(model_args=model_args, data=data, image_size=image_size, model=net.state_dict()),
                    os.path.join(out, "model.pt"))
        tmp = os.path.join(out, "metrics.json.tmp")
        with open(tmp, "w") as f:
            json.dump(metrics, f, indent=2)
        os.replace(tmp, os.path.join(out, "metrics.json"))
        log(f"test accuracy {test_acc:.4f} (model of epoch {state['best_epoch']}, val {state['best_val']:.4f}); "
            f"{state['seconds']:.0f}s; wrote {out}/metrics.json")
    return (metrics, net) if return_model else metrics
