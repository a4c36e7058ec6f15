"""Pictures of a routing analysis: entropy distributions, routing-swap bars, dead-capsule curves, robustness curves.

Every function takes the JSON-ready dicts of :func:`~dgl_capsules.analysis.analyze`,
:func:`~dgl_capsules.analysis.routing_swap` or
:func:`~dgl_capsules.analysis.robustness` (so pictures can be redrawn from a
saved ``analysis.json``) and returns the figure it draws. Given a path, it
draws on a bare :class:`matplotlib.figure.Figure` (no display and no pyplot
state) and saves it there; without one, on a new pyplot figure (shown by a
notebook or ``plt.show()``, never closed here).
"""
import os

__all__ = ["plot_entropy", "plot_swap", "plot_dead", "plot_robustness"]


def _figure(n_panels, path, width=4.0, height=3.2):
    if path is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(width * n_panels, height), layout="constrained")
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    return fig, fig.subplots(1, n_panels, squeeze=False)[0]


def _save(fig, path):
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig


def _check(result, key, who):
    if not isinstance(result, dict) or key not in result:
        raise ValueError(f"result must be the dict of {who} (with {key!r}); got {type(result).__name__}")


def _documented(arg, source):
    """Append the Parameters, Returns and Raises that the pictures of one ``source`` dict share."""
    def document(fn):
        fn.__doc__ += f"""

    Parameters
    ----------
    {arg} : dict
        What :func:`~dgl_capsules.analysis.{source}` returns (or that dict read back from its JSON).
    path : str, optional
        Where to save the picture (``.png``, ``.pdf``, ``.svg``); nothing is saved without it.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``{arg}`` is not what :func:`~dgl_capsules.analysis.{source}` returns.
    """
        return fn
    return document


@_documented("result", "analyze")
def plot_entropy(result, path=None):
    """Per routed layer, the distribution of normalised coupling entropy at every routing iteration."""
    _check(result, "layers", "analyze")
    layers = result["layers"]
    fig, axes = _figure(max(1, len(layers)), path)
    for ax, layer in zip(axes, layers):
        for it in layer["iterations"]:
            ent = it["entropy"]
            if ent is None:
                continue
            counts = ent["histogram"]
            total = max(1, sum(counts))
            edges = [i / len(counts) for i in range(len(counts) + 1)]
            ax.stairs([c / total for c in counts], edges, label=f"iteration {it['iteration']} "
                                                                 f"(mean {ent['mean']:.3f})")
        ax.set_xlim(0, 1)
        ax.set_xlabel("normalised coupling entropy (1: uniform)")
        ax.set_ylabel("share of capsules x inputs")
        ax.set_title(f"{layer['name']}: {layer['label']}", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


@_documented("swap", "routing_swap")
def plot_swap(swap, path=None):
    """Accuracy with the trained routing and with every test-time swap, as bars."""
    _check(swap, "trained", "routing_swap")
    trained = set(swap.get("trained_iterations", {}).values())
    rows = [("trained", swap["trained"]), ("uniform", swap.get("uniform")), ("random", swap.get("random"))]
    rows += [(f"{k} iter." + (" (trained)" if int(k) in trained else ""), row)
             for k, row in sorted(swap.get("iterations", {}).items(), key=lambda kv: int(kv[0]))]
    rows = [(name, row) for name, row in rows if row and "accuracy" in row]
    fig, (ax,) = _figure(1, path, width=max(4.0, 0.8 * len(rows) + 1))
    names, accs = [n for n, _ in rows], [100 * r["accuracy"] for _, r in rows]
    bars = ax.bar(range(len(rows)), accs, color=["tab:blue"] + ["tab:orange"] * (len(rows) - 1))
    ax.bar_label(bars, labels=[f"{a:.2f}" for a in accs], fontsize=8)
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"routing swapped at test time ({swap['samples']} samples)", fontsize=10)
    return _save(fig, path)


@_documented("result", "analyze")
def plot_dead(result, path=None):
    """The share of capsules whose strength stays below a threshold on every input, against the threshold.

    Children (solid) and parents (dashed) of every routed layer, on a log axis."""
    _check(result, "layers", "analyze")
    fig, (ax,) = _figure(1, path, width=5.0)
    for k, layer in enumerate(result["layers"]):
        for side, style in (("children", "-"), ("parents", "--")):
            dead = layer["dead"][side]
            if dead is None:
                continue
            curve = dead["curve"]
            ax.plot(curve["thresholds"], curve["shares"], style, color=f"C{k}",
                    label=f"{layer['name']} {side} ({layer['strength']})")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("strength threshold")
    ax.set_ylabel("share of capsules below it on every input")
    ax.set_title("dead capsules", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


@_documented("curves", "robustness")
def plot_robustness(curves, path=None):
    """Accuracy against the size of each transformation, every model's curve on the same axes.

    ``curves`` is one ``{"transform": ..., "values": [...], "models": {name: [accuracy, ...]}}`` or a dict of
    them keyed by transformation (one panel each)."""
    panels = [curves] if isinstance(curves, dict) and "models" in curves else (
        list(curves.values()) if isinstance(curves, dict) else None)
    if not panels or any(not isinstance(p, dict) or "models" not in p for p in panels):
        raise ValueError("curves must be the dict of robustness (with 'transform', 'values' and 'models') or a "
                         f"dict of them; got {type(curves).__name__}")
    fig, axes = _figure(len(panels), path)
    for ax, panel in zip(axes, panels):
        order = sorted(range(len(panel["values"])), key=lambda i: panel["values"][i])
        for name, accs in panel["models"].items():
            ax.plot([panel["values"][i] for i in order], [100 * accs[i] for i in order], "o-", ms=3, label=name)
        ax.set_xlabel(f"{panel['transform']} ({panel.get('unit', '')})".replace(" ()", ""))
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 102)
        ax.set_title(f"robustness to {panel['transform']}", fontsize=10)
        ax.legend(fontsize=8)
    return _save(fig, path)
