"""The dgl-capsules command (also python -m dgl_capsules).

demo trains the small CapsNet on the bundled MNIST digits and draws its routing;
train / evaluate / visualize are the pieces it is made of; reproduce runs a
named table of experiments; route-demo routes a generated planted-cluster
problem in seconds.
Data-parallel training: torchrun --nproc_per_node=N -m dgl_capsules train ...
"""
# The cli*.py modules are the only ones that know command-line flags: the library raises ValueError /
# TypeError naming Python parameters, and main() rewrites those names with FLAGS.
import math
import os
import shlex
import signal
import sys
import threading
import warnings

from .clianalyze import _analyze_parser
from .cliflags import FLAGS, _error_line, parse_settings
from .cliparts import _add_model_source, _Formatter, _Parser, _trained_model

__all__ = ["main", "run", "build_parser", "parse_settings", "FLAGS"]


# ---------------------------------------------------------------------------- commands


def _route_demo(args):
    """Route a planted-cluster problem and print the coupling entropy per iteration."""
    from .data import planted_clusters
    from .functional import coupling_entropy
    from .routing import dynamic_routing

    for name, value in (("n_in", args.children), ("n_out", args.parents), ("batch", args.batch),
                        ("n_iters", args.iters)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value}")
    p = planted_clusters(n_in=args.children, n_out=args.parents, dim=16, batch=args.batch, seed=args.seed)
    r = dynamic_routing(p.graph, p.votes, n_iters=args.iters, return_trace=True)
    src, dst = p.graph.edges()
    print(f"dynamic routing of {args.children} children to {args.parents} parents "
          f"(16-D votes, batch {args.batch}), planted clusters")
    print(f"uniform coupling entropy log({args.parents}) = {math.log(args.parents):.4f} nats")
    print("iteration  mean entropy  children on their planted parent")
    for it, c in enumerate(r.trace, 1):
        h = coupling_entropy(p.graph, c).mean().item()
        own = c[p.assignment[src] == dst]  # (n_in, B)
        print(f"{it:9d}  {h:12.4f}  {own.mean().item():8.1%} of their vote mass")
    return 0


def _config(args):
    from .train import TrainConfig

    settings = parse_settings(args.set)
    if args.width is not None:
        settings["width"] = args.width
    return TrainConfig(model=args.model, preset=args.preset, settings=settings, data=args.data,
                       image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       lr_decay=args.lr_decay, lr_decay_steps=args.lr_decay_steps, lr_floor=args.lr_floor,
                       shift=args.shift, rotate=args.rotate, scale=args.scale, augment=args.augment, ema=args.ema, seed=args.seed, trace_routing=args.trace_routing,
                       eval_each_epoch=tuple(args.eval_each_epoch))


def _train(args):
    from .train import train

    train(_config(args), args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def _evaluate(args):
    from .evaluation import data_for_model, eval_set, evaluate
    from .files import write_json

    if args.json:  # fail before the work, not after it
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    model, shape, trained_on, label = _trained_model(args)
    data = args.data or trained_on
    sized, native = data_for_model(data, shape, label)
    sets = {}  # every set is made (and checked) before the first is scored
    for on in dict.fromkeys(args.on):
        own = on == "test" or (on == "multi" and sized.test.labels.dim() == 2)
        sets[on] = eval_set(on, sized if own else native, image_size=shape.get("image_size"), seed=args.seed)
    results = {}
    for on, dataset in sets.items():
        results[on] = evaluate(model, dataset)
        print(f"{on:8s} accuracy {results[on]:.4f} on {len(dataset)} images of {data}")
    if args.json:
        source = args.checkpoint or f"{args.model} {args.preset or ''} weights {args.weights}".replace("  ", " ")
        write_json(args.json, dict(checkpoint=source, data=data, accuracy=results))
    return 0


def _print_paths(paths, prefix=""):
    """Print every file path in a (nested) dict of results, one per line, labelled by its keys."""
    for key, value in paths.items():
        if isinstance(value, dict):
            _print_paths(value, f"{prefix}{key} ")
        elif isinstance(value, str) and os.path.isfile(value):
            print(f"{prefix}{key}: {value}")


def _print_drawing(drawn, prefix=""):
    """The files of :func:`~dgl_capsules.viz.visualize_model` and what the model predicted."""
    _print_paths(drawn.get("paths", {}), prefix)
    summary = drawn.get("summary", {})
    if "summary_path" in drawn:
        print(f"{prefix}summary: {drawn['summary_path']} (predicted {summary.get('predicted')}, "
              f"true {summary.get('true')})")


def _draw_digit(model, shape, trained_on, label, index, out, data=None):
    """Routing pictures of test image ``index`` through ``model`` (viz.visualize_model)."""
    from .evaluation import data_for_model
    from .viz import visualize_model

    test = data_for_model(data or trained_on, shape, label)[0].test
    if not 0 <= index < len(test):
        raise ValueError(f"index must be in [0, {len(test)}); got {index}")
    x, y = test[index]
    return visualize_model(model, x.unsqueeze(0), y.unsqueeze(0), out)


def _visualize(args):
    if args.over_training:
        from .viz import animate_over_training

        if args.checkpoint is None:
            raise ValueError("checkpoint: --over-training needs --checkpoint, a run trained with --trace-routing")
        if not os.path.isfile(args.checkpoint):
            raise FileNotFoundError(f"path {args.checkpoint!r}: no such file")
        _print_paths(animate_over_training(os.path.dirname(os.path.abspath(args.checkpoint)), args.out))
        return 0
    _print_drawing(_draw_digit(*_trained_model(args), args.index, args.out, args.data))
    return 0


def _progress_text(state, name, slug, seed):
    """One line on an unfinished run (:func:`~dgl_capsules.reproduce.results.run_progress`)."""
    if state["error"]:
        return f"its checkpoint cannot be read ({state['error']}); delete it to train the run from the start"
    text = f"{state['epoch']} of {state['epochs']} epochs done"
    if state["batch"] is not None:
        text += f", stopped after batch {state['batch']} of {state['batches']} of epoch {state['epoch'] + 1}"
    if state["running"]:
        return text + f", training now (PID {state['running']})"
    return text + f"; resume: dgl-capsules reproduce {name} --rows {slug} --seeds {seed}"


def _print_experiments():
    """``reproduce --list``: every experiment with its title, its rows' finished / planned seeds (from
    ``results/NAME/*.json``), where unfinished runs stand (their checkpoints) and its estimated hours."""
    from .reproduce import DEFAULT_ROOT, experiment, list_experiments, load_results
    from .reproduce.results import run_progress

    for name in list_experiments():
        exp = experiment(name)
        out = os.path.join(DEFAULT_ROOT, name)
        results = load_results(name)
        trained = [r for r in exp.rows if r.same_as is None]
        done = sum(s in results.get(r.label, {}) for r in trained for s in r.seeds)
        hours = "not estimated" if exp.hours is None else f"estimated {exp.hours:g} h"
        print(f"{name}: {exp.title}")
        print(f"  {done} of {sum(len(r.seeds) for r in trained)} planned runs finished; {hours}")
        width = max(len(r.label) for r in exp.rows)
        for r in exp.rows:
            if r.same_as is not None:
                print(f"    {r.label:{width}}  = {r.same_as} (not trained)")
                continue
            finished = sorted(results.get(r.label, {}))
            todo = [s for s in r.seeds if s not in finished]
            extra = [s for s in finished if s not in r.seeds]
            line = f"    {r.label:{width}}  {len(r.seeds) - len(todo)} of {len(r.seeds)} seeds finished"
            line += f"; to run: {', '.join(map(str, todo))}" if todo else ""
            print(line + (f"; also finished: {', '.join(map(str, extra))}" if extra else ""))
            for seed in todo:
                state = run_progress(out, r, seed)
                if state is not None:
                    print(f"    {'':{width}}  seed {seed}: {_progress_text(state, name, r.slug, seed)}")


def _reproduce(args):
    from .reproduce import list_experiments, reproduce

    if args.list:
        _print_experiments()
        return 0
    if args.name is None:
        raise ValueError(f"name: give an experiment (one of {', '.join(list_experiments())}) or --list")
    path = reproduce(args.name, seeds=args.seeds, out=args.out, rows=args.rows, progress=not args.quiet)
    print(f"table: {path}")
    return 0


def _data(args):
    """``data --list``: every data spec ``--data`` takes, with what it is."""
    import shutil
    import textwrap

    from .data import list_datasets

    specs = list_datasets()
    width = max(len(spec) for spec, _ in specs)
    columns = max(shutil.get_terminal_size((100, 24)).columns, 60)
    for spec, text in specs:
        lines = textwrap.wrap(text, columns - width - 2) or [""]
        print(f"{spec:{width}}  {lines[0]}")
        for line in lines[1:]:
            print(f"{'':{width}}  {line}")
    print("train on one with: dgl-capsules train --data SPEC (in Python: dgl_capsules.data.get_dataset(SPEC))")
    return 0


def _demo(args):
    from .data import get_dataset
    from .train import TrainConfig, load_model, train
    from .viz import animate_over_training, reconstruction_grid

    print("dgl-capsules demo: a small CapsNet learns the 5,000 bundled MNIST digits "
          "(train 3,500 / val 500 / test 1,000)")
    config = TrainConfig(model="capsnet", preset="small", data="mnist5k", epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay,
                         lr_decay_steps=args.lr_decay_steps, lr_floor=args.lr_floor, shift=args.shift,
                         seed=args.seed, trace_routing=args.trace_routing)
    metrics = train(config, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    model_path = os.path.join(args.out, "model.pt")
    model, ckpt = load_model(model_path)
    grid = reconstruction_grid(model, get_dataset("mnist5k").test, os.path.join(args.out, "reconstructions.png"))
    print(f"reconstructions: {grid}")
    _print_drawing(_draw_digit(model, ckpt["shape"], "mnist5k", f"the capsnet model in {model_path}", args.index,
                               os.path.join(args.out, "routing")), "routing ")
    if args.trace_routing:
        _print_paths(animate_over_training(args.out, os.path.join(args.out, "over_training")), "over training ")
    print(f"test accuracy {metrics['test_accuracy']:.2%} after {metrics['epochs']} epochs, "
          f"{metrics['seconds']:.0f}s of training")
    return 0


# ---------------------------------------------------------------------------- parser


def _add_training_options(p, epochs, lr, lr_decay, shift, out):
    p.add_argument("--epochs", type=int, default=epochs, help="number of training epochs")
    p.add_argument("--batch-size", type=int, default=64, help="images per optimiser step (per process)")
    p.add_argument("--lr", type=float, default=lr, help="Adam learning rate")
    p.add_argument("--lr-decay", type=float, default=lr_decay,
                   help="learning rate factor per epoch, or per --lr-decay-steps steps (> 0)")
    p.add_argument("--lr-decay-steps", type=int, default=0,
                   help="0: decay once per epoch; N > 0: decay smoothly, by --lr-decay every N steps")
    p.add_argument("--lr-floor", type=float, default=0.0, help="the learning rate never falls below this")
    p.add_argument("--shift", type=int, default=shift, help="random shifts of up to this many pixels (>= 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and augmentation")
    p.add_argument("--out", default=out, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="replace the run in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _train_parser(sub):
    from .data import list_augmentations, list_datasets
    from .models import list_models

    tr = sub.add_parser("train", formatter_class=_Formatter,
                        help="train a model; writes OUT/checkpoint.pt, model.pt, metrics.json",
                        description="Train a model, select it on the validation split, test it.")
    tr.add_argument("--model", default="capsnet", help=f"one of {', '.join(list_models())}")
    tr.add_argument("--preset", default="small", help="named settings of the model, e.g. tiny, small, paper")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="replace one setting of the preset, e.g. --set n_iters=2 (repeatable; default: none)")
    tr.add_argument("--width", type=float, default=None,
                    help="CNN width multiplier, the same as --set width=W (default: the width whose parameter "
                         "count matches the CapsNet of the preset)")
    datasets = "; ".join(f"{spec} ({text})" if text else spec for spec, text in list_datasets())
    tr.add_argument("--data", default="mnist5k", help=f"data set: {datasets}")
    tr.add_argument("--image-size", type=int, default=None,
                    help="pad the images to this side, e.g. 40 (default: the images' own size)")
    _add_training_options(tr, epochs=10, lr=1e-3, lr_decay=1.0, shift=0, out="runs/train")
    tr.add_argument("--rotate", type=float, default=0.0, help="random rotations of up to this many degrees")
    tr.add_argument("--scale", type=float, default=0.0, help="random scalings in [1 - SCALE, 1 + SCALE]")
    tr.add_argument("--augment", default="", help=f"a named augmentation of training batches: "
                                                  f"{', '.join(list_augmentations()) or 'none registered'} "
                                                  f"(default: none)")
    tr.add_argument("--ema", type=float, default=0.0,
                    help="validate and keep a moving average of the weights with this decay per step "
                         "(e.g. 0.995; 0: the weights themselves)")
    tr.add_argument("--trace-routing", type=int, default=0, metavar="N",
                    help="record the routing of N validation images after every epoch in OUT/routing_trace "
                         "(for visualize --over-training; 0: off)")
    tr.add_argument("--eval-each-epoch", nargs="+", default=[], metavar="NAME",
                    help="also score these test sets after every epoch, e.g. test novel (with --data viewpoints); "
                         "the curve records NAME_accuracy (default: none)")
    tr.set_defaults(func=_train)


def build_parser():
    """The argument parser of ``dgl-capsules``."""
    parser = _Parser(prog="dgl-capsules", description=__doc__, formatter_class=_Formatter)
    parser.add_argument("--threads", type=int, default=None,
                        help="OpenMP threads per process for torch and DGL (default: OMP_NUM_THREADS if set, "
                             "else all cores, divided among the processes of torchrun)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", formatter_class=_Formatter,
                          help="train the small CapsNet on mnist5k and draw its routing (make demo)",
                          description="Train the small CapsNet on the bundled digits, then draw its routing, "
                                      "its reconstructions and how routing changed over training.")
    _add_training_options(demo, epochs=30, lr=2e-3, lr_decay=0.9, shift=2, out="runs/demo")
    demo.add_argument("--index", type=int, default=0, help="test digit whose routing is drawn")
    demo.add_argument("--trace-routing", type=int, default=8, metavar="N",
                      help="validation digits whose routing is recorded after every epoch")
    demo.set_defaults(func=_demo)

    rd = sub.add_parser("route-demo", formatter_class=_Formatter,
                        help="route a generated planted-cluster problem (seconds)",
                        description="Dynamic routing of a planted-cluster problem: entropy per iteration.")
    rd.add_argument("--children", type=int, default=1152, help="child capsules")
    rd.add_argument("--parents", type=int, default=10, help="parent capsules")
    rd.add_argument("--batch", type=int, default=8, help="problems routed at once")
    rd.add_argument("--iters", type=int, default=5, help="routing iterations")
    rd.add_argument("--seed", type=int, default=0, help="seed of the generated problem")
    rd.set_defaults(func=_route_demo)

    _train_parser(sub)

    ev = sub.add_parser("evaluate", formatter_class=_Formatter,
                        help="accuracy of a trained model on clean, affine or MultiMNIST test sets",
                        description="Accuracy of a trained model on test sets derived from its data.")
    _add_model_source(ev)
    ev.add_argument("--data", default=None, help="data spec (default: the one the model was trained on)")
    ev.add_argument("--on", nargs="+", default=["test"],
                    help="test sets: test, affine (40x40 affNIST-style), multi (36x36 MultiMNIST pairs) "
                         "(default: test)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the generated affine / multi sets")
    ev.add_argument("--json", default=None, help="also write the accuracies to this file (default: none)")
    ev.set_defaults(func=_evaluate)

    vi = sub.add_parser("visualize", formatter_class=_Formatter,
                        help="routing pictures of one test digit through a trained model",
                        description="Routing pictures of every routed layer for one test image, or "
                                    "(--over-training) how the routing changed during training.")
    _add_model_source(vi)
    vi.add_argument("--index", type=int, default=0, help="test image to route")
    vi.add_argument("--out", default="runs/visualize", help="directory of the pictures")
    vi.add_argument("--data", default=None, help="data spec (default: the one the model was trained on)")
    vi.add_argument("--over-training", action="store_true",
                    help="animate the routing recorded by train --trace-routing in the run of --checkpoint")
    vi.set_defaults(func=_visualize)
    _analyze_parser(sub)

    rp = sub.add_parser("reproduce", formatter_class=_Formatter,
                        help="train a named table of experiments (resumable) and write its table.md",
                        description="Train every run of a named experiment that has no result yet.")
    rp.add_argument("name", nargs="?", metavar="NAME", help="experiment name (see --list)")
    rp.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the experiment's own)")
    rp.add_argument("--out", default=None, help="results folder (default: results/NAME)")
    rp.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                    help="train only these rows (labels or slugs, e.g. 3-iterations-reconstruction; default: every row)")
    rp.add_argument("--list", action="store_true",
                    help="print every experiment: its title, its rows with their seeds finished (results/NAME/*.json) "
                         "and planned, its estimated hours")
    rp.add_argument("--quiet", action="store_true", help="no progress bars")
    rp.set_defaults(func=_reproduce)

    da = sub.add_parser("data", formatter_class=_Formatter, help="list the data sets --data takes",
                        description="The data sets of dgl_capsules.data.list_datasets(): the specs that "
                                    "train --data and get_dataset take, with what each is.")
    da.add_argument("--list", action="store_true", help="print the data sets (also what `data` alone does)")
    da.set_defaults(func=_data)
    return parser


def _resume_line(args, argv, checkpoint=None):
    """How to continue the command of ``argv`` after it stopped, in one clause (the exact command)."""
    if args.command == "reproduce":
        return f"resume with: {shlex.join(['dgl-capsules', *argv])}"
    out = getattr(args, "out", None)
    if args.command not in ("train", "demo") or out is None:
        return "nothing to resume"
    if checkpoint is None:
        checkpoint = os.path.join(out, "checkpoint.pt")
        if "--overwrite" in argv or not os.path.isfile(checkpoint):  # nothing of this run was saved
            return f"no checkpoint of this run; start again with: {shlex.join(['dgl-capsules', *argv])}"
    words = [a for a in argv if a != "--overwrite"]
    words += [] if "--resume" in words else ["--resume"]
    return f"checkpoint {checkpoint}; resume with: {shlex.join(['dgl-capsules', *words])}"


def _interrupted_line(e, args, argv):
    """The one line of a command stopped by Ctrl-C or SIGTERM."""
    from .interrupt import TrainingInterrupted

    if isinstance(e, TrainingInterrupted):
        what = f"stopped by {e.signal_name}{' ' + e.where if e.where else ''}"
        return f"{what}; {_resume_line(args, argv, e.checkpoint)}"
    return f"interrupted; {_resume_line(args, argv)}"


def _sigterm(signum, frame):
    from .interrupt import TrainingInterrupted

    raise TrainingInterrupted(signum, where="at once")


def _one_line_warning(prefix):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prefix}: warning: {message}", file=sys.stderr if file is None else file)

    return show


def _dispatch(parser, args, argv):
    """Run ``args.func``; every failure becomes one line on stderr and an exit code."""
    from .files import FolderInUseError
    from .interrupt import TrainingInterrupted
    from .tuning import set_threads

    prefix = f"{parser.prog} {args.command}"
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(prefix)
            set_threads(args.threads)
            return args.func(args)
    except (TrainingInterrupted, KeyboardInterrupt) as e:
        print(f"{prefix}: {_interrupted_line(e, args, argv)}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:  # a bad value: exit 2
        code = 2
        error = e
    except Exception as e:  # noqa: BLE001 - the run failed (non-finite loss, a folder in use, the disk): exit 1
        if os.environ.get("DGL_CAPSULES_TRACEBACK"):
            raise
        code = 1
        error = e
    try:
        settings = parse_settings(getattr(args, "set", ()))
    except ValueError:
        settings = {}
    line = _error_line(error, settings)
    if code == 1 and not isinstance(error, (FloatingPointError, OSError, FolderInUseError)):
        line = f"{type(error).__name__}: {line}"  # not a failure the library describes itself
    print(f"{prefix}: error: {line}", file=sys.stderr)
    return code


def main(argv=None):
    """Run the command; every failure is one line on stderr, no traceback.

    Exit codes: 0 done; 2 a bad value (the line names its flag); 1 the work
    failed (a non-finite loss, a folder in use by another run, a file that
    cannot be written); 130 / 143 stopped by Ctrl-C / SIGTERM (at the end of
    the current training step, with a checkpoint: the line gives the command
    that resumes). With ``DGL_CAPSULES_TRACEBACK=1`` an unexpected error shows
    its traceback.
    """
    import torch
    from dgl.utils import get_num_threads, set_num_threads

    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    before = torch.get_num_threads(), get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    on_term = signal.signal(signal.SIGTERM, _sigterm) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return _dispatch(parser, args, argv)
    finally:  # in-process callers (tests, notebooks) keep their own thread settings and handlers
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
        torch.set_num_threads(before[0])
        set_num_threads(before[1])
        if before[2] is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before[2]


def run(argv=None):
    """:func:`main` as a program (the ``dgl-capsules`` command, ``python -m dgl_capsules``): first
    :func:`~dgl_capsules.tuning.reuse_freed_memory` for the whole process, then the command."""
    from .tuning import reuse_freed_memory

    reuse_freed_memory()
    return main(argv)


if __name__ == "__main__":
    sys.exit(run())
