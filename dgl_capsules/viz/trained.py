"""Routing pictures of trained models: every routed layer, its summary, and its evolution over training."""
import glob
import json
import math
import os
from typing import NamedTuple, Optional

import torch

from ..files import load_file
from ..routing._common import RoutingResult
from .bipartite import AXES_RECT, animate_bipartite
from .entropy import entropy_curve, plot_entropy
from .histogram import animate_histogram
from .save import save_animation

__all__ = [
    "LayerRouting",
    "model_routing",
    "visualize_model",
    "reconstruction_grid",
    "record_routing",
    "animate_over_training",
]

_MAX_CHILDREN = 48  # children drawn one by one in visualize_model's bipartite pictures
_MAX_PARENTS = 40  # more parents than this are grouped by type where the graph knows types


class LayerRouting(NamedTuple):
    """One routed layer of a model, with what its children carry.

    Attributes
    ----------
    name : str
        The layer's name (``"digitcaps"``, ``"convcaps1"``, ...).
    graph : dgl.DGLGraph
        Its capsule graph.
    result : RoutingResult
        The routing of the batch, with its trace.
    parent_strength : torch.Tensor
        ``(N_dst, *)`` parent capsule lengths or activations (in [0, 1]).
    child_weights : torch.Tensor or None
        ``(N_src, *)`` what each child carries: its mean vote length (dynamic
        routing) or its activation (EM, Heinsen).
    weight_name : str or None
        ``"vote length"`` or ``"activation"``.
    algorithm : str
        ``"dynamic"``, ``"em"`` or ``"heinsen"``.
    child_types, parent_types : int or None
        Capsule types per grid position of a convolutional layer's children
        and parents (for grouping them in pictures).
    """

    name: str
    graph: object
    result: RoutingResult
    parent_strength: torch.Tensor
    child_weights: Optional[torch.Tensor]
    weight_name: Optional[str]
    algorithm: str
    child_types: Optional[int] = None
    parent_types: Optional[int] = None


def model_routing(model, x):
    """Route a batch through ``model`` and return every routed layer with its trace and child weights.

    Works for :class:`~dgl_capsules.models.CapsNet` (dynamic routing: child
    weights are the mean vote lengths :math:`\\|\\hat u_{j|i}\\|`),
    :class:`~dgl_capsules.models.MatrixCapsNet` (EM: child activations) and
    :class:`~dgl_capsules.models.SequenceCapsClassifier` (Heinsen: child
    activations :math:`\\sigma(a_i)`), and for any model whose ``routing(x)``
    returns ``(name, graph, result, parent_strength)`` entries (child weights
    then come from the previous layer's parent strengths where they fit).
    Runs without gradients.

    Parameters
    ----------
    model : torch.nn.Module
        A capsule model.
    x : torch.Tensor or list of torch.Tensor
        Images ``(B, C, H, W)``, or for a sequence model a list of ``B``
        sequences ``(n_k, d_emb)``.

    Returns
    -------
    list of LayerRouting
        In the order of the layers.

    Raises
    ------
    ValueError
        If the model has no routed capsule layers.

    Examples
    --------
    >>> import torch, dgl_capsules as dc
    >>> net = dc.models.CapsNet.from_preset("tiny")
    >>> (layer,) = model_routing(net, torch.rand(2, 1, 28, 28))
    >>> layer.name, layer.algorithm, layer.weight_name, tuple(layer.child_weights.shape)
    ('digitcaps', 'dynamic', 'vote length', (72, 2))
    """
    from ..models.capsnet import CapsNet
    from ..models.matrix import MatrixCapsNet
    from ..models.sequence import SequenceCapsClassifier

    with torch.no_grad():
        if isinstance(model, SequenceCapsClassifier):
            return _sequence_routing(model, x)
        if not hasattr(model, "routing"):
            raise ValueError(f"model: {type(model).__name__} has no routing(x) method, so no routed layers")
        layers = [tuple(entry)[:4] for entry in model.routing(x)]
        if not layers:
            raise ValueError(f"model: {type(model).__name__} has no routed capsule layers to draw")
        kinds = _algorithms(model)
        out = []
        for k, (name, g, result, strength) in enumerate(layers):
            if len(kinds) == 1:
                (algo,) = kinds
            else:
                algo = "dynamic" if result.sigma2 is None else "em"
            weights, what = None, None
            if isinstance(model, CapsNet) and k == 0:
                u = model.primary_caps(x)  # (B, N_src, D)
                votes = model.digits.votes(g, u)  # (E, B, D)
                src, _ = g.edges()
                total = votes.new_zeros((g.num_src_nodes(),) + votes.shape[1:2])
                total.index_add_(0, src, votes.norm(dim=-1))
                weights = total / g.out_degrees().clamp_min(1).to(total)[:, None]  # (N_src, B) mean vote length
                what = "vote length"
            elif isinstance(model, MatrixCapsNet) and k == 0:
                _, acts = model.primary(torch.relu(model.conv(x)))  # (B, H, W, types)
                weights, what = acts.reshape(acts.shape[0], -1).T, "activation"  # (N_src, B)
            elif k == 0 and algo == "heinsen" and hasattr(model, "primary_caps"):
                first = model.primary_caps(x)
                if isinstance(first, tuple) and first[0].shape[-1] == g.num_src_nodes():
                    weights, what = torch.sigmoid(first[0]).reshape(-1, g.num_src_nodes()).T, "activation"
            elif k > 0 and out[-1].parent_strength.shape[0] == g.num_src_nodes():
                weights = out[-1].parent_strength
                what = "vote length" if out[-1].algorithm == "dynamic" else "activation"
            module = {"convcaps1": getattr(model, "caps1", None), "convcaps2": getattr(model, "caps2", None)}.get(name)
            types = (getattr(module, "in_types", None), getattr(module, "out_types", None)) \
                if isinstance(model, MatrixCapsNet) else (None, None)
            out.append(LayerRouting(name, g, result, strength, weights, what, algo, *types))
        return out


def _algorithms(model):
    """The routing algorithms of a model's capsule layers, from their classes."""
    from ..nn import DynamicCaps, HeinsenRouting
    from ..nn.em import ClassCaps, ConvCaps

    kinds = set()
    for m in model.modules():
        if isinstance(m, DynamicCaps):
            kinds.add("dynamic")
        elif isinstance(m, (ConvCaps, ClassCaps)):
            kinds.add("em")
        elif isinstance(m, HeinsenRouting):
            kinds.add("heinsen")
    return kinds


def _sequence_routing(model, seqs):
    """Both Heinsen routings of a SequenceCapsClassifier, with traces (the same computation as forward)."""
    import dgl
    import torch.nn.functional as F

    from ..graph import capsule_graph
    from ..routing import heinsen_routing

    embs = model._check(seqs)
    lengths = [e.shape[0] for e in embs]
    tokens = torch.cat(embs)  # (T, d_emb)
    a = model.token_score(tokens).squeeze(-1)  # (T,) logits
    mu = model.token_norm(F.silu(model.token_pose(tokens))).unsqueeze(-2)  # (T, 1, d_inp)
    parts, classes = model.parts, model.classes
    g1 = dgl.batch([capsule_graph(n, model.n_parts, device=tokens.device) for n in lengths])
    votes, b_use, b_ign = parts._routing_inputs(g1, mu, [model.n_parts] * len(lengths))  # (E, 1, d_cap)
    r1 = heinsen_routing(g1, votes, a, b_use, b_ign, n_iters=parts.n_iters, eps=parts.eps,
                         p_model=parts.p_model, return_trace=True)
    a_p = r1.activations.view(len(lengths), model.n_parts)  # (B, n_parts)
    mu_p = r1.poses.view(len(lengths), model.n_parts, *r1.poses.shape[1:])  # (B, n_parts, 1, d_cap)
    g2 = capsule_graph(model.n_parts, model.n_classes, device=tokens.device)
    votes, b_use, b_ign = classes._routing_inputs(g2, mu_p, [model.n_classes])  # (E, B, 1, d_cap)
    r2 = heinsen_routing(g2, votes, a_p.T, b_use, b_ign, n_iters=classes.n_iters, eps=classes.eps,
                         p_model=classes.p_model, return_trace=True)
    return [
        LayerRouting("parts", g1, r1, torch.sigmoid(r1.activations), torch.sigmoid(a), "activation", "heinsen"),
        LayerRouting("classes", g2, r2, torch.sigmoid(r2.activations), torch.sigmoid(a_p.T), "activation",
                     "heinsen"),
    ]


def _batch_of(x, n):
    """The first ``n`` inputs of a batch (a tensor or a list of sequences)."""
    return x[:n]


def _predict(model, x):
    """Predicted classes ``(B,)`` and class scores of a batch."""
    with torch.no_grad():
        out = model(x)
        scores = model.scores(out)
    return scores.argmax(1), scores


def _layer_summary(layer):
    """Entropies per iteration (mean and weighted mean over children, all samples) and the uniform level."""
    g, trace = layer.graph, layer.result.trace
    mean, _ = entropy_curve(g, trace)
    deg = g.out_degrees()
    deg = deg[deg > 0].double()
    out = dict(
        algorithm=layer.algorithm,
        children=g.num_src_nodes(),
        parents=g.num_dst_nodes(),
        edges=g.num_edges(),
        iterations=len(trace),
        uniform_entropy=float(torch.log(deg).mean()),
        mean_entropy=[round(float(v), 5) for v in mean],
        weights=layer.weight_name,
        weighted_entropy=None,
    )
    if layer.child_weights is not None:
        wmean, _ = entropy_curve(g, trace, weights=layer.child_weights)
        out["weighted_entropy"] = [round(float(v), 5) for v in wmean]
    return out


def _picture_options(layer, sample):
    """How to draw a layer's bipartite picture readably: ``(kwargs, note)``."""
    g = layer.graph
    n_src, n_dst = g.num_src_nodes(), g.num_dst_nodes()
    kw = {}
    if layer.parent_types is not None and n_dst > _MAX_PARENTS:
        kw.update(group_parents="type", parent_types=layer.parent_types)
    if n_src > _MAX_CHILDREN:
        kw["top_k"] = 24 if kw else 32
    if layer.child_weights is not None:
        kw["child_weights"] = layer.child_weights
        kw["weights_label"] = layer.weight_name
    return kw


def _class_labels(n, class_names, predicted=None, true=None):
    names = [str(c) for c in (class_names if class_names is not None else range(n))]
    if predicted is not None:
        names = [f"{s} ◀ predicted" if j == predicted else s for j, s in enumerate(names)]
    return names


def visualize_model(model, x, y, out_dir, class_names=None, fps=2, dpi=100):
    """Draw the routing of every routed layer of ``model`` on inputs ``x``; write ``summary.json``.

    For each layer (see :func:`model_routing`) it writes into
    ``out_dir/<layer>/``: ``entropy.png`` (mean and weighted mean coupling
    entropy per iteration against the uniform level ``log #parents``, all
    samples of ``x``), ``histogram.gif`` and ``bipartite.gif`` (sample 0;
    the children that carry most, parents grouped by type on
    convolutional layers with many parents, classes named and the predicted
    one marked). ``out_dir/summary.json`` holds, per layer, the mean and the
    weighted mean entropy per iteration, the uniform entropy, the
    predicted and the true class of sample 0, and for all samples their
    classes. Figures are made without pyplot; nothing is shown or left open.

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
    from matplotlib.figure import Figure

    if isinstance(x, torch.Tensor) and x.dim() == 3:
        x = x.unsqueeze(0)
    n = len(x)
    if y is not None:
        y = torch.as_tensor(y).reshape(-1)
        if len(y) != n:
            raise ValueError(f"y must hold one class per input (B = {n}); got {len(y)}")
    model.eval()
    predicted, _ = _predict(model, x)
    layers = model_routing(model, x)
    n_classes = layers[-1].graph.num_dst_nodes()
    if class_names is not None and len(class_names) != n_classes:
        raise ValueError(f"class_names must name the {n_classes} classes; got {len(class_names)} names")
    # Pictures show sample 0; a ragged (sequence) layer is routed again on that input alone.
    one = model_routing(model, _batch_of(x, 1)) if any(_ragged(layer) for layer in layers) else layers
    pred0 = int(predicted[0])
    true0 = None if y is None else int(y[0])
    name_of = (lambda c: str(c) if class_names is None else str(class_names[c]))  # noqa: E731
    verdict = f"predicted {name_of(pred0)}" + ("" if true0 is None else f", true {name_of(true0)}")
    model_name = type(model).__name__

    os.makedirs(out_dir, exist_ok=True)
    paths, summary_layers = {}, {}
    for layer, pic in zip(layers, one):
        d = os.path.join(out_dir, layer.name)
        os.makedirs(d, exist_ok=True)
        files = {k: os.path.join(d, f) for k, f in
                 (("entropy", "entropy.png"), ("histogram", "histogram.gif"), ("bipartite", "bipartite.gif"))}
        g, trace = layer.graph, layer.result.trace
        head = f"{model_name} {layer.name} ({_ALGO[layer.algorithm]})"

        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        ax = fig.add_subplot()
        plot_entropy(g, trace, ax=ax, label="mean over children")
        if layer.child_weights is not None:
            plot_entropy(g, trace, ax=ax, weights=layer.child_weights,
                         label=f"weighted by {layer.weight_name}", color="tab:red", linestyle="--")
        ax.set_title(f"{head}: coupling entropy", fontsize="medium")
        fig.savefig(files["entropy"], dpi=dpi)

        pg, ptrace = pic.graph, pic.result.trace
        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        ani = animate_histogram(ptrace, g=pg, sample=0, ax=fig.add_subplot(), title=f"{layer.name} couplings")
        save_animation(ani, files["histogram"], fps=fps, dpi=dpi)

        fig = Figure(figsize=(7.5, 6.5))
        kw = _picture_options(pic, 0)
        last = pic is one[-1] and pg.num_dst_nodes() == n_classes
        if last:
            kw["parent_labels"] = _class_labels(n_classes, class_names, pred0)
        ani = animate_bipartite(pg, ptrace, sample=0, parent_strength=pic.parent_strength,
                                ax=fig.add_axes(AXES_RECT), title=f"{head}, {verdict}", **kw)
        save_animation(ani, files["bipartite"], fps=fps, dpi=dpi)

        paths[layer.name] = files
        entry = _layer_summary(layer)
        entry.update(predicted=pred0, true=true0, files=files)
        summary_layers[layer.name] = entry

    summary = dict(
        model=model_name,
        samples=n,
        predicted=pred0,
        true=true0,
        predicted_all=[int(p) for p in predicted],
        true_all=None if y is None else [int(c) for c in y],
        class_names=None if class_names is None else [str(c) for c in class_names],
        layers=summary_layers,
    )
    summary_path = os.path.join(out_dir, "summary.json")
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2)
    return dict(paths=paths, summary=summary, summary_path=summary_path)


_ALGO = {"dynamic": "dynamic routing", "em": "EM routing", "heinsen": "Heinsen routing"}


def _ragged(layer):
    """Whether a layer's graph is a dgl.batch of per-input graphs (no batch dimension in the trace)."""
    return layer.graph.batch_size > 1


def reconstruction_grid(model, dataset, path, n=16):
    """Save a PNG: ``n`` evenly spaced digits of ``dataset`` (upper rows) above their reconstructions (lower rows).

    Parameters
    ----------
    model : torch.nn.Module
        A model with ``reconstruct(out)`` (a CapsNet, or a MatrixCapsNet with a decoder).
    dataset : ImageDataset
        Images and labels (e.g. ``mnist5k().test``).
    path : str or os.PathLike
        The PNG file to write.
    n : int
        Number of digits.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer or the model cannot reconstruct images.

    Examples
    --------
    >>> import os, tempfile, torch, dgl_capsules as dc
    >>> ds = dc.data.ImageDataset(torch.rand(4, 1, 28, 28), torch.arange(4), n_classes=10)
    >>> p = reconstruction_grid(dc.models.CapsNet.from_preset("tiny"), ds, os.path.join(tempfile.mkdtemp(), "r.png"))
    >>> os.path.basename(p)
    'r.png'
    """
    fig = _reconstruction_figure(model, dataset, n)
    fig.savefig(os.fspath(path), dpi=100)
    return os.fspath(path)


def _reconstruction_figure(model, dataset, n):
    from matplotlib.figure import Figure

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    name = type(model).__name__
    if not hasattr(model, "reconstruct"):
        raise ValueError(f"model: {name} cannot reconstruct images (it has no reconstruct method)")
    n = min(n, len(dataset))
    idx = torch.linspace(0, len(dataset) - 1, n).round().long()  # spread over a class-sorted split
    x = dataset.images[idx]
    model.eval()
    with torch.no_grad():
        out = model(x)
        rec, pred = model.reconstruct(out), model.scores(out).argmax(1)
    if rec is None:
        raise ValueError(f"model: this {name} has no decoder, so it cannot reconstruct images")
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(max(cols, 4) * 1.1, rows * 2.3), layout="constrained")
    axes = fig.subplots(2 * rows, cols, squeeze=False)
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        for k, (img, title) in enumerate(((x, "digit {}"), (rec, "pred {}"))):
            ax = axes[2 * r + k, c]
            ax.set_axis_off()
            if i < n:
                ax.imshow(img[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                label = int(dataset.labels[idx[i]]) if k == 0 else int(pred[i])
                ax.set_title(title.format(label), fontsize=8)
    fig.suptitle(f"digits (upper) and {name} reconstructions (lower)", fontsize=9)
    return fig


def _fixed_indices(n_items, n):
    """``n`` evenly spaced indices of ``[0, n_items)`` (deterministic)."""
    n = min(n, n_items)
    return torch.linspace(0, n_items - 1, n).round().long().unique()


def record_routing(model, dataset, path, n=8):
    """Record the routing of a fixed handful of inputs of ``dataset`` into a small file.

    The inputs are ``n`` evenly spaced items of ``dataset`` (the same ones on
    every call, so files recorded after each epoch of a training run compare
    the same digits). The file (``torch.save``) holds, per routed layer, the
    graph's edges, the couplings of every iteration in float16
    ``(T, |E|, n)``, the child weights (vote lengths or activations) and
    parent strengths in float16, the uniform entropy, and the predicted and
    true classes. :func:`animate_over_training` reads a directory of them.

    Parameters
    ----------
    model : torch.nn.Module
        A capsule model (see :func:`model_routing`); its train/eval mode is
        restored afterwards.
    dataset : ImageDataset or MotifSequences
        Validation images (``.images``, ``.labels``), or sequences
        (``.sequences``, ``.labels``).
    path : str or os.PathLike
        File to write; its directory is created.
    n : int
        How many inputs.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer or ``dataset`` is empty.

    Examples
    --------
    >>> import os, tempfile, torch, dgl_capsules as dc
    >>> ds = dc.data.ImageDataset(torch.rand(20, 1, 28, 28), torch.arange(20) % 10, n_classes=10)
    >>> p = record_routing(dc.models.CapsNet.from_preset("tiny"), ds, os.path.join(tempfile.mkdtemp(), "e.pt"), n=4)
    >>> rec = torch.load(p, weights_only=True)
    >>> rec["indices"], rec["layers"][0]["trace"].shape, rec["layers"][0]["trace"].dtype
    ([0, 6, 13, 19], torch.Size([3, 720, 4]), torch.float16)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    # NOTE: MotifSequences is a NamedTuple, whose len() counts its fields, not its sequences.
    n_items = len(dataset.images) if hasattr(dataset, "images") else len(dataset.sequences)
    if n_items == 0:
        raise ValueError("dataset is empty; record_routing needs at least one input")
    idx = _fixed_indices(n_items, n)
    if hasattr(dataset, "images"):
        x = dataset.images[idx]
    else:
        x = [dataset.sequences[int(i)] for i in idx]
    labels = torch.as_tensor(dataset.labels)[idx]
    was_training = model.training
    model.eval()
    try:
        predicted, _ = _predict(model, x)
        layers = model_routing(model, x)
    finally:
        model.train(was_training)
    rec_layers = []
    for layer in layers:
        g = layer.graph
        src, dst = g.edges()
        rec_layers.append(dict(
            name=layer.name,
            algorithm=layer.algorithm,
            n_src=g.num_src_nodes(),
            n_dst=g.num_dst_nodes(),
            src=src.int().cpu(),
            dst=dst.int().cpu(),
            child_type=g.edata["child_type"].short().cpu() if "child_type" in g.edata else None,
            parent_type=g.edata["parent_type"].short().cpu() if "parent_type" in g.edata else None,
            sizes=g.batch_num_edges().cpu() if _ragged(layer) else None,
            child_types=layer.child_types,
            parent_types=layer.parent_types,
            trace=torch.stack([c.detach().cpu() for c in layer.result.trace]).half(),  # (T, E, *)
            child_weights=None if layer.child_weights is None else layer.child_weights.detach().cpu().half(),
            weight_name=layer.weight_name,
            parent_strength=layer.parent_strength.detach().cpu().half(),
        ))
    record = dict(
        version=1,
        model=type(model).__name__,
        indices=[int(i) for i in idx],
        labels=labels.cpu(),
        predicted=predicted.cpu(),
        layers=rec_layers,
    )
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save(record, tmp)
    os.replace(tmp, path)  # never a half-written file, even if training is interrupted
    return path


def _graph_of(rec):
    """The DGL graph of a recorded layer (ragged layers: the first input's part only)."""
    import dgl

    src, dst = rec["src"].long(), rec["dst"].long()
    n_src, n_dst = rec["n_src"], rec["n_dst"]
    keep = slice(None)
    if rec["sizes"] is not None:  # a dgl.batch of per-input graphs: keep input 0
        e0 = int(rec["sizes"][0])
        keep = slice(0, e0)
        src, dst = src[:e0], dst[:e0]
        n_src, n_dst = int(src.max()) + 1, int(dst.max()) + 1
    g = dgl.heterograph({("child", "votes", "parent"): (src, dst)},
                        num_nodes_dict={"child": n_src, "parent": n_dst})
    for key in ("child_type", "parent_type"):
        if rec[key] is not None:
            g.edata[key] = rec[key][keep].long()
    return g, keep


def animate_over_training(run_dir, out_dir, fps=2, dpi=100):
    """Pictures of how routing changed during training, from ``run_dir/routing_trace/epoch_*.pt``.

    Reads the files :func:`record_routing` wrote after every epoch and draws

    * ``entropy_over_training.png``: per routed layer, the mean and the
      weighted mean coupling entropy after the last routing iteration against
      the epoch, with the uniform level ``log #parents``;
    * ``bipartite_<layer>.gif`` per layer: the final couplings of the first
      recorded input, one frame per epoch (epoch 0 is the initialisation), on
      the absolute edge scale, children chosen by what they carry at the last
      epoch.

    Parameters
    ----------
    run_dir : str or os.PathLike
        A training run directory with a ``routing_trace`` folder.
    out_dir : str or os.PathLike
        Created if missing.
    fps, dpi : float
        Frame rate and resolution of the written files.

    Returns
    -------
    dict
        Kind -> path: ``"entropy"`` and ``"bipartite_<layer>"``.

    Raises
    ------
    ValueError
        If ``run_dir`` holds no recorded epochs.
    """
    from matplotlib.figure import Figure

    files = sorted(glob.glob(os.path.join(os.fspath(run_dir), "routing_trace", "epoch_*.pt")))
    if not files:
        raise ValueError(
            f"run_dir: no routing_trace/epoch_*.pt in {os.fspath(run_dir)!r}; train with "
            "TrainConfig(trace_routing=N) to record them"
        )
    records = [load_file(f, "run_dir") for f in files]
    epochs = [int(os.path.basename(f)[len("epoch_"):-len(".pt")]) for f in files]
    names = [layer["name"] for layer in records[-1]["layers"]]
    os.makedirs(out_dir, exist_ok=True)
    out = {}

    # Entropy against the epoch, one panel per layer.
    fig = Figure(figsize=(max(4.2 * len(names), 6.0), 3.8), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        mean, wmean, level, what = [], [], None, None
        for rec in records:
            layer = next(lay for lay in rec["layers"] if lay["name"] == name)
            g, keep = _graph_of(layer) if layer["sizes"] is None else _full_graph(layer)
            trace = [c.float() for c in layer["trace"]]
            m, _ = entropy_curve(g, trace[-1:])
            mean.append(m[0])
            if layer["child_weights"] is not None:
                wm, _ = entropy_curve(g, trace[-1:], weights=layer["child_weights"].float())
                wmean.append(wm[0])
                what = layer["weight_name"]
            deg = g.out_degrees()
            level = float(torch.log(deg[deg > 0].double()).mean())
        ax.plot(epochs, mean, marker="o", label=f"mean over children (last {mean[-1]:.3f})")
        if len(wmean) == len(epochs):
            ax.plot(epochs, wmean, marker="s", linestyle="--", color="tab:red",
                    label=f"weighted by {what} (last {wmean[-1]:.3f})")
        ax.axhline(level, color="0.4", linestyle=":", label=f"uniform: log #parents = {level:.3f}")
        ax.set_ylim(0, 1.3 * max(level, max(mean), max(wmean, default=0)))
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        ax.set_xlabel("epoch (0: initialisation)")
        ax.set_ylabel("coupling entropy after routing (nats)")
        ax.set_title(f"{name}", fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", loc="lower left")
    fig.suptitle(f"{records[-1]['model']}: routing of {len(records[-1]['indices'])} validation inputs "
                 "over training", fontsize="medium")
    out["entropy"] = os.path.join(out_dir, "entropy_over_training.png")
    fig.savefig(out["entropy"], dpi=dpi)

    # The bipartite picture of input 0 after routing, one frame per epoch.
    labels = records[-1]["labels"]
    true0 = int(labels[0]) if labels.dim() == 1 else None
    for name in names:
        layers = [next(lay for lay in rec["layers"] if lay["name"] == name) for rec in records]
        g, keep = _graph_of(layers[-1])
        ragged = layers[-1]["sizes"] is not None
        frames = [lay["trace"][-1][keep].float() for lay in layers]  # (E, *) final couplings
        if not ragged:
            frames = [f.reshape(f.shape[0], -1)[:, 0] for f in frames]  # input 0
        frames = [f / _child_sums(g, f) for f in frames]  # undo float16 rounding
        last = layers[-1]
        weights = _first_input(last["child_weights"], g.num_src_nodes(), ragged)
        strength = None
        kw = {}
        if last.get("parent_types") and g.num_dst_nodes() > _MAX_PARENTS:
            kw.update(group_parents="type", parent_types=last["parent_types"])
        if g.num_src_nodes() > _MAX_CHILDREN:
            kw["top_k"] = 24 if kw else 32
        if weights is not None:
            kw.update(child_weights=weights, weights_label=last["weight_name"])
        if not ragged and not kw.get("group_parents"):
            strength = _first_input(last["parent_strength"], g.num_dst_nodes(), ragged)
        labels_txt = [f"epoch {e}, predicted {int(rec['predicted'][0])}" for e, rec in zip(epochs, records)]
        head = f"{records[-1]['model']} {name}, input 0" + ("" if true0 is None else f" (true {true0})")
        fig = Figure(figsize=(7.5, 6.5))
        ani = animate_bipartite(g, frames, sample=0, ax=fig.add_axes(AXES_RECT), title=head,
                                frame_labels=labels_txt, parent_strength=strength, **kw)
        out[f"bipartite_{name}"] = save_animation(ani, os.path.join(out_dir, f"bipartite_{name}.gif"),
                                                  fps=fps, dpi=dpi)
    return out


def _full_graph(rec):
    import dgl

    g = dgl.heterograph({("child", "votes", "parent"): (rec["src"].long(), rec["dst"].long())},
                        num_nodes_dict={"child": rec["n_src"], "parent": rec["n_dst"]})
    return g, slice(None)


def _child_sums(g, c):
    """Each edge's child's total coupling (for renormalising float16 couplings)."""
    src, _ = g.edges()
    s = torch.zeros(g.num_src_nodes(), dtype=c.dtype).index_add_(0, src, c)
    return s[src].clamp_min(1e-12)


def _first_input(values, n, ragged):
    """Values ``(N, B)`` of input 0 as ``(n,)`` float; a ragged layer's first ``n`` rows."""
    if values is None:
        return None
    v = values.float()
    if ragged:
        return v[:n]
    return v.reshape(v.shape[0], -1)[:, 0]
