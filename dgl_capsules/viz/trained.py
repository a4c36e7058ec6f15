"""Routing pictures of trained models: every routed layer, whatever its routing family, and its summary."""
import json
import os

import torch

from ..routing import get_routing, list_routings
from .entropy import entropy_curve
from .report import draw_bipartite, draw_entropy, draw_histogram, picture_options

__all__ = ["model_routing", "visualize_model", "predict"]


def model_routing(model, x):
    """Route a batch through ``model``: every routed layer with its trace, strengths and routing family.

    Any model whose ``routing(x)`` returns :class:`~dgl_capsules.models.RoutedLayer`
    entries works, whatever its layers and routing families: each entry names
    its family (a name of :func:`~dgl_capsules.routing.list_routings`) and
    carries the parent and child strengths (capsule lengths, mean vote
    lengths or activations). Runs without gradients.

    Parameters
    ----------
    model : torch.nn.Module
        A capsule model.
    x : torch.Tensor or list of torch.Tensor
        Images ``(B, C, H, W)``, or for a sequence model a list of ``B``
        sequences ``(n_k, d_emb)``.

    Returns
    -------
    list of RoutedLayer
        In the order of the layers.

    Raises
    ------
    ValueError
        If the model has no routed capsule layers, or a layer names no
        registered routing family.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> net = dc.models.CapsNet.from_preset("tiny")
    >>> (layer,) = model_routing(net, torch.rand(2, 1, 28, 28))
    >>> layer.name, layer.routing, tuple(layer.child_strength.shape)
    ('digitcaps', 'dynamic', (72, 2))
    """
    name = type(model).__name__
    if not callable(getattr(model, "routing", None)):
        raise ValueError(f"model: {name} has no routing(x) method, so no routed layers")
    with torch.no_grad():
        layers = list(model.routing(x))
    if not layers:
        raise ValueError(f"model: {name} has no routed capsule layers to draw")
    for layer in layers:
        if getattr(layer, "routing", None) not in list_routings():
            raise ValueError(
                f"model: layer {getattr(layer, 'name', '?')!r} of {name} names the routing "
                f"{getattr(layer, 'routing', None)!r}; expected one of {', '.join(list_routings())}"
            )
    return layers


def predict(model, x):
    """Predicted classes ``(B,)`` and class scores of a batch."""
    with torch.no_grad():
        out = model(x)
        scores = model.scores(out)
    return scores.argmax(1), scores


def _layer_summary(layer):
    """Entropies per iteration (mean and weighted mean over children, all samples) and the uniform level."""
    g, trace = layer.graph, layer.result.trace
    spec = get_routing(layer.routing)
    mean, _ = entropy_curve(g, trace)
    deg = g.out_degrees()
    deg = deg[deg > 0].double()
    out = dict(
        algorithm=layer.routing,
        label=spec.label,
        children=g.num_src_nodes(),
        parents=g.num_dst_nodes(),
        edges=g.num_edges(),
        iterations=len(trace),
        uniform_entropy=float(torch.log(deg).mean()),
        mean_entropy=[round(float(v), 5) for v in mean],
        weights=None if layer.child_strength is None else spec.strength_name,
        weighted_entropy=None,
    )
    if layer.child_strength is not None:
        wmean, _ = entropy_curve(g, trace, weights=layer.child_strength)
        out["weighted_entropy"] = [round(float(v), 5) for v in wmean]
    return out


def _class_labels(n, class_names, predicted=None):
    names = [str(c) for c in (class_names if class_names is not None else range(n))]
    if predicted is not None:
        names = [f"{s} ◀ predicted" if j == predicted else s for j, s in enumerate(names)]
    return names


def visualize_model(model, x, y, out_dir, class_names=None, fps=2, dpi=100):
    """Draw the routing of every routed layer of ``model`` on inputs ``x``; write ``summary.json``.

    For each layer (see :func:`model_routing`) it writes into
    ``out_dir/<layer>/`` the pictures of :func:`routing_report`, titled with
    the layer's routing family (its registered label): ``entropy.png`` (mean
    and weighted mean coupling entropy per iteration against the uniform
    level ``log #parents``, all samples of ``x``), ``histogram.gif`` and
    ``bipartite.gif`` (sample 0; the children that carry most, parents
    grouped by type on convolutional layers with many parents, classes named
    and the predicted one marked). ``out_dir/summary.json`` holds, per
    layer, its routing family, the mean and the weighted mean entropy per
    iteration, the uniform entropy, the predicted and the true class of
    sample 0, and for all samples their classes. Figures are made without
    pyplot; nothing is shown or left open.

    Parameters
    ----------
    model : torch.nn.Module
        A trained capsule model (put in eval mode here).
    x : torch.Tensor or list of torch.Tensor
        A batch of images ``(B, C, H, W)`` (one image ``(C, H, W)`` is
        allowed), or for a sequence model a list of sequences.
    y : int, torch.Tensor or None
        True classes ``(B,)`` (or one int), or None if unknown.
    out_dir : str or os.PathLike
        Created if missing.
    class_names : list of str, optional
        Names of the classes (parents of the last layer); class ids by default.
    fps, dpi : float
        Frame rate and resolution of the written files.

    Returns
    -------
    dict
        ``{"paths": {layer: {"entropy": path, "histogram": path, "bipartite": path}},
        "summary": the summary dict, "summary_path": path of summary.json}``.

    Raises
    ------
    ValueError
        If the model has no routed layers, ``y`` does not match the batch, or
        ``class_names`` does not name every class.

    Examples
    --------
    >>> import tempfile, torch, dgl_capsules as dc
    >>> net = dc.models.CapsNet.from_preset("tiny")
    >>> res = visualize_model(net, torch.rand(1, 1, 28, 28), 3, tempfile.mkdtemp(), dpi=30)
    >>> sorted(res["paths"]["digitcaps"]), res["summary"]["true"]
    (['bipartite', 'entropy', 'histogram'], 3)
    """
    if isinstance(x, torch.Tensor) and x.dim() == 3:
        x = x.unsqueeze(0)
    n = len(x)
    if y is not None:
        y = torch.as_tensor(y).reshape(-1)
        if len(y) != n:
            raise ValueError(f"y must hold one class per input (B = {n}); got {len(y)}")
    model.eval()
    predicted, _ = predict(model, x)
    layers = model_routing(model, x)
    n_classes = layers[-1].graph.num_dst_nodes()
    if class_names is not None and len(class_names) != n_classes:
        raise ValueError(f"class_names must name the {n_classes} classes; got {len(class_names)} names")
    # Pictures show sample 0; a ragged (sequence) layer is routed again on that input alone.
    one = model_routing(model, x[:1]) if any(layer.graph.batch_size > 1 for layer in layers) else layers
    pred0, true0 = int(predicted[0]), None if y is None else int(y[0])
    name_of = (lambda c: str(c) if class_names is None else str(class_names[c]))  # noqa: E731
    verdict = f"predicted {name_of(pred0)}" + ("" if true0 is None else f", true {name_of(true0)}")
    os.makedirs(out_dir, exist_ok=True)
    paths, summary_layers = {}, {}
    for layer, pic in zip(layers, one):
        head = f"{type(model).__name__} {layer.name} ({get_routing(layer.routing).label})"
        labels = _class_labels(n_classes, class_names, pred0) if pic is one[-1] else None
        paths[layer.name] = _draw_layer(os.path.join(out_dir, layer.name), layer, pic, head, verdict, labels, fps, dpi)
        summary_layers[layer.name] = dict(_layer_summary(layer), predicted=pred0, true=true0,
                                          files=paths[layer.name])
    summary = dict(
        model=type(model).__name__, samples=n, predicted=pred0, true=true0,
        predicted_all=[int(p) for p in predicted], true_all=None if y is None else [int(c) for c in y],
        class_names=None if class_names is None else [str(c) for c in class_names], layers=summary_layers,
    )
    summary_path = os.path.join(out_dir, "summary.json")
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2)
    return dict(paths=paths, summary=summary, summary_path=summary_path)


def _draw_layer(out_dir, layer, pic, head, verdict, class_labels, fps, dpi):
    """The three pictures of one routed layer: its entropy over every sample of ``layer``, and
    the histogram and bipartite animations of sample 0 (``pic``)."""
    os.makedirs(out_dir, exist_ok=True)
    what = get_routing(layer.routing).strength_name
    kw = picture_options(pic.graph, pic.child_strength, what, pic.parent_types)
    if class_labels is not None and pic.graph.num_dst_nodes() == len(class_labels):
        kw["parent_labels"] = class_labels
    return {
        "entropy": draw_entropy(os.path.join(out_dir, "entropy.png"), layer.graph, layer.result.trace, sample=None,
                                weights=layer.child_strength, weights_label=what, label="mean over children",
                                title=f"{head}: coupling entropy", figsize=(6.0, 4.0), dpi=dpi),
        "histogram": draw_histogram(os.path.join(out_dir, "histogram.gif"), pic.graph, pic.result.trace, sample=0,
                                    title=f"{layer.name} couplings", figsize=(6.0, 4.0), fps=fps, dpi=dpi),
        "bipartite": draw_bipartite(os.path.join(out_dir, "bipartite.gif"), pic.graph, pic.result.trace, sample=0,
                                    parent_strength=pic.parent_strength, title=f"{head}, {verdict}", fps=fps,
                                    dpi=dpi, **kw),
    }
