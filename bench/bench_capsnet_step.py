"""A CapsNet training step: graph routing vs the same network with dense routing.

``CapsNet.from_preset("small" | "paper")`` on 28x28 MNIST-sized random
images; one step is ``zero_grad``, forward with labels, ``model.loss``,
backward and an Adam step. The dense variant is the same model object with
the same weights, its class-capsule layer's ``forward`` replaced (in this
benchmark only, by monkeypatching the instance) with the paper's dense
formulation: ``u_hat = einsum('ijkd,bik->bijd', W, u)`` then Procedure 1 with
einsums (``bench_dynamic.dense_routing``).

Timing: graph and dense steps interleaved in one process, same threads, the
minimum of the repeats after one warm-up step each. Peak memory: one step in
a fresh subprocess per (preset, variant), the growth of the peak resident
set over the resident set before the step (model and batch already
allocated; the step creates Adam's state, the same for both variants).

Run ``python bench/bench_capsnet_step.py [--quick]``; ``run(quick)`` returns
the rows for ``bench/run_all.py``.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from bench_dynamic import dense_routing  # noqa: E402
from dgl_capsules.models import CapsNet  # noqa: E402

BATCH = {"small": 32, "paper": 16}


def _dense_forward(self, x, return_routing=False, return_trace=False):
    """Drop-in for DynamicCaps.forward: the dense einsum formulation, same weight."""
    u_hat = torch.einsum("ijkd,bik->bijd", self.weight, x)  # (B, I, J, D)
    return dense_routing(u_hat, self.n_iters)  # (B, J, D)


def make(preset, variant, seed=0):
    torch.manual_seed(seed)
    model = CapsNet.from_preset(preset)
    if variant == "dense":
        model.digits.forward = types.MethodType(_dense_forward, model.digits)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH[preset], 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (BATCH[preset],), generator=gen)
    return model, opt, x, y


def step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    out = model(x, y)
    loss = model.loss(out, y, 0)
    loss.backward()
    opt.step()
    return loss.detach()


def time_preset(preset, repeats):
    setups = {v: make(preset, v) for v in ("dense", "graph")}
    first = {v: float(step(*s)) for v, s in setups.items()}  # warm-up; same weights -> same loss
    assert abs(first["dense"] - first["graph"]) < 1e-3 * max(1.0, abs(first["dense"])), first
    best = {v: float("inf") for v in setups}
    for _ in range(repeats):
        for v, s in setups.items():
            t0 = time.perf_counter()
            step(*s)
            best[v] = min(best[v], (time.perf_counter() - t0) * 1e3)
    return best


def _status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_child(preset, variant):
    s = make(preset, variant)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident set
    rss_before = _status_kb("VmRSS")
    step(*s)  # includes creating Adam's state, the same for both variants
    return max(0.0, (_status_kb("VmHWM") - rss_before) / 1024)


def peak_mb(preset, variant):
    cmd = [sys.executable, os.path.abspath(__file__), "--peak", preset, variant]
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick=False):
    """One row per preset; ``quick``: the small preset only, 2 repeats, no memory."""
    rows = []
    for preset in ("small",) if quick else ("small", "paper"):
        t = time_preset(preset, 2 if quick else 4)
        row = {
            "case": f"CapsNet {preset} train step",
            "batch": BATCH[preset],
            "dense step ms": round(t["dense"], 1),
            "graph step ms": round(t["graph"], 1),
            "step ratio": round(t["graph"] / t["dense"], 2),
        }
        if not quick:
            row["dense peak MB"] = round(peak_mb(preset, "dense"))
            row["graph peak MB"] = round(peak_mb(preset, "graph"))
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peak", nargs=2, metavar=("PRESET", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak:
        print(json.dumps(_peak_child(*args.peak)))
        return
    for row in run(quick=args.quick):
        print(", ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
