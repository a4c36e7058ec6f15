"""Command-line flags of ``dgl-capsules``: the library's parameter names -> flags, and one-line error text.

The library raises ValueError / TypeError naming Python parameters; the command
rewrites those names with :data:`FLAGS` (:func:`_error_line`).
"""
import json
import re

__all__ = ["FLAGS", "parse_settings"]

#: The Python parameter named in a library error -> the command-line flag that feeds it.
FLAGS = {
    "model": "--model", "preset": "--preset", "settings": "--set", "width": "--width", "data": "--data",
    "image_size": "--image-size", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
    "lr_decay": "--lr-decay", "lr_decay_steps": "--lr-decay-steps", "lr_floor": "--lr-floor", "shift": "--shift",
    "rotate": "--rotate", "scale": "--scale", "augment": "--augment", "ema": "--ema",
    "seed": "--seed", "trace_routing": "--trace-routing", "out": "--out", "resume": "--resume",
    "overwrite": "--overwrite", "path": "--checkpoint", "checkpoint": "--checkpoint", "on": "--on",
    "index": "--index", "weights": "--weights", "json": "--json", "n_in": "--children", "n_out": "--parents",
    "batch": "--batch",
    "n_iters": "--iters", "seeds": "--seeds", "name": "NAME", "threads": "--threads",
    "eval_each_epoch": "--eval-each-epoch",
}
_SWITCHES = {"--resume", "--overwrite"}  # flags without a value: "resume=True" reads "--resume"



def _extra_of(package):
    """The pip extra of dgl_capsules that installs the importable ``package`` (from the package metadata)."""
    from importlib import metadata

    try:
        requirements = metadata.requires("dgl_capsules") or []
    except metadata.PackageNotFoundError:
        return None
    aliases = {"sklearn": "scikit-learn"}  # import name -> distribution name, where they differ
    wanted = aliases.get(package, package).lower().replace("_", "-")
    for req in requirements:
        found = re.match(r"\s*([A-Za-z0-9_.-]+).*extra\s*==\s*['\"]([\w-]+)['\"]", req)
        if found and found.group(1).lower().replace("_", "-") == wanted:
            return found.group(2)
    return None


def _in_flags(message, settings=()):
    """A library error message in the command line's words: parameter names become flags.

    A message that starts with the name of a setting given with ``--set`` (the
    model's own check of its value) starts with ``--set NAME`` instead.
    """
    def flag_value(m):
        flag = FLAGS[m.group(1)]
        return flag if flag in _SWITCHES and m.group(2) == "True" else f"{flag} {m.group(2)}"

    names = "|".join(sorted(FLAGS, key=len, reverse=True))
    message = re.sub(rf"(?<![\w-])({names})=([^\s;,)]+)", flag_value, message)
    first = re.match(r"\w+", message)
    if first and first.group() in settings:
        return f"--set {message}"
    return re.sub(rf"^({names})(?=\W|$)", lambda m: FLAGS[m.group(1)], message)


def _error_line(e, settings=()):
    if isinstance(e, ImportError) and "pip install" not in str(e):
        name = getattr(e, "name", None) or str(e)
        extra = _extra_of(str(name).split(".")[0])
        hint = f"pip install 'dgl_capsules[{extra}]'" if extra else f"pip install {name}"
        return f"missing optional package {name!r} ({e}); install it with: {hint}"
    message = str(e).strip().splitlines()
    message = message[0] if message else type(e).__name__
    return _in_flags(message, settings)


def parse_settings(items):
    """``["stem_stride=1", "inverse_temperatures=[0.01, 0.02]"]`` -> ``{"stem_stride": 1, ...}`` (``--set``).

    Values are Python literals (numbers, lists, ``None``), or JSON (``NaN``, ``nan`` and
    ``inf`` read as floats, so that they reach the checks); anything else is kept as a string.

    Examples
    --------
    >>> parse_settings(["stem_stride=1", "step_scale=2e3", "inverse_temperatures=[0.01, 0.02]"])
    {'stem_stride': 1, 'step_scale': 2000.0, 'inverse_temperatures': [0.01, 0.02]}
    """
    import ast

    out = {}
    for item in items or ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE; got {item!r}")
        value = value.strip()
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            try:
                out[key.strip()] = json.loads(re.sub(r"\bnan\b", "NaN", re.sub(r"\binf\b", "Infinity", value)))
            except ValueError:
                out[key.strip()] = value
    return out
