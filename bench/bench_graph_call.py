"""Per-call cost of getting a layer's cached capsule graph: the view handed out now vs the shared graph before.

Layers call :func:`dgl_capsules.capsule_graph` (or ``conv_capsule_graph``) on
every forward with ``device=x.device``. Until 2026-12 the cache returned the
one shared graph object (writable by any caller) and ``device=...`` copied it
with ``g.to(device)`` on every call; now every call returns a view
(``local_var()``: the cached structure with feature frames of its own) of a
graph cached per device. The "before" rows rebuild that old scheme here
(``functools.lru_cache`` on the same builder) so both run side by side in one
process; the minimum of 5 repeats of 20,000 calls is kept.

Run ``python bench/bench_graph_call.py``.
"""
import os
import sys
import timeit
from functools import lru_cache

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dgl_capsules as dc  # noqa: E402
from dgl_capsules import graph as G  # noqa: E402

_old_complete = lru_cache(maxsize=64)(G._capsule_graph)
_old_conv = lru_cache(maxsize=64)(G._conv_capsule_graph)


def old_capsule_graph(n_in, n_out, device=None):
    g = _old_complete(G.check_positive_int("n_in", n_in), G.check_positive_int("n_out", n_out))
    return g if device is None else g.to(device)


def old_conv_capsule_graph(in_hw, kernel, stride, in_types, out_types, device=None):
    g = _old_conv(in_hw[0], in_hw[1], kernel, stride, in_types, out_types)
    return g if device is None else g.to(device)


CASES = [
    ("capsule_graph(1152, 10)", "old_capsule_graph(1152, 10)", "dc.capsule_graph(1152, 10)"),
    ("capsule_graph(1152, 10, device=cpu)", "old_capsule_graph(1152, 10, device=cpu)",
     "dc.capsule_graph(1152, 10, device=cpu)"),
    ("conv_capsule_graph((12, 12), 3, 2, 32, 32, device=cpu)",
     "old_conv_capsule_graph((12, 12), 3, 2, 32, 32, device=cpu)",
     "dc.conv_capsule_graph((12, 12), 3, 2, 32, 32, device=cpu)"),
]


def run(number=20000, repeat=5):
    env = dict(globals(), cpu=torch.device("cpu"))
    rows = []
    for name, before, after in CASES:
        eval(before, env), eval(after, env)  # build the caches
        t = {}
        for _ in range(repeat):  # interleaved
            for key, stmt in (("before", before), ("after", after)):
                t[key] = min(t.get(key, float("inf")), timeit.timeit(stmt, globals=env, number=number) / number)
        rows.append(dict(case=name, before_us=t["before"] * 1e6, after_us=t["after"] * 1e6,
                         ratio=t["after"] / t["before"]))
    return rows


if __name__ == "__main__":
    print(f"python bench/bench_graph_call.py  (torch {torch.__version__}, threads {torch.get_num_threads()})")
    print(f"{'case':58s} {'before us':>10s} {'after us':>9s} {'after/before':>13s}")
    for r in run():
        print(f"{r['case']:58s} {r['before_us']:10.2f} {r['after_us']:9.2f} {r['ratio']:13.2f}")
