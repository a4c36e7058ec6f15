"""The training loop of image models that follow :class:`dgl_capsules.models.ImageModel`.

A run is described by one :class:`~dgl_capsules.config.TrainConfig`.
:func:`train` validates it before any data is loaded, builds the model with
:func:`~dgl_capsules.models.get_model` and the data with
:func:`~dgl_capsules.data.get_dataset`, and drives the model only through
``out = model(x, y)``, ``model.loss(out, y, step)`` and ``model.scores(out)``,
so every registered model shares this loop. It writes the run directory
described in :mod:`dgl_capsules.checkpoint` (``checkpoint.pt``, ``model.pt``,
``metrics.json``); ``metrics.json`` holds the configuration
(``dataclasses.asdict``) and the results: test_accuracy, best_val_accuracy,
best_epoch, epochs, seconds, cpu_seconds, parameters, processes, threads,
machine and the per-epoch curve.

A run directory belongs to one run: a process trains into it while holding its
lock file, a second run into it is refused, and a finished run is replaced
only with ``overwrite=True``. Ctrl-C (SIGINT) or SIGTERM stop the run at the
end of the current step: the checkpoint then records where in the epoch it
stopped, :func:`train` raises :class:`~dgl_capsules.interrupt.TrainingInterrupted`,
and ``resume=True`` continues as if nothing had happened (the same losses and
weights on one thread).

Data-parallel training runs under ``torchrun``: every process gets a
:class:`~torch.utils.data.DistributedSampler` shard, gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, nccl on
GPUs), and only rank 0 writes files.

This module also exports what a training script needs from the modules around
the loop: :class:`~dgl_capsules.config.TrainConfig` and :func:`learning_rate`
(:mod:`dgl_capsules.config`), :func:`set_threads` and :func:`reuse_freed_memory`
(:mod:`dgl_capsules.tuning`), :func:`evaluate`, :func:`accuracy` and
:func:`eval_set` (:mod:`dgl_capsules.evaluation`), :func:`load_model`
(:mod:`dgl_capsules.checkpoint`), :func:`fit_images` (:mod:`dgl_capsules.data`)
and :func:`load_file`, :func:`save_atomic` (:mod:`dgl_capsules.files`).
"""
import contextlib
import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from .checkpoint import (
    RUN_FILES, build_model, check_run_dir, clear_run_dir, load_model, read_checkpoint, rng_state, seed_all,
    set_rng_state,
)
from .config import TrainConfig, learning_rate
from .data import ImageDataset, fit_images, get_augmentation, random_affine, random_shift
from .evaluation import accuracy, eval_set, evaluate, pack_correct
from .files import FolderLock, load_file, save_atomic, write_json
from .interrupt import StopRequests, TrainingInterrupted
from .tuning import machine, reuse_freed_memory, set_threads

__all__ = [
    "TrainConfig", "train", "evaluate", "accuracy", "eval_set", "fit_images", "load_model", "load_file",
    "save_atomic", "learning_rate", "NonFiniteLossError", "TrainingInterrupted", "set_threads", "reuse_freed_memory",
    "RUN_FILES",
]


class NonFiniteLossError(FloatingPointError):
    """The training loss stopped being finite; the message names the step, the learning rate and the remedy."""


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
    partial: Optional[dict] = None  # where in an epoch the run stopped (see _one_epoch)
    stop: Optional[StopRequests] = None

    @property
    def ckpt_path(self):
        return os.path.join(self.out, "checkpoint.pt")


def _start(config, splits, out, rank, world):
    """Seed, build the model, optimizer and weight average (in this order: it decides the weights)."""
    eval_sets = _eval_sets(config.eval_each_epoch, splits)
    c, h, _ = splits.train.image_shape
    shape = dict(in_channels=c, image_size=h, n_classes=splits.train.n_classes)
    seed_all(config.seed)
    net = build_model(config, shape)
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
    ckpt = read_checkpoint(run.ckpt_path, run.config)
    run.net.load_state_dict(ckpt["model"])
    if run.config.ema:
        run.avg.load_state_dict(ckpt["average"])
    run.opt.load_state_dict(ckpt["optimizer"])
    run.state = ckpt["state"]
    run.state.setdefault("cpu_seconds", None)  # unknown for the epochs of a checkpoint without the field
    set_rng_state(ckpt["rng"])
    if ckpt.get("partial") is not None:  # stopped inside an epoch: the random state of that step comes back there
        run.partial = dict(ckpt["partial"], rng=ckpt["rng"])


@torch.no_grad()
def _update_average(avg, net, decay):
    """``avg = decay * avg + (1 - decay) * net`` for parameters; buffers are copied."""
    for a, p in zip(avg.parameters(), net.parameters()):
        a.mul_(decay).add_(p.detach(), alpha=1 - decay)
    for a, b in zip(avg.buffers(), net.buffers()):
        a.copy_(b)


def _augment(config, x, generator):
    """The training augmentation of ``config`` applied to the batch ``x`` with ``generator``."""
    if config.shift:
        x = random_shift(x, config.shift, generator)
    if config.rotate or config.scale:
        x = random_affine(x, generator, rotation=config.rotate, scale=(1 - config.scale, 1 + config.scale))
    if config.augment:
        x = get_augmentation(config.augment)(x, generator)
    return x


def _stop_requested(run):
    """Whether a signal asked the run to stop (on every process of a data-parallel run, or on none)."""
    asked = run.stop is not None and run.stop.requested
    if run.world > 1:
        flag = torch.tensor([float(asked)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        asked = bool(flag.item())
    return asked


def _skip_to(run, batches, generator):
    """Continue a run stopped inside this epoch: skip the batches it trained on, replaying their augmentation
    (which moves ``generator`` as it moved then); the running sums of the epoch, or zeros."""
    part, run.partial = run.partial, None
    if part is None:
        return 0.0, 0.0, 0, 0
    for _ in range(part["batches"]):
        _augment(run.config, next(batches)[0], generator)
    set_rng_state(part["rng"])
    return part["loss_sum"], part["right_sum"], part["seen"], part["batches"]


def _one_epoch(run, epoch, loader, model, progress):
    """Train ``run.net`` for one epoch through ``model`` (the net or its DDP wrapper); ``(loss, accuracy)``,
    or ``None`` when a signal stopped it after a step (``run.partial`` then says where)."""
    config, net = run.config, run.net
    if hasattr(run.splits.train, "set_epoch"):  # data drawn anew every epoch (MultiPairs)
        run.splits.train.set_epoch(epoch)
    augment = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch * 7919 + run.rank)
    net.train()
    batches = iter(loader)  # draws the loader's seed from the global generator, at the start of every epoch
    total, right, seen, done = _skip_to(run, batches, augment)
    bar = tqdm(batches, total=len(loader), initial=done, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=not progress or run.rank != 0)
    for x, y in bar:
        x = _augment(config, x, augment)
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
        done += 1
        bar.set_postfix(loss=f"{total / seen:.4f}", acc=f"{right / seen:.3f}")
        if _stop_requested(run):  # the safe point: the step is whole
            bar.close()
            run.partial = dict(epoch=epoch, batches=done, of=len(loader), loss_sum=total, right_sum=right,
                               seen=seen)
            return None
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
        rng = rng_state()
        row.update({f"{name}_accuracy": evaluate(run.avg, data) for name, data in run.eval_sets.items()})
        set_rng_state(rng)
    if val_acc > state["best_val"]:
        state.update(best_val=val_acc, best_epoch=epoch + 1, best_model=copy.deepcopy(run.avg.state_dict()))
    return row


def _save_checkpoint(run):
    ckpt = dict(config=asdict(run.config), shape=run.shape, model=run.net.state_dict(),
                average=run.avg.state_dict() if run.config.ema else None, optimizer=run.opt.state_dict(),
                state=run.state, rng=rng_state())
    if run.partial is not None:
        ckpt["partial"] = run.partial
    save_atomic(ckpt, run.ckpt_path)


def _trace_routing(run, epoch):
    """Record the routing of the selected weights on ``config.trace_routing`` validation images (rank 0)."""
    if not run.config.trace_routing or run.rank != 0:
        return
    from .viz import record_routing

    rng, was_training = rng_state(), run.avg.training  # tracing must not change the run
    path = os.path.join(run.out, "routing_trace", f"epoch_{epoch:03d}.pt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record_routing(run.avg, run.splits.val, path, n=run.config.trace_routing)
    run.avg.train(was_training)
    set_rng_state(rng)


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
                   threads=torch.get_num_threads(), machine=machine(), curve=state["curve"])
    if run.rank == 0:
        save_atomic(dict(config=asdict(run.config), shape=run.shape, model=net.state_dict()),
                    os.path.join(run.out, "model.pt"))
        write_json(os.path.join(run.out, "metrics.json"), metrics)
        log(f"test accuracy {test_acc:.4f} (model of epoch {state['best_epoch']}, val {state['best_val']:.4f}; "
            f"last epoch {last_test_acc:.4f}); {state['seconds']:.0f}s; wrote {run.out}/metrics.json")
    return metrics


def _stopped(run, where):
    """The :class:`TrainingInterrupted` of a run stopped at a safe point, its checkpoint saved."""
    return TrainingInterrupted(run.stop.signum or 15, checkpoint=run.ckpt_path, where=where)


def _epochs(run, loader, sampler, model, progress, log):
    """Train from ``run.state["epoch"]`` to ``config.epochs``: train, validate, save, trace every epoch."""
    for epoch in range(run.state["epoch"], run.config.epochs):
        if _stop_requested(run):
            raise _stopped(run, f"after epoch {epoch}")
        clock = run.partial or {}  # a stopped epoch continues its clocks
        t0, c0 = time.time() - clock.get("seconds", 0.0), time.process_time() - clock.get("cpu_seconds", 0.0)
        sampler.set_epoch(epoch)
        result = _one_epoch(run, epoch, loader, model, progress)
        if result is None:
            run.partial.update(seconds=time.time() - t0, cpu_seconds=time.process_time() - c0)
            if run.rank == 0:
                _save_checkpoint(run)
            p = run.partial
            raise _stopped(run, f"after step {run.state['step']} (epoch {epoch + 1}, batch {p['batches']} of "
                                f"{p['of']})")
        row = _validate(run, epoch, *result, t0, c0)
        if run.rank == 0:
            log(f"epoch {epoch + 1:3d}  loss {result[0]:.4f}  train {result[1]:.4f}  val {row['val_accuracy']:.4f}"
                f"  ({run.state['seconds']:.0f}s)")
            _save_checkpoint(run)
        _trace_routing(run, epoch + 1)


def train(config, out, *, resume=False, overwrite=False, progress=True, splits=None, log=print,
          return_model=False):
    """Train the model of ``config``, select it on the validation split, test it, write the run directory ``out``.

    Parameters
    ----------
    config : TrainConfig
        The run; validated before any data or model is loaded.
    out : str
        Run directory (created). One that holds another run is refused
        unless ``resume`` or ``overwrite``; one that another process trains
        into is refused always.
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
    ~dgl_capsules.files.FolderInUseError
        If another process trains into ``out``.
    NonFiniteLossError
        If the loss or the weights stop being finite (nothing of that epoch is saved).
    ~dgl_capsules.interrupt.TrainingInterrupted
        After SIGINT or SIGTERM, at the end of the step it came in (its
        checkpoint saved: continue with ``resume=True``).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
    config.validate()
    if splits is not None and config.image_size is not None and splits.train.image_shape[-1] != config.image_size:
        side, want = splits.train.image_shape[-1], config.image_size
        raise ValueError(f"image_size: the config asks for {want}x{want} images but splits holds {side}x{side}; "
                         f"pad them (get_dataset(..., image_size={want}) or fit_images) or set image_size=None")
    rank, world = _dist_info()
    check_run_dir(out, resume, overwrite)
    with FolderLock(out, "out", log) if rank == 0 else contextlib.nullcontext():
        check_run_dir(out, resume, overwrite)  # again, now that no other process writes there
        run = _prepare(config, out, resume, overwrite, splits, log, rank, world)
        with StopRequests() as run.stop:
            _epochs(run, *_loader(run), progress, log)
            metrics = _finish(run, log)
            if run.stop.requested:
                raise _stopped(run, "after the run finished")
    return (metrics, run.net) if return_model else metrics


def _prepare(config, out, resume, overwrite, splits, log, rank, world):
    """Load the data, build (or resume) the run and make its directory ready."""
    if splits is None:
        from .data import get_dataset

        splits = get_dataset(config.data, config.image_size)
    run = _start(config, splits, out, rank, world)
    if rank == 0 and overwrite:  # only now that the data and the model are there
        clear_run_dir(out)
    if resume:
        _resume(run)
        where = (f"in epoch {run.state['epoch'] + 1} after batch {run.partial['batches']} of {run.partial['of']}"
                 if run.partial else f"after epoch {run.state['epoch']}")
        log(f"resuming {run.ckpt_path} {where} (step {run.state['step']})")
    else:
        _trace_routing(run, 0)
    if rank == 0:
        log(f"{config.model} ({sum(p.numel() for p in run.net.parameters()):,} parameters) on {config.data}: "
            f"train {len(splits.train)}, val {len(splits.val)}, test {len(splits.test)}; {world} process(es)")
    return run


def _loader(run):
    """``(loader, sampler, model)``: the shuffled batches of this process and the net (DDP-wrapped with several)."""
    model = torch.nn.parallel.DistributedDataParallel(run.net) if run.world > 1 else run.net
    sampler = DistributedSampler(run.splits.train, num_replicas=run.world, rank=run.rank, shuffle=True,
                                 seed=run.config.seed)
    return DataLoader(run.splits.train, batch_size=run.config.batch_size, sampler=sampler), sampler, model
