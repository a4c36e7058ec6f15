"""The ``analyze`` command: what routing does in a trained model (:mod:`dgl_capsules.analysis` from the command
line)."""
import json

from .cliflags import FLAGS
from .cliparts import _add_model_source, _compare_models, _Formatter, _trained_model

__all__ = []

FLAGS.update(max_samples="--max-samples", iterations="--swap-iters", transform="--robustness",
             compare="--compare")


def _analyze(args):
    from .analysis import TRANSFORMS, write_analysis
    from .evaluation import data_for_model

    transforms = () if args.robustness is None else tuple(args.robustness or TRANSFORMS)
    if args.compare and not transforms:
        raise ValueError("compare: --compare draws other models on the robustness curves; add --robustness")
    compare = _compare_models(args.compare)  # every input is checked before the work
    model, shape, trained_on, described = _trained_model(args)
    data = args.data or trained_on
    source = args.checkpoint or f"{args.model} {args.preset or ''} weights {args.weights}".replace("  ", " ")
    paths = write_analysis(model, data_for_model(data, shape, described)[0].test, args.out, label=args.model, source=source,
                           data_name=data, batch_size=args.batch_size, max_samples=args.max_samples,
                           iterations=args.swap_iters, seed=args.seed, transforms=transforms, compare=compare,
                           progress=not args.quiet)
    for name, path in paths.items():
        print(f"{name}: {path}")
    with open(paths["analysis"]) as f:
        swap = json.load(f)["swap"]
    print(f"accuracy {swap['trained']['accuracy']:.4f} with its routing, {swap['uniform']['accuracy']:.4f} with "
          f"uniform couplings, {swap['random']['accuracy']:.4f} with random ones ({swap['samples']} images)")
    return 0


def _analyze_parser(sub):
    an = sub.add_parser("analyze", formatter_class=_Formatter,
                        help="what routing does in a trained model: entropy, static index, dead capsules, "
                             "routing swaps, robustness",
                        description="Measure every routed layer of a trained model on a test set and write "
                                    "OUT/analysis.json with pictures (entropy.png, swap.png, dead.png).")
    _add_model_source(an)
    an.add_argument("--data", default=None, help="data spec (default: the one the model was trained on)")
    an.add_argument("--out", required=True, help="directory of analysis.json and the pictures")
    an.add_argument("--max-samples", type=int, default=None, help="analyse only the first N test images "
                                                                   "(default: all)")
    an.add_argument("--batch-size", type=int, default=128, help="images per batch")
    an.add_argument("--swap-iters", type=int, nargs="+", default=None, metavar="N",
                    help="iteration counts to swap in (default: 1 to two more than trained)")
    an.add_argument("--seed", type=int, default=0, help="seed of the random couplings")
    an.add_argument("--robustness", nargs="*", default=None, metavar="TRANSFORM",
                    help="also draw accuracy against rotation, shear, scale, translation (all four when given "
                         "without names; default: off)")
    an.add_argument("--compare", action="append", default=[], metavar="LABEL=CHECKPOINT",
                    help="with --robustness: another trained model on the same axes, a checkpoint or shipped "
                         "weights as MODEL:WEIGHTS, e.g. MatrixCapsNet=matrixcaps:mnist (repeatable; default: none)")
    an.add_argument("--quiet", action="store_true", help="no progress bars")
    an.set_defaults(func=_analyze)
