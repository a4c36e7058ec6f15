"""Estimate the wall time of a reproduction experiment from measured training steps.

For every trained row of the experiment, builds its model, times a few
training steps (the row's named augmentation, forward, loss, backward, Adam
step) on random images of the row's size and batch, and multiplies by the steps
of the run; with ``--validation`` it also times one pass over the 5,000
validation digits (batch 256, as ``train`` validates) per epoch. CPU time of the
process is measured, not wall time, so that other work on the machine inflates
the figure less; with ``--threads 1`` it is close to the wall time on a quiet
machine.

    OMP_NUM_THREADS=1 python tools/estimate_times.py sabour-table1 --threads 1
"""
import argparse
import time

import torch

from dgl_capsules.data import get_augmentation
from dgl_capsules.models import get_model
from dgl_capsules.reproduce import experiment

# training digits per epoch of each data spec (MultiMNIST: 10 pairs per training digit, at most 60,000)
TRAIN_SIZE = {"mnist": 55_000, "mnist5k": 3_500, "multi:mnist": 60_000, "multi:mnist5k": 35_000}
IMAGE_SIZE = {"multi:mnist": 36, "multi:mnist5k": 36}


def step_seconds(config, steps=4, warmup=1):
    size = config.get("image_size") or IMAGE_SIZE.get(config["data"], 28)
    net = get_model(config["model"], config.get("preset"), image_size=size, **config.get("settings", {}))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(config["batch_size"], 1, size, size)
    y = torch.arange(config["batch_size"]) % 10
    augment = get_augmentation(config["augment"]) if config.get("augment") else None
    gen = torch.Generator().manual_seed(0)
    net.train()
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.process_time()
        out = net(x if augment is None else augment(x, gen), y)
        loss = net.loss(out, y, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.process_time() - t0) / steps, sum(p.numel() for p in net.parameters())


def validation_seconds(config, n=5000, batch=256):
    """CPU seconds of one evaluation pass over ``n`` images (no gradients, eval mode)."""
    size = config.get("image_size") or IMAGE_SIZE.get(config["data"], 28)
    net = get_model(config["model"], config.get("preset"), image_size=size, **config.get("settings", {})).eval()
    x = torch.rand(batch, 1, size, size)
    with torch.no_grad():
        net.scores(net(x))
        t0 = time.process_time()
        for _ in range(-(-n // batch)):
            net.scores(net(x))
    return time.process_time() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--validation", action="store_true", help="add one pass over 5,000 validation digits per epoch")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    exp = experiment(args.name)
    total = 0.0
    print(f"{args.name}: CPU seconds per training step with {args.threads} thread(s), {args.steps} steps each")
    print("| row | parameters | batch | s / step | min / epoch | epochs | seeds | hours per run | hours |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in exp.rows:
        if row.same_as:
            continue
        c = row.config
        sec, n = step_seconds(c, args.steps)
        steps = -(-TRAIN_SIZE[c["data"]] // c["batch_size"])
        val = validation_seconds(c) if args.validation else 0.0
        per_run = (sec * steps + val) * c["epochs"] / 3600
        total += per_run * len(row.seeds)
        print(f"| {row.label} | {n:,} | {c['batch_size']} | {sec:.3f} | {sec * steps / 60:.1f} | {c['epochs']} | "
              f"{len(row.seeds)} | {per_run:.2f} | {per_run * len(row.seeds):.2f} |")
    what = "validation included" if args.validation else "evaluation not included"
    print(f"total: {total:.1f} h of training with {args.threads} thread(s) ({what})")


if __name__ == "__main__":
    main()
