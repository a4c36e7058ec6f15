"""Efficient-CapsNet's primary capsules as a per-channel dot product or as the depthwise ``nn.Conv2d``, side by side.

The primary capsules apply one depthwise kernel that covers the whole feature
map, so each output is the dot product of a channel's map with its kernel.
The model computes it so; ``conv2d`` computes the same sums with the module's
``nn.Conv2d``. Two measurements, each alternating the two variants round by
round in one process (so a change of load falls on both):

- ``layer``: forward + backward of the primary capsules alone on a batch of
  feature maps of the model's shape;
- ``step``: a whole training step of the model (``bench/bench_epoch.py``'s
  recipe), two copies with the same weights.

The table gives each variant's median wall and process CPU milliseconds and
the median over the rounds of its ratio to ``dot``'s time in the same round.

``OMP_NUM_THREADS=1 python bench/bench_primary_caps.py [--threads N] [--steps 10] [--rounds 3]``
"""
import argparse
import copy
import os
import statistics
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_epoch  # noqa: E402  (imports the package before torch, as the command line does)
from bench_first_conv import medians, print_end, print_start, timed_steps  # noqa: E402

import dgl_capsules as dc  # noqa: E402
import torch  # noqa: E402
from dgl_capsules.functional import efficient_squash  # noqa: E402

VARIANTS = ("dot", "conv2d")


def _conv_primary_caps(self, x):
    """The primary capsules through the depthwise ``nn.Conv2d`` module (the same sums as the model's dot product)."""
    u = self.primary(self.features(x)).flatten(1)  # (B, C)
    return efficient_squash(u.view(u.shape[0], self.n_primary, self.primary_dim))


def _layer_ms(net, variant, features, repeats):
    """Median wall and CPU milliseconds of forward + backward of the primary capsules' sums on ``features``."""
    weight, bias = net.primary.weight, net.primary.bias
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        if variant == "dot":
            u = (features * weight.squeeze(1)).sum((-2, -1)) + bias  # (B, C)
        else:
            u = net.primary(features).flatten(1)  # (B, C)
        u.sum().backward()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return 1e3 * statistics.median(walls), 1e3 * statistics.median(cpus)


def _with_variant(trainer, variant):
    other = copy.copy(trainer)
    other.net = copy.deepcopy(trainer.net)
    if variant == "conv2d":
        other.net.primary_caps = types.MethodType(_conv_primary_caps, other.net)
    other.opt = torch.optim.Adam(other.net.parameters(), lr=trainer.config.lr)
    other.batches = iter(other.loader)
    other.gen = torch.Generator().manual_seed(0)
    return other


def _rows(what, per_round):
    rows = []
    for v in VARIANTS:
        ms, cpu_ms, x, cpu_x = medians(per_round[v], per_round["dot"])
        rows.append(dict(what=what, variant=v, ms=ms, cpu_ms=cpu_ms, x_dot=x, cpu_x_dot=cpu_x))
    return rows


def run(quick=False, steps=None, rounds=None, threads=None):
    """Rows ``{what, variant, ms, cpu_ms, x_dot, cpu_x_dot}`` (medians over the rounds)."""
    steps, rounds = steps or (2 if quick else 10), rounds or (1 if quick else 3)
    if threads:
        bench_epoch._set_threads(threads)
    bench_epoch._reuse_freed_memory()  # as the dgl-capsules command trains
    images, labels = bench_epoch._mnist()[:2]
    base = bench_epoch.Trainer(dc, bench_epoch.recipes(dc)["efficient"], images, labels, images[:256])
    with torch.no_grad():
        features = base.net.features(images[:base.config.batch_size])  # (B, C, side, side)
    features.requires_grad_(True)
    layer = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v in VARIANTS:
            layer[v].append(_layer_ms(base.net, v, features, 20 * steps))
    trainers = {v: _with_variant(base, v) for v in VARIANTS}
    for t in trainers.values():
        timed_steps(t, 2)  # warm-up
    step = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for v, t in trainers.items():
            step[v].append(timed_steps(t, steps))
    return _rows("layer fwd+bwd", layer) + _rows("training step", step)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per variant per round "
                        "(the layer alone: 20 times as many repeats; default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args(argv)
    print_start("bench_primary_caps.py", argv, args.threads)
    rows = run(False, args.steps, args.rounds, args.threads)
    print_end(["what", "variant", "ms", "CPU ms", "x dot", "CPU x dot"],
              [[r["what"], r["variant"], f"{r['ms']:.2f}", f"{r['cpu_ms']:.2f}", f"{r['x_dot']:.3f}",
                f"{r['cpu_x_dot']:.3f}"] for r in rows])


if __name__ == "__main__":
    main()
