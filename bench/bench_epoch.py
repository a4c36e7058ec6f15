"""Training throughput: a full-MNIST epoch per model, its floating-point work, and where a step's time goes.

Models and recipes (each row's :class:`~dgl_capsules.train.TrainConfig` comes from the
``reproduce`` experiment named, so the bench follows the recipes):

- ``capsnet``: CapsNet ``small``, 3 iterations, decoder, batch 64, shifts of up to 2 px
  (``sabour-table1``, "3 iterations + reconstruction");
- ``capsnet-nodec``: the same without the decoder ("3 iterations");
- ``matrixcaps``: MatrixCapsNet ``small``, batch 32, shift 1, rotation 10 degrees, scale 0.1,
  weight average 0.995 (``em-mnist``);
- ``cnn``: the width-matched CNN (``get_model("cnn", "small")``), CapsNet's recipe
  (``sabour-table1``, "CNN (width-matched)");
- ``efficient``: Efficient-CapsNet (``"efficient-capsnet"``) at batch 16 with the recipe of the
  first ``reproduce`` row that trains it (shifts of up to 2 px if there is none); printed as not
  available when that model is not registered.

A step is what ``dgl_capsules.train``'s loop does for one batch, phase by phase: fetch the batch
from a ``DataLoader`` (``data``), the recipe's augmentation (``augment``), set the learning rate and
run the model (``forward``), ``model.loss`` and ``loss.item()`` with its finiteness check
(``loss``), ``zero_grad`` / ``backward`` / ``Adam.step`` and the weight average (``optimiser``
holds all but ``backward``), then the running loss and accuracy (``bookkeeping``). The images are
the bundled mnist5k digits (real MNIST, 28x28), cycled.

Timing: every round times ``--steps`` steps of every model (after warm-up steps), the forward
pass over 4 batches of 256 validation/test digits (1 in quick mode; eval mode, no gradients, as
``evaluate``), and one float32 4096 x 4096 @ 4096 x 4096 ``torch.mm``; the rounds alternate the
models and the matmul, and every figure is the median over the rounds. An epoch is
``ceil(55000 / batch)`` steps plus the forward pass over 15,000 digits (validation and test).
"step CPU ms" is the process CPU time of a step (all threads): on a loaded machine it moves less
than the wall clock, which counts the time other processes hold the cores. With ``--compare``,
"time x this tree" and "CPU x this tree" are the medians of the per-round ratios. "x matmul (CPU)" is
the same ratio with CPU time on both sides (the evaluation's CPU time taken at the step's share).

Work: :class:`torch.utils.flop_counter.FlopCounterMode` over one training step (forward, loss and
backward) and one evaluation batch, scaled to the epoch ("GFLOP/epoch"). It counts matrix
products and convolutions (and their backward) wherever they run, the routing's batched products
included; not elementwise work, reductions, copies, the optimiser or DGL's sparse kernels (see
``_epoch_profile.py``); each tree is counted on its own. It counts what runs: MatrixCapsNet's
convolutional-capsule votes, computed as block-diagonal products, count 4x the arithmetic of their
4x4 products (the zeros too). "routing GFLOP" is the routing's own arithmetic counted from its
equations (dynamic and EM routing; backward counted as twice the forward), shown beside, not
added. "x matmul" = (GFLOP/epoch / epoch seconds) / the matmul's GFLOP/s, same threads, same run.

Breakdown: a few more steps per model under :mod:`torch.profiler` with ``record_function`` ranges
on the phases, on every ``Conv2d`` / ``Linear`` module and on every routing call; backward work is
attributed to the forward op that recorded it (autograd sequence numbers). Figures are ms per
profiled step (the profiler slows steps; the last column says by how much).

``--compare REV`` also runs every model with the package as it is at git revision ``REV``
(exported with ``git archive`` and imported under another name, so both run in this process,
alternating), and adds the time ratios to this tree.

Run ``python bench/bench_epoch.py [--threads N] [--steps N] [--models capsnet ...] [--quick]
[--compare REV]``; ``run(quick)`` returns the rows for ``bench/run_all.py``.
"""
import argparse
import importlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # no profiler stage messages on stderr
import dgl_capsules  # noqa: E402,F401  (before torch: its huge-page setting, as the command line runs)
import torch  # noqa: E402

import _epoch_profile as prof  # noqa: E402

TRAIN_DIGITS, EVAL_DIGITS, EVAL_BATCH = 55_000, 15_000, 256
EFFICIENT = "efficient-capsnet"
MODELS = ("capsnet", "capsnet-nodec", "matrixcaps", "cnn", "efficient")


def recipes(pkg):
    """``{name: TrainConfig}`` for the models :data:`MODELS` that ``pkg`` has (``efficient``: only when registered)."""
    rep = importlib.import_module(f"{pkg.__name__}.reproduce")
    TrainConfig = importlib.import_module(f"{pkg.__name__}.train").TrainConfig
    table1 = rep.experiment("sabour-table1")
    rows = {
        "capsnet": table1.row("3 iterations + reconstruction").config,
        "capsnet-nodec": table1.row("3 iterations").config,
        "matrixcaps": rep.experiment("em-mnist").rows[0].config,
        "cnn": table1.row("CNN (width-matched)").config,
    }
    models = importlib.import_module(f"{pkg.__name__}.models")
    if EFFICIENT in models.list_models():
        found = [r.config for name in rep.list_experiments() for r in rep.experiment(name).rows
                 if r.config.get("model") == EFFICIENT]
        preset = "small" if "small" in models.model_presets(EFFICIENT) else None
        rows["efficient"] = dict(found[0] if found else dict(model=EFFICIENT, preset=preset, shift=2), batch_size=16)
    keep = set(TrainConfig.__dataclass_fields__) - {"epochs", "data", "eval_each_epoch", "trace_routing"}
    return {name: TrainConfig(**{k: v for k, v in cfg.items() if k in keep}).validate() for name, cfg in rows.items()}


def load_tree(rev):
    """The package as it is at git revision ``rev``, imported as ``dgl_capsules_<sha>`` (its imports are relative)."""
    sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=10", rev], check=True, capture_output=True,
                         text=True).stdout.strip()
    name = f"dgl_capsules_{sha}"
    base = os.path.join(tempfile.gettempdir(), "bench_epoch_trees", sha)
    if not os.path.isdir(os.path.join(base, name)):
        os.makedirs(base, exist_ok=True)
        archive = subprocess.run(["git", "-C", ROOT, "archive", sha, "dgl_capsules"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
        os.rename(os.path.join(base, "dgl_capsules"), os.path.join(base, name))
    sys.path.insert(0, base)
    return importlib.import_module(name), sha


class Trainer:
    """One model of one package trained step by step as ``train``'s loop does; phases timed by :meth:`step`."""

    def __init__(self, pkg, config, images, labels, eval_images, seed=0):
        self.pkg, self.config = pkg, config
        train = importlib.import_module(f"{pkg.__name__}.train")
        self.data = importlib.import_module(f"{pkg.__name__}.data")
        self.evaluation = importlib.import_module(f"{pkg.__name__}.evaluation")
        self.learning_rate = train.learning_rate
        torch.manual_seed(seed)
        shape = dict(in_channels=1, image_size=28, n_classes=10)
        self.net = importlib.import_module(f"{pkg.__name__}.models").get_model(
            config.model, config.preset, **shape, **config.settings)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self.avg = None
        if config.ema:
            import copy

            self.avg = copy.deepcopy(self.net)
        n = len(images) - len(images) % config.batch_size
        dataset = self.data.ImageDataset(images[:n], labels[:n], 10)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                                                  generator=torch.Generator().manual_seed(seed))
        self.batches = iter(self.loader)
        self.eval_images = eval_images
        self.gen = torch.Generator().manual_seed(seed)
        self.n_step, self.total, self.right, self.seen = 0, 0.0, 0.0, 0

    def next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def augment(self, x):
        c = self.config
        if c.shift:
            x = self.data.random_shift(x, c.shift, self.gen)
        if c.rotate or c.scale:
            x = self.data.random_affine(x, self.gen, rotation=c.rotate, scale=(1 - c.scale, 1 + c.scale))
        if c.augment:
            x = self.data.get_augmentation(c.augment)(x, self.gen)
        return x

    def step(self, clock):
        """One training step; ``clock(phase)`` is a context manager around each phase."""
        net, opt, config = self.net, self.opt, self.config
        with clock("data"):
            x, y = self.next_batch()
        with clock("augment"):
            x = self.augment(x)
        with clock("forward"):
            lr = self.learning_rate(config, 0, self.n_step)
            for group in opt.param_groups:
                group["lr"] = lr
            out = net(x, y)
        with clock("loss"):
            loss = net.loss(out, y, self.n_step)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"{config.model}: non-finite loss at step {self.n_step}")
        with clock("optimiser"):
            opt.zero_grad(set_to_none=True)
        with clock("backward"):
            loss.backward()
        with clock("optimiser"):
            opt.step()
            if self.avg is not None:
                with torch.no_grad():
                    for a, p in zip(self.avg.parameters(), net.parameters()):
                        a.mul_(config.ema).add_(p.detach(), alpha=1 - config.ema)
                    for a, b in zip(self.avg.buffers(), net.buffers()):
                        a.copy_(b)
        with clock("bookkeeping"):
            self.n_step += 1
            b = x.shape[0]
            self.total += value * b
            self.right += self.evaluation.accuracy(net.scores(out).detach(), y) * b
            self.seen += b
            _ = f"{self.total / self.seen:.4f} {self.right / self.seen:.3f}"  # the progress bar's text
        return value

    def train_step_only(self):
        """Forward, loss and backward of one batch, for counting work."""
        x, y = self.next_batch()
        x = self.augment(x)
        self.net.zero_grad(set_to_none=True)
        self.net.loss(self.net(x, y), y, self.n_step).backward()

    @torch.no_grad()
    def evaluate(self, n_batches):
        model = self.avg if self.avg is not None else self.net
        model.eval()
        for i in range(n_batches):
            model.scores(model(self.eval_images[(i * EVAL_BATCH) % len(self.eval_images):][:EVAL_BATCH]))
        model.train()


class _Clock:
    """Sums wall time per phase (``clock(phase)`` as a context manager)."""

    def __init__(self):
        self.seconds = {}

    def __call__(self, phase):
        clock = self

        class _Phase:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                clock.seconds[phase] = clock.seconds.get(phase, 0.0) + time.perf_counter() - self.t0
                return False

        return _Phase()


def _profile_clock(phase):
    return torch.profiler.record_function(phase)


def matmul_rate(n=4096):
    """GFLOP/s of one float32 ``n x n @ n x n`` torch.mm (after the inputs exist), by wall clock and by
    process CPU time."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a[:256], b, out=out[:256])  # first touch of the output and library warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    torch.mm(a, b, out=out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return 2 * n ** 3 / wall / 1e9, 2 * n ** 3 / cpu / 1e9


def _mnist():
    """(train images, labels, evaluation images) of the bundled mnist5k digits."""
    from dgl_capsules.data import get_dataset

    splits = get_dataset("mnist5k")
    eval_images = torch.cat([splits.val.images, splits.test.images])
    return splits.train.images, splits.train.labels, eval_images


def work(trainer):
    """Per epoch: (counted GFLOP, routing GFLOP from the equations or None) of ``trainer``'s model."""
    steps = math.ceil(TRAIN_DIGITS / trainer.config.batch_size)
    with prof.RoutingProbe(trainer.pkg) as probe:
        train = prof.count_flops(trainer.train_step_only)
    train_routing = probe.flops()
    with prof.RoutingProbe(trainer.pkg) as probe:
        evaluation = prof.count_flops(lambda: trainer.evaluate(1))
    eval_routing = probe.flops()
    scale = EVAL_DIGITS / EVAL_BATCH
    counted = (steps * train + scale * evaluation) / 1e9
    if train_routing is None or eval_routing is None:
        return counted, None
    return counted, (steps * 3 * train_routing + scale * eval_routing) / 1e9


def profile_steps(trainer, n_steps):
    """(ms per step of every breakdown category, ms per profiled step)."""
    handles = prof.mark_modules(trainer.net)
    try:
        with prof.RoutingProbe(trainer.pkg), torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU]) as p:
            t0 = time.perf_counter()
            for _ in range(n_steps):
                trainer.step(_profile_clock)
            wall = (time.perf_counter() - t0) / n_steps
    finally:
        for h in handles:
            h.remove()
    return prof.breakdown(p.events(), n_steps), wall * 1e3


def measure(trainers, rounds, steps, eval_batches, warmup, log=print):
    """Median over ``rounds`` of the step time, the evaluation time per digit and the phases of every
    trainer, and of the matmul rate; the rounds alternate the trainers and the matmul."""
    for label, t in trainers.items():
        for _ in range(warmup):
            t.step(_Clock())
        t.evaluate(1)
    step_s = {k: [] for k in trainers}
    cpu_s = {k: [] for k in trainers}
    eval_s = {k: [] for k in trainers}
    phases = {k: [] for k in trainers}
    rates = []
    for r in range(rounds):
        rates.append(matmul_rate())
        for label, t in trainers.items():
            clock = _Clock()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                t.step(clock)
            step_s[label].append((time.perf_counter() - t0) / steps)
            cpu_s[label].append((time.process_time() - c0) / steps)
            phases[label].append({k: v / steps for k, v in clock.seconds.items()})
            t0 = time.perf_counter()
            t.evaluate(eval_batches)
            eval_s[label].append((time.perf_counter() - t0) / (eval_batches * EVAL_BATCH))
        log(f"  round {r + 1}/{rounds}: matmul {rates[-1][0]:.1f} GFLOP/s; step ms "
            + ", ".join(f"{k} {v[-1] * 1e3:.0f}" for k, v in step_s.items()), flush=True)
    med = statistics.median
    return ({k: med(v) for k, v in step_s.items()}, {k: med(v) for k, v in eval_s.items()},
            {k: {p: med(ph.get(p, 0.0) for ph in v) for p in v[0]} for k, v in phases.items()},
            (med(r[0] for r in rates), med(r[1] for r in rates)),
            dict(wall=step_s, cpu=cpu_s))


def _set_threads(n):
    """The same number of OpenMP threads for torch and DGL (they link separate runtimes)."""
    from dgl.utils import set_num_threads

    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    set_num_threads(n)


def _reuse_freed_memory():
    """Freed memory kept for reuse, as the ``dgl-capsules`` command runs (wherever the package keeps it)."""
    for module in ("dgl_capsules.train", "dgl_capsules.runtime", "dgl_capsules._runtime"):
        try:
            fn = getattr(importlib.import_module(module), "reuse_freed_memory", None)
        except ImportError:
            continue
        if fn is not None:
            return bool(fn())
    return False


def run(quick=False, threads=None, steps=None, models=None, compare=None, rounds=None, profile=None,
        log=print, details=None):
    """Rows of the throughput table (one per model and tree); ``details`` (a dict) receives the breakdown."""
    threads = threads or torch.get_num_threads()
    _set_threads(threads)
    reuse = _reuse_freed_memory()
    steps = steps or (3 if quick else 20)
    rounds = rounds or (1 if quick else 3)
    profile = profile if profile is not None else (2 if quick else 5)
    eval_batches = 1 if quick else 4
    trees = [(dgl_capsules, "this tree")]
    if compare:
        pkg, sha = load_tree(compare)
        trees.append((pkg, sha))
    images, labels, eval_images = _mnist()
    wanted = list(models or MODELS)
    trainers, missing = {}, []
    for pkg, tag in trees:
        have = recipes(pkg)
        for name in wanted:
            if name not in have:
                if pkg is dgl_capsules:
                    missing.append(name)
                continue
            trainers[(name, tag)] = Trainer(pkg, have[name], images, labels, eval_images)
    for name in missing:
        log(f"  {name}: not available (no model {EFFICIENT!r} registered in dgl_capsules.models)"
            if name == "efficient" else f"  {name}: not available")
    log(f"  {threads} thread(s), freed memory reused: {reuse}; steps {steps} x rounds {rounds}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    labelled = {f"{n}@{t}" if t != "this tree" else n: tr for (n, t), tr in trainers.items()}
    step_s, eval_s, phase_s, rate, per_round = measure(labelled, rounds, steps, eval_batches, 1 if quick else 2, log)
    if details is not None:
        details["phases"] = {k: {p: v * 1e3 for p, v in ph.items()} for k, ph in phase_s.items()}
    flops = {key: work(trainer) for key, trainer in trainers.items()}
    rows = []
    for (name, tag), trainer in trainers.items():
        label = f"{name}@{tag}" if tag != "this tree" else name
        n_steps = math.ceil(TRAIN_DIGITS / trainer.config.batch_size)
        epoch = n_steps * step_s[label] + EVAL_DIGITS * eval_s[label]
        gflop, routing = flops[(name, tag)]
        row = {"model": name, "tree": tag, "batch": trainer.config.batch_size, "step ms": step_s[label] * 1e3,
               "eval ms/256": eval_s[label] * EVAL_BATCH * 1e3, "epoch s": epoch,
               "GFLOP/epoch": gflop, "routing GFLOP": routing if routing is not None else "n/a",
               "GFLOP/s": gflop / epoch if gflop else None, "matmul GFLOP/s": rate[0],
               "x matmul": gflop / epoch / rate[0] if gflop else None}
        cpu = statistics.median(per_round["cpu"][label])
        row["step CPU ms"] = cpu * 1e3
        cpu_epoch = n_steps * cpu + EVAL_DIGITS * eval_s[label] * cpu / step_s[label]  # evaluation at the step's CPU share
        row["x matmul (CPU)"] = gflop / cpu_epoch / rate[1] if gflop else None
        if compare:  # the ratio of every round, then the median: the load moves both alike
            for clock, key in (("wall", "time x this tree"), ("cpu", "CPU x this tree")):
                mine = per_round[clock].get(name)
                row[key] = statistics.median(a / b for a, b in zip(per_round[clock][label], mine)) if mine else None
        rows.append(row)
    for name in missing:
        rows.append({"model": name, "tree": "this tree", "step ms": "not available"})
    if profile:
        for (name, tag), trainer in trainers.items():
            label = f"{name}@{tag}" if tag != "this tree" else name
            ms, wall = profile_steps(trainer, profile)
            if details is not None:
                details.setdefault("profile", {})[label] = dict(
                    ms, **{"profiled step ms": wall, "step ms": step_s[label] * 1e3})
            row = next(r for r in rows if r["model"] == name and r["tree"] == tag)
            total = sum(ms.values()) - ms["outside aten"]
            for group, keys in (("conv %", ("conv fwd", "conv bwd")), ("routing %", ("routing fwd", "routing bwd")),
                                ("linear %", ("linear fwd", "linear bwd")), ("other fwd+bwd %", ("other fwd", "other bwd")),
                                ("data+augment %", ("data", "augment")),
                                ("loss+opt+books %", ("loss", "optimiser", "bookkeeping"))):
                row[group] = 100 * sum(ms[k] for k in keys) / total
            row["outside aten %"] = 100 * ms["outside aten"] / total
    return rows


def _print_table(rows, keys=None):
    keys = keys or list(dict.fromkeys(k for r in rows for k in r))
    fmt = (lambda v: f"{v:.3g}" if isinstance(v, float) and abs(v) < 100 else
           f"{v:.0f}" if isinstance(v, float) else "" if v is None else str(v))
    print("| " + " | ".join(keys) + " |")
    print("|" + "|".join("---" for _ in keys) + "|")
    for r in rows:
        print("| " + " | ".join(fmt(r.get(k)) for k in keys) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: torch's)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per model per round (default 20, quick 3)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3, quick 1)")
    p.add_argument("--profile", type=int, default=None, help="profiled steps per model (default 5, quick 2; 0: none)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=None, help="default: all")
    p.add_argument("--compare", default=None, metavar="REV", help="also run the package at git revision REV")
    p.add_argument("--quick", action="store_true", help="about a minute: 3 steps, 1 round, 2 profiled steps")
    args = p.parse_args(argv)
    cmd = "python bench/bench_epoch.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"command: {cmd.strip()}")
    details = {}
    rows = run(args.quick, args.threads, args.steps, args.models, args.compare, args.rounds, args.profile,
               details=details)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    _print_table(rows)
    print("\nms per step by phase (wall clock around each phase, no profiler; medians over the rounds):")
    _print_table([dict(model=m, **v) for m, v in details["phases"].items()])
    if details.get("profile"):
        print("\nms per profiled step (torch.profiler; see the module docstring):")
        profile = details["profile"]
        keys = ["profiled step ms", "step ms"] + [k for k in next(iter(profile.values())) if k not in
                                                  ("profiled step ms", "step ms")]
        _print_table([dict(model=m, **v) for m, v in profile.items()], ["model"] + keys)


if __name__ == "__main__":
    main()
