"""The first convolution of each image model as ``nn.Conv2d`` or as ``ImageConv2d``, side by side.

For every model of ``bench/bench_epoch.py`` (its recipes: batch size, augmentation,
loss), two copies with the same weights differ only in their first convolution:

- ``conv2d``: ``torch.nn.Conv2d`` (oneDNN's kernel, contiguous output);
- ``image``: :class:`dgl_capsules.nn.ImageConv2d` (one matrix product, channels-last
  output, so the layers after it run channels-last), what CapsNet, MatrixCapsNet
  and the CNN use.

Each round trains both copies for ``--steps`` steps, one after the other (so a
change of load falls on both); the table gives the median over the rounds of
each copy's wall and process CPU time per step and their ratio to ``conv2d``'s
in the same round.

``OMP_NUM_THREADS=1 python bench/bench_first_conv.py [--threads N] [--steps 8] [--rounds 3] [--models cnn ...]``
"""
import argparse
import copy
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_epoch  # noqa: E402  (imports the package before torch, as the command line does)

import dgl_capsules as dc  # noqa: E402
import torch  # noqa: E402
from dgl_capsules.nn import ImageConv2d  # noqa: E402
from torch import nn  # noqa: E402

VARIANTS = ("conv2d", "image")


def first_conv(net):
    """``(parent module, attribute name)`` of the first ``nn.Conv2d`` of ``net`` (in module order)."""
    for path, module in net.named_modules():  # depth first, in registration order
        if isinstance(module, nn.Conv2d):
            parent, _, name = path.rpartition(".")
            return net.get_submodule(parent), name
    raise ValueError(f"{type(net).__name__} has no Conv2d")


def with_first_conv(trainer, variant):
    """A copy of ``trainer`` (same weights, data order and optimiser state) whose first convolution is ``variant``."""
    other = copy.copy(trainer)
    other.net = copy.deepcopy(trainer.net)
    parent, name = first_conv(other.net)
    old = getattr(parent, name)
    args = dict(in_channels=old.in_channels, out_channels=old.out_channels, kernel_size=old.kernel_size,
                stride=old.stride, padding=old.padding, bias=old.bias is not None)
    new = (nn.Conv2d if variant == "conv2d" else ImageConv2d)(**args)
    new.load_state_dict(old.state_dict())
    setattr(parent, name, new)
    other.opt = torch.optim.Adam(other.net.parameters(), lr=trainer.config.lr)
    other.loader = trainer.loader
    other.batches = iter(other.loader)
    other.gen = torch.Generator().manual_seed(0)
    return other


def timed_steps(trainer, steps):
    """Median wall and CPU milliseconds per step over ``steps`` steps."""
    walls, cpus = [], []
    clock = bench_epoch._Clock()
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        trainer.step(clock)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return 1e3 * statistics.median(walls), 1e3 * statistics.median(cpus)


def run(quick=False, models=None, steps=None, rounds=None, threads=None):
    """Rows ``{model, variant, step_ms, cpu_ms, x_conv2d, cpu_x_conv2d}`` (medians over the rounds).

    ``quick``: CapsNet and the CNN, 2 steps, 1 round (for ``bench/run_all.py --quick``).
    """
    models = models or (("capsnet", "cnn") if quick else ("capsnet", "matrixcaps", "cnn", "efficient"))
    steps, rounds = steps or (2 if quick else 8), rounds or (1 if quick else 3)
    if threads:
        bench_epoch._set_threads(threads)
    bench_epoch._reuse_freed_memory()  # as the dgl-capsules command trains
    images, labels = bench_epoch._mnist()[:2]
    configs = bench_epoch.recipes(dc)
    rows = []
    for model in models:
        base = bench_epoch.Trainer(dc, configs[model], images, labels, images[:256])
        trainers = {v: with_first_conv(base, v) for v in VARIANTS}
        for t in trainers.values():
            timed_steps(t, 2)  # warm-up
        per_round = {v: [] for v in VARIANTS}
        for _ in range(rounds):
            for v, t in trainers.items():
                per_round[v].append(timed_steps(t, steps))
        for v in VARIANTS:
            step_ms, cpu_ms, x, cpu_x = medians(per_round[v], per_round["conv2d"])
            rows.append(dict(model=model, variant=v, step_ms=step_ms, cpu_ms=cpu_ms, x_conv2d=x, cpu_x_conv2d=cpu_x))
    return rows


def medians(times, ref):
    """Medians over rounds of ``times`` (``[(wall, cpu), ...]``, one pair a round): wall, CPU, and the ratios of
    wall and of CPU to ``ref``'s in the same round."""
    wall = [w / r for (w, _), (r, _) in zip(times, ref)]
    cpu = [c / r for (_, c), (_, r) in zip(times, ref)]
    return (statistics.median(w for w, _ in times), statistics.median(c for _, c in times),
            statistics.median(wall), statistics.median(cpu))


def _load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def print_start(script, argv, threads):
    """The command line of ``bench/SCRIPT`` and the threads and load it starts with."""
    print(f"command: python bench/{script} " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"  {threads or torch.get_num_threads()} thread(s); load average {_load()}")


def print_end(columns, lines):
    """A markdown table of ``lines`` (lists of cells) under ``columns``, then the load at the end."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for cells in lines:
        print("| " + " | ".join(cells) + " |")
    print(f"load average at end: {_load()}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant per round (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--models", nargs="+", default=["capsnet", "matrixcaps", "cnn", "efficient"],
                        choices=["capsnet", "capsnet-nodec", "matrixcaps", "cnn", "efficient"])
    args = parser.parse_args(argv)
    print_start("bench_first_conv.py", argv, args.threads)
    rows = run(False, args.models, args.steps, args.rounds, args.threads)
    print_end(["model", "first conv", "step ms", "step CPU ms", "x conv2d", "CPU x conv2d"],
              [[r["model"], r["variant"], f"{r['step_ms']:.1f}", f"{r['cpu_ms']:.1f}", f"{r['x_conv2d']:.3f}",
                f"{r['cpu_x_conv2d']:.3f}"] for r in rows])


if __name__ == "__main__":
    main()
