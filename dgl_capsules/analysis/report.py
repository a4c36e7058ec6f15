"""One call for the whole analysis of a trained model: ``analysis.json`` and its pictures in a folder."""
import json
import os

from .curves import TRANSFORMS, robustness
from .plots import plot_dead, plot_entropy, plot_robustness, plot_swap
from .summary import analyze
from .swap import routing_swap

__all__ = ["write_analysis"]


def write_analysis(model, data, out, *, label=None, source=None, data_name=None, batch_size=128, max_samples=None,
                   iterations=None, seed=0, transforms=(), compare=None, progress=True):
    """Analyse ``model`` on ``data`` and write ``out/analysis.json`` with pictures (what ``dgl-capsules analyze``
    does).

    ``analysis.json`` holds ``source``, ``data``, ``analysis`` (:func:`~dgl_capsules.analysis.analyze`),
    ``swap`` (:func:`~dgl_capsules.analysis.routing_swap`) and, with ``transforms``, ``robustness`` (a
    :func:`~dgl_capsules.analysis.robustness` dict per transformation, ``model`` and every ``compare`` model
    on the same axes). The pictures are ``entropy.png``, ``swap.png``, ``dead.png`` and ``robustness.png``.

    Parameters
    ----------
    model : torch.nn.Module
        A trained model with routed layers.
    data : ImageDataset
        Its test set.
    out : str
        The folder (made if missing).
    label : str, optional
        The model's name on the robustness curves (default: its class name).
    source, data_name : str, optional
        Where the model and the data come from, recorded in the JSON.
    batch_size, max_samples, seed :
        As in :func:`~dgl_capsules.analysis.analyze` and :func:`~dgl_capsules.analysis.routing_swap`.
    iterations : sequence of int, optional
        The iteration counts of the swap.
    transforms : sequence of str
        Names of :data:`~dgl_capsules.analysis.TRANSFORMS` to draw robustness curves for (none by default).
    compare : dict, optional
        ``{label: model}`` drawn with ``model`` on the robustness curves.
    progress : bool

    Returns
    -------
    dict
        ``{"analysis": path of analysis.json, "entropy": path, ...}`` for every file written.

    Raises
    ------
    ValueError
        For a ``transforms`` name that is unknown, ``compare`` without ``transforms``, and as the functions
        it calls; all before any work.
    """
    transforms = tuple(transforms)
    for transform in transforms:
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}; got {transform!r}")
    if compare and not transforms:
        raise ValueError("compare: other models are drawn on the robustness curves; name transforms to draw")
    if iterations is not None and any(k < 1 for k in iterations):
        raise ValueError(f"iterations must be integers >= 1; got {list(iterations)}")
    result = dict(source=source, data=data_name)
    result["analysis"] = analyze(model, data, batch_size=batch_size, max_samples=max_samples, progress=progress)
    result["swap"] = routing_swap(model, data, iterations=iterations, batch_size=batch_size,
                                  max_samples=max_samples, seed=seed, progress=progress)
    pictures = dict(entropy=plot_entropy(result["analysis"]), swap=plot_swap(result["swap"]),
                    dead=plot_dead(result["analysis"]))
    if transforms:
        models = {label or type(model).__name__: model, **(compare or {})}
        result["robustness"] = {t: robustness(models, data, t, batch_size=batch_size, max_samples=max_samples,
                                              progress=progress) for t in transforms}
        pictures["robustness"] = plot_robustness(result["robustness"])
    os.makedirs(out, exist_ok=True)
    paths = dict(analysis=os.path.join(out, "analysis.json"))
    with open(paths["analysis"], "w") as f:
        json.dump(result, f, indent=1, allow_nan=False)
    for name, fig in pictures.items():
        paths[name] = os.path.join(out, f"{name}.png")
        fig.savefig(paths[name], dpi=100)
    return paths
