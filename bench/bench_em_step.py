"""A MatrixCapsNet training step: EM routing before and after the speed-up, and dense per-patch EM.

Two networks on 28x28 random images, batch 32, float32:

- ``paper-smaller``: the paper's smaller network, A = 64, B = 8, C = D = 16,
  2 EM iterations, the paper's stem (5x5 at stride 2) and 1x1 primary
  capsules (28,800 + 20,736 + 1,440 routed edges);
- ``small``: ``MatrixCapsNet.from_preset("small")`` (14,400 + 5,184 + 720 edges).

With ``--others``, two networks whose routing code the EM speed-up did not change,
for the before/after of what it changed for every model (huge pages, freed
memory reused): ``capsnet-small``, ``CapsNet.from_preset("small")`` (dynamic
routing, batch 64), and ``heinsen-small``, ``HeinsenImageNet.from_preset("small")``
(Heinsen routing, batch 32): only ``after-4k`` (this tree as it was before
those changes: 4 KB pages, freed memory returned), ``after`` and
``after-reuse``.

Variants, each the same network with the same weights (seed 0):

- ``before``: the library at commit ``BEFORE`` (exported with ``git archive``
  into a temporary directory and imported from there);
- ``after``: the library in this working tree, as a user gets it (large tensors in
  transparent huge pages: ``THP_MEM_ALLOC_ENABLE=1``, which the package sets when it is
  imported before torch);
- ``after-4k``: the same with ``THP_MEM_ALLOC_ENABLE=0`` (4 KB pages, as ``before`` runs),
  to show what the huge pages alone give;
- ``after-reuse``: ``after`` with freed memory kept for reuse
  (:func:`dgl_capsules.train.reuse_freed_memory`), as the ``dgl-capsules`` command
  runs it;
- ``after-4k-reuse``: ``after-4k`` with freed memory kept for reuse, to show
  what the huge pages add once memory is reused;
- ``dense``: this tree's network with its routed layers replaced by EM routed
  patch by patch (``bench/_em_dense.py``: unfold the receptive fields, route
  each on its own, no normalisation over overlapping fields), the way public
  PyTorch implementations do it; what a user would run instead;
- ``dense-reuse``: ``dense`` with freed memory kept for reuse, so that each of
  ``after`` / ``after-reuse`` has a dense step under the same allocator setting:
  "x dense (same allocator)" is ``after / dense`` and ``after-reuse / dense-reuse``
  (of the fwd+bwd wall clock, and of the CPU time in "CPU x dense").

"fwd" is the forward pass and the spread loss with autograd recording;
"fwd+bwd" adds the backward pass (no optimiser step, so every repeat sees the
same weights). Times are the minimum over the repeats of all rounds; each
round runs every variant once, one after the other, each in a fresh
subprocess with the same number of threads. Beside the wall-clock times, the
process CPU time of the same calls (all threads): on a loaded machine it moves
less than the wall clock. Peak memory: the growth of the
peak resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of that
fresh subprocess during its first fwd+bwd step, over the resident set before
it (network, batch and imports already there).

Run ``python bench/bench_em_step.py [--quick] [--threads 2] [--before REV] [--after ROOT] [--others]
[--variants after after-reuse dense dense-reuse]``;
``run(quick)`` returns the rows for ``bench/run_all.py``.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The last commit before the EM speed-up (ConvCaps routed on a regular layout).
BEFORE = "d6147f8"
BATCH = 32
NETS = {
    "paper-smaller": dict(conv_channels=64, primary_types=8, caps1_types=16, caps2_types=16, n_iters=2,
                          stem_stride=2, primary_kernel=1, primary_stride=1),
    "small": None,  # the preset
}
OTHERS = {"capsnet-small": ("capsnet", 64), "heinsen-small": ("heinsen", 32)}  # model, batch
VARIANTS = ("before", "after-4k", "after", "after-reuse", "after-4k-reuse", "dense", "dense-reuse")
# Each variant's dense step under the same allocator setting.
SAME_ALLOCATOR = {"after": "dense", "after-reuse": "dense-reuse", "dense": "dense", "dense-reuse": "dense-reuse"}


def before_tree(rev=BEFORE):
    """The package at ``rev``, exported once into the temporary directory; returns its root."""
    out = os.path.join(tempfile.gettempdir(), f"dgl_capsules_before_{rev}")
    if not os.path.isdir(os.path.join(out, "dgl_capsules")):
        os.makedirs(out, exist_ok=True)
        archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "dgl_capsules"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", out], input=archive, check=True)
    return out


def _worker(net_name, variant, threads, repeats):
    """Runs in the subprocess: build, one measured step for memory, then the timings."""
    import dgl_capsules  # noqa: F401  (before torch, as a user's script would: see its huge-page NOTE)
    import torch

    torch.set_num_threads(threads)
    from dgl_capsules.models.matrix import MatrixCapsNet

    if variant.endswith("-reuse"):
        if not _reuse_freed_memory():
            raise RuntimeError("after-reuse needs glibc (reuse_freed_memory returned False)")

    torch.manual_seed(0)
    batch = BATCH
    if net_name in OTHERS:
        from dgl_capsules.models import get_model  # not in the before tree: no "before" rows here

        model, batch = OTHERS[net_name]
        net = get_model(model, "small")
    else:
        settings = NETS[net_name]
        net = MatrixCapsNet.from_preset("small") if settings is None else MatrixCapsNet(**settings)
    if variant.startswith("dense"):
        sys.path.insert(0, HERE)
        from _em_dense import make_dense

        make_dense(net)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)

    def fwd():
        return net.loss(net(x, y), y, 0)

    def fwd_bwd():
        net.zero_grad(set_to_none=True)
        fwd().backward()

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fwd_bwd()
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    loss = float(fwd())

    def best(fn):
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return min(wall), min(cpu)

    (fwd_s, fwd_cpu), (fwd_bwd_s, fwd_bwd_cpu) = best(fwd), best(fwd_bwd)
    return {"fwd_s": fwd_s, "fwd_bwd_s": fwd_bwd_s, "fwd_cpu_s": fwd_cpu, "fwd_bwd_cpu_s": fwd_bwd_cpu,
            "peak_mb": peak_mb, "loss": loss}


def _reuse_freed_memory():
    """``reuse_freed_memory()`` of whichever module of the package holds it."""
    import importlib

    for module in ("dgl_capsules.train", "dgl_capsules.runtime", "dgl_capsules._runtime"):
        try:
            fn = getattr(importlib.import_module(module), "reuse_freed_memory", None)
        except ImportError:
            continue
        if fn is not None:
            return fn()
    raise RuntimeError("no reuse_freed_memory in dgl_capsules")


def _spawn(net_name, variant, threads, repeats, rev, after=None):
    root = before_tree(rev) if variant == "before" else (after or ROOT)
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS=str(threads))
    env.pop("THP_MEM_ALLOC_ENABLE", None)  # each tree's own default ...
    if variant in ("after-4k", "after-4k-reuse"):
        env["THP_MEM_ALLOC_ENABLE"] = "0"  # ... but this row's
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", net_name, variant,
           "--threads", str(threads), "--repeats", str(repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=HERE)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} (PYTHONPATH={root}) failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _variants(net_name, only=None):
    """All variants for the EM networks; for the others (their routing code never changed, and
    ``before`` predates some of them) the page-size and memory-reuse variants of this tree; ``only``
    keeps those it names."""
    every = VARIANTS if net_name in NETS else ("after-4k", "after", "after-reuse", "after-4k-reuse")
    return tuple(v for v in every if only is None or v in only)


def run(quick=False, threads=2, rev=BEFORE, rounds=None, log=None, after=None, others=False, variants=None):
    """One row per (network, variant); ratios are before / after and dense / after, and every
    variant's step over the dense step under the same allocator setting (:data:`SAME_ALLOCATOR`).

    ``after`` is the root of the tree whose ``dgl_capsules`` is "after" (default: this one); ``others``
    measures the networks of :data:`OTHERS` instead of the EM ones; ``variants`` measures only those."""
    rounds = rounds or (1 if quick else 2)
    repeats = 2 if quick else 4
    nets = OTHERS if others else NETS
    best = {}
    for _ in range(rounds):
        for net_name in nets:
            for variant in _variants(net_name, variants):
                r = _spawn(net_name, variant, threads, repeats, rev, after)
                if log:
                    log(f"  {net_name:14s} {variant:11s} fwd {r['fwd_s']:.3f} s  fwd+bwd {r['fwd_bwd_s']:.3f} s  "
                        f"(CPU {r['fwd_cpu_s']:.3f} / {r['fwd_bwd_cpu_s']:.3f} s)  "
                        f"peak +{r['peak_mb']:.0f} MB  loss {r['loss']:.4f}", flush=True)
                key = (net_name, variant)
                if key not in best:
                    best[key] = r
                else:
                    for k in ("fwd_s", "fwd_bwd_s", "fwd_cpu_s", "fwd_bwd_cpu_s", "peak_mb"):
                        best[key][k] = min(best[key][k], r[k])
    rows = []
    for net_name in nets:
        after = best.get((net_name, "after"))
        before = best.get((net_name, "before"))
        # Same network, same weights, same batch: before and after must give the same loss.
        if after and before and abs(before["loss"] - after["loss"]) > 1e-4 * max(1.0, abs(after["loss"])):
            raise RuntimeError(f"{net_name}: the loss before ({before['loss']}) and after ({after['loss']}) differ")
        for variant in _variants(net_name, variants):
            r = best[(net_name, variant)]
            row = {
                "network": net_name, "variant": variant if variant != "before" else f"before ({rev})",
                "fwd s": r["fwd_s"], "fwd+bwd s": r["fwd_bwd_s"],
                "fwd CPU s": r["fwd_cpu_s"], "fwd+bwd CPU s": r["fwd_bwd_cpu_s"], "peak MB": r["peak_mb"],
            }
            if after:
                row.update({
                    "fwd x after": r["fwd_s"] / after["fwd_s"],
                    "fwd+bwd x after": r["fwd_bwd_s"] / after["fwd_bwd_s"],
                    "f+b CPU x after": r["fwd_bwd_cpu_s"] / after["fwd_bwd_cpu_s"],
                    "peak x after": r["peak_mb"] / after["peak_mb"]})
            dense = best.get((net_name, SAME_ALLOCATOR.get(variant)))
            row["x dense (same allocator)"] = r["fwd_bwd_s"] / dense["fwd_bwd_s"] if dense else ""
            row["CPU x dense"] = r["fwd_bwd_cpu_s"] / dense["fwd_bwd_cpu_s"] if dense else ""
            row["loss"] = r["loss"]
            rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one round, fewer repeats")
    p.add_argument("--threads", type=int, default=2, help="OpenMP threads per variant (default 2)")
    p.add_argument("--before", default=BEFORE, help=f"commit of the 'before' row (default {BEFORE})")
    p.add_argument("--after", default=None,
                   help="root of the tree imported for 'after' and 'dense' (default: this working tree)")
    p.add_argument("--rounds", type=int, default=None, help="rounds over all variants (default 2, quick 1)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                   help="measure only these (e.g. after after-reuse dense dense-reuse: the dense comparison)")
    p.add_argument("--others", action="store_true",
                   help="CapsNet and HeinsenImageNet small instead of the EM networks (default: off)")
    p.add_argument("--worker", nargs=2, metavar=("NET", "VARIANT"), help=argparse.SUPPRESS)
    p.add_argument("--repeats", type=int, default=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(*args.worker, args.threads, args.repeats)))
        return
    cmd = "python bench/bench_em_step.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"command: {cmd.strip()}")
    batch = ", ".join(f"{n} {b}" for n, (_, b) in OTHERS.items()) if args.others else BATCH
    print(f"load average at start: {load}; {args.threads} thread(s); batch {batch}; 28x28; float32")
    rows = run(args.quick, args.threads, args.before, args.rounds, log=print, after=args.after, others=args.others,
               variants=args.variants)
    with open("/proc/loadavg") as f:
        print(f"load average at end: {' '.join(f.read().split()[:3])}")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "|".join("---" for _ in keys) + "|")
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
