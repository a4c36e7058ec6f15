"""What the commands share: the argument parser's classes and where a command gets a trained model
(``--checkpoint``, or ``--model`` with ``--weights``, and ``--compare``'s list of models)."""
import argparse
import os

__all__ = []


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other failure of the command."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return text + " (required; no default)"
        if isinstance(action, argparse._StoreTrueAction):
            return text + " (default: off)"
        return text + " (default: %(default)s)"


def _trained_model(args):
    """``(model, its input shape, the data spec it was trained on, the model in the user's words)`` from
    ``--checkpoint`` or ``--model [--preset] --weights``."""
    if (args.checkpoint is None) == (args.weights is None):
        raise ValueError("checkpoint: give either --checkpoint (a run's model.pt) or --model with --weights "
                         "(shipped weights)")
    if args.weights is not None:
        from .models import get_model, get_weights

        if args.model is None:
            raise ValueError("model: --weights needs --model (the model whose shipped weights to load)")
        entry = get_weights(args.model, args.preset, args.weights)
        return (get_model(args.model, args.preset, weights=args.weights), entry.shape, entry.data,
                f"the {entry.model} {entry.preset} model with the shipped {entry.name!r} weights")
    from .train import load_model

    model, ckpt = load_model(args.checkpoint)
    return model, ckpt["shape"], ckpt["config"]["data"], f"the {ckpt['config']['model']} model in {args.checkpoint}"


def _add_model_source(p):
    from .models import list_weights

    shipped = ", ".join(f"--model {w.model} --weights {w.name}" for w in list_weights()) or "none yet"
    p.add_argument("--checkpoint", default=None,
                   help="OUT/model.pt or OUT/checkpoint.pt of a run (default: none; or --model with --weights)")
    p.add_argument("--model", default=None, help="with --weights: a model with shipped weights (default: none)")
    p.add_argument("--preset", default=None, help="with --weights: the preset (default: the weights' own)")
    p.add_argument("--weights", default=None,
                   help=f"shipped trained weights instead of --checkpoint: {shipped} (default: none)")


def _compare_models(items):
    """``{label: model}`` from ``--compare LABEL=CHECKPOINT``, ``LABEL=MODEL:WEIGHTS`` (shipped weights, e.g.
    ``matrixcaps:mnist``) or ``CHECKPOINT`` (the label is its run folder)."""
    from .models import get_model, list_weights
    from .train import load_model

    shipped = {f"{w.model}:{w.name}": w for w in list_weights()}
    out = {}
    for item in items or ():
        label, eq, path = item.partition("=")
        label, path = (label, path) if eq else (os.path.basename(os.path.dirname(os.path.abspath(item))), item)
        if not label or not path:
            raise ValueError(f"compare takes LABEL=CHECKPOINT, LABEL=MODEL:WEIGHTS or CHECKPOINT; got {item!r}")
        w = None if os.path.isfile(path) else shipped.get(path)
        if w is None and not os.path.isfile(path):
            names = ", ".join(sorted(shipped))
            raise FileNotFoundError(f"compare {path!r}: no such file, nor shipped weights (one of {names})")
        out[label] = get_model(w.model, w.preset, weights=w.name) if w else load_model(path)[0]
    return out
