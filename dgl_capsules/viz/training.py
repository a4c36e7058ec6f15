"""Routing over training: record the routing of fixed inputs after every epoch, and draw how it changed."""
import glob
import os

import torch

from ..files import load_file
from ..routing import get_routing
from .entropy import entropy_curve
from .report import draw_bipartite, picture_options
from .trained import model_routing, predict

__all__ = ["record_routing", "animate_over_training"]


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
    true classes, and each layer's routing family and its label.
    :func:`animate_over_training` reads a directory of them.

    Parameters
    ----------
    model : torch.nn.Module
        A capsule model (see :func:`~dgl_capsules.viz.model_routing`); its train/eval mode is
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
    x = dataset.images[idx] if hasattr(dataset, "images") else [dataset.sequences[int(i)] for i in idx]
    was_training = model.training
    model.eval()
    try:
        predicted, _ = predict(model, x)
        layers = model_routing(model, x)
    finally:
        model.train(was_training)
    record = dict(version=1, model=type(model).__name__, indices=[int(i) for i in idx],
                  labels=torch.as_tensor(dataset.labels)[idx].cpu(), predicted=predicted.cpu(),
                  layers=[_layer_record(layer) for layer in layers])
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save(record, tmp)
    os.replace(tmp, path)  # never a half-written file, even if training is interrupted
    return path


def _layer_record(layer):
    """What record_routing keeps of one routed layer: edges, float16 couplings and strengths, types, family."""
    g = layer.graph
    src, dst = g.edges()
    spec = get_routing(layer.routing)

    def half(t):
        return None if t is None else t.detach().cpu().half()

    return dict(
        name=layer.name, algorithm=layer.routing, label=spec.label, n_src=g.num_src_nodes(), n_dst=g.num_dst_nodes(),
        src=src.int().cpu(), dst=dst.int().cpu(),
        child_type=g.edata["child_type"].short().cpu() if "child_type" in g.edata else None,
        parent_type=g.edata["parent_type"].short().cpu() if "parent_type" in g.edata else None,
        sizes=g.batch_num_edges().cpu() if g.batch_size > 1 else None,
        child_types=layer.child_types, parent_types=layer.parent_types,
        trace=torch.stack([c.detach().cpu() for c in layer.result.trace]).half(),  # (T, E, *)
        child_weights=half(layer.child_strength), weight_name=spec.strength_name if layer.child_strength is not None
        else None, parent_strength=half(layer.parent_strength),
    )


def _graph_of(rec, first_only=True):
    """The DGL graph of a recorded layer (a ragged layer: the first input's part only, unless not ``first_only``),
    and which recorded edges it holds."""
    import dgl

    src, dst = rec["src"].long(), rec["dst"].long()
    n_src, n_dst = rec["n_src"], rec["n_dst"]
    keep = slice(None)
    if rec["sizes"] is not None and first_only:  # a dgl.batch of per-input graphs: keep input 0
        keep = slice(0, int(rec["sizes"][0]))
        src, dst = src[keep], dst[keep]
        n_src, n_dst = int(src.max()) + 1, int(dst.max()) + 1
    g = dgl.heterograph({("child", "votes", "parent"): (src, dst)},
                        num_nodes_dict={"child": n_src, "parent": n_dst})
    if first_only:
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
    out = {"entropy": _entropy_over_training(records, epochs, names, out_dir, dpi)}
    for name in names:
        layers = [next(lay for lay in rec["layers"] if lay["name"] == name) for rec in records]
        out[f"bipartite_{name}"] = _bipartite_over_training(records, epochs, name, layers, out_dir, fps, dpi)
    return out


def _entropy_over_training(records, epochs, names, out_dir, dpi):
    """Entropy after routing against the epoch, one panel per layer: the PNG's path."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.2 * len(names), 6.0), 3.8), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        mean, wmean, level, what = [], [], None, None
        for rec in records:
            layer = next(lay for lay in rec["layers"] if lay["name"] == name)
            g, _ = _graph_of(layer, first_only=False)
            last = [layer["trace"][-1].float()]
            mean.append(entropy_curve(g, last)[0][0])
            if layer["child_weights"] is not None:
                wmean.append(entropy_curve(g, last, weights=layer["child_weights"].float())[0][0])
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
        ax.set_title(_layer_title(name, records[-1]), fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", loc="lower left")
    fig.suptitle(f"{records[-1]['model']}: routing of {len(records[-1]['indices'])} validation inputs "
                 "over training", fontsize="medium")
    path = os.path.join(out_dir, "entropy_over_training.png")
    fig.savefig(path, dpi=dpi)
    return path


def _layer_title(name, record):
    """``"digitcaps (dynamic routing)"``: the layer and its family's label, as recorded."""
    layer = next(lay for lay in record["layers"] if lay["name"] == name)
    return f"{name} ({layer['label']})" if layer.get("label") else name


def _bipartite_over_training(records, epochs, name, layers, out_dir, fps, dpi):
    """The final couplings of input 0, one frame per epoch: the GIF's path."""
    g, keep = _graph_of(layers[-1])
    ragged = layers[-1]["sizes"] is not None
    frames = [lay["trace"][-1][keep].float() for lay in layers]  # (E, *) final couplings
    frames = [f.reshape(f.shape[0], -1)[:, 0] for f in frames]  # input 0 (a ragged layer: its only sample)
    frames = [f / _child_sums(g, f) for f in frames]  # undo float16 rounding
    last = layers[-1]
    weights = _first_input(last["child_weights"], g.num_src_nodes(), ragged)
    kw = picture_options(g, weights, last["weight_name"], last.get("parent_types"))
    strength = None
    if not ragged and not kw.get("group_parents"):
        strength = _first_input(last["parent_strength"], g.num_dst_nodes(), ragged)
    labels = records[-1]["labels"]
    true0 = int(labels[0]) if labels.dim() == 1 else None
    head = f"{records[-1]['model']} {_layer_title(name, records[-1])}, input 0" + (
        "" if true0 is None else f" (true {true0})")
    frame_labels = [f"epoch {e}, predicted {int(rec['predicted'][0])}" for e, rec in zip(epochs, records)]
    return draw_bipartite(os.path.join(out_dir, f"bipartite_{name}.gif"), g, frames, sample=0,
                          parent_strength=strength, title=head, frame_labels=frame_labels, fps=fps, dpi=dpi, **kw)


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
        v = v[:n]
    return v.reshape(v.shape[0], -1)[:, 0]
