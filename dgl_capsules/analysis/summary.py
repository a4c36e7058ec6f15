"""What routing does in a trained model over a data set: every routed layer, every iteration, one JSON-ready dict.

:func:`analyze` routes a data set through ``model.routing(x)`` batch by
batch and accumulates, per routed layer (whatever its family: everything is
read from the :class:`~dgl_capsules.models.RoutedLayer` entries and the
routing registry), the metrics of :mod:`~dgl_capsules.analysis.metrics`
over all inputs: nothing model-specific and no per-sample tensors are kept,
so memory does not grow with the number of samples.

Examples
--------
>>> import torch, dgl_capsules as dc
>>> from dgl_capsules.data import ImageDataset
>>> net = dc.models.get_model("capsnet", "tiny")
>>> data = ImageDataset(torch.rand(8, 1, 28, 28), torch.arange(8) % 2)
>>> out = analyze(net, data, batch_size=4, progress=False)
>>> [(l["name"], l["routing"], len(l["iterations"])) for l in out["layers"]]
[('digitcaps', 'dynamic', 3)]
>>> sorted(out["layers"][0]["iterations"][0])
['dynamics', 'entropy', 'iteration', 'static_index']
"""
import hashlib
import math

import dgl
import torch
from tqdm.auto import tqdm

from ..evaluation import correct
from ..functional import coupling_entropy
from ..routing import get_routing
from ._inputs import check_positive_int, check_samples
from .metrics import agreement, quantise

__all__ = ["analyze", "ENTROPY_BINS", "QUANTILES", "DEAD_THRESHOLDS"]

#: Bins of [0, 1] in which normalised entropies are counted (the quantiles are read from them).
ENTROPY_BINS = 50
#: The quantiles of normalised entropy reported per iteration.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Strength thresholds of the dead-capsule shares.
DEAD_THRESHOLDS = (0.001, 0.01, 0.05, 0.1, 0.2)
#: Points of the dead-capsule curve (thresholds log-spaced from 1e-4 to the largest strength seen, or 1).
CURVE_POINTS = 41


def _chooser_graph(g, normalise):
    """The graph whose source nodes are the nodes that choose (whose couplings sum to 1), or ``None``."""
    if normalise == "parents":
        return g
    if normalise == "children":
        return dgl.reverse(g)  # parents become the sources; the edge order is kept
    return None


def _normalised_entropy(g, coupling):
    """``(N_src, B)`` entropy over the out-edges of each source divided by its maximum; NaN below two edges."""
    h = coupling_entropy(g, coupling.double())  # (N_src, B)
    deg = g.out_degrees().double()
    scale = torch.where(deg > 1, torch.log(deg.clamp_min(2)), torch.full_like(deg, math.nan))
    return h / scale[:, None]


class _Iteration:
    """Sums over inputs for one iteration of one layer: entropies, edge moments, quantised couplings per class."""

    def __init__(self, n_edges, n_classes, bins):
        self.bins = bins
        self.hist = torch.zeros(ENTROPY_BINS, dtype=torch.float64)
        self.h_sum = self.h_n = self.hw_sum = self.w_sum = 0.0
        self.s1 = torch.zeros(n_edges, dtype=torch.float64)
        self.s2 = torch.zeros(n_edges, dtype=torch.float64)
        self.n = 0
        self.dyn = torch.zeros(n_classes, n_edges, bins, dtype=torch.int32)
        self.trees = [set() for _ in range(n_classes)]

    def add(self, g_choose, coupling, weights, classes):
        c = coupling.double()  # (E, B)
        if g_choose is not None:
            h = _normalised_entropy(g_choose, c)  # (N, B)
            keep = torch.isfinite(h)
            vals = h[keep].clamp(0, 1)
            self.hist += torch.histc(vals, ENTROPY_BINS, 0.0, 1.0)
            self.h_sum += float(vals.sum())
            self.h_n += int(keep.sum())
            if weights is not None and weights.shape == h.shape:
                w = torch.where(keep, weights.double(), torch.zeros_like(h))
                self.hw_sum += float((torch.where(keep, h, torch.zeros_like(h)) * w).sum())
                self.w_sum += float(w.sum())
        self.s1 += c.sum(1)
        self.s2 += c.square().sum(1)
        self.n += c.shape[1]
        q = quantise(c, self.bins)  # (E, B)
        n_edges = q.shape[0]
        cell = torch.arange(n_edges)[:, None] * self.bins + q  # (E, B): edge-major (edge, bin) cell
        for k in classes.unique().tolist():
            mine = classes == k
            counts = torch.bincount(cell[:, mine].reshape(-1), minlength=n_edges * self.bins)
            self.dyn[k] += counts.view(n_edges, self.bins).to(torch.int32)
        q8 = q.to(torch.uint8).t().contiguous()  # (B, E): one parse tree per input
        for b, k in enumerate(classes.tolist()):
            self.trees[k].add(hashlib.blake2b(q8[b].numpy().tobytes(), digest_size=16).digest())

    def summary(self, t, normalised):
        out = dict(iteration=t, entropy=None, static_index=None, dynamics=None)
        if normalised and self.h_n:
            out["entropy"] = dict(
                mean=self.h_sum / self.h_n,
                weighted_mean=self.hw_sum / self.w_sum if self.w_sum > 0 else None,
                quantiles={str(q): _hist_quantile(self.hist, q) for q in QUANTILES},
                histogram=[int(v) for v in self.hist.tolist()],
                values=self.h_n,
            )
        if self.n >= 2:
            mean = self.s1 / self.n
            var = (self.s2 / self.n - mean.square()).clamp_min(0)
            out["static_index"] = float(var.sqrt().mean())
        out["dynamics"] = self._dynamics()
        return out

    def _dynamics(self):
        entropies, trees, counts = [], {}, {}
        for k in range(self.dyn.shape[0]):
            n_k = int(self.dyn[k, 0].sum()) if self.dyn.shape[1] else 0
            if n_k == 0:
                continue
            p = self.dyn[k].double() / n_k  # (E, bins)
            entropies.append(float(-(p * torch.log(p.clamp_min(1e-300))).sum(1).mean()))
            trees[str(k)] = len(self.trees[k])
            counts[str(k)] = n_k
        if not entropies:
            return None
        return dict(entropy=sum(entropies) / len(entropies), parse_trees=trees, inputs=counts, bins=self.bins)


def _hist_quantile(hist, q):
    """The ``q`` quantile of values counted in ``hist`` over equal bins of [0, 1], linear within a bin."""
    total = float(hist.sum())
    if total == 0:
        return None
    cum = torch.cumsum(hist, 0) / total
    i = int(torch.searchsorted(cum, torch.tensor(q, dtype=cum.dtype)).clamp_max(len(hist) - 1))
    below = float(cum[i - 1]) if i else 0.0
    inside = float(hist[i]) / total
    frac = (q - below) / inside if inside > 0 else 0.0
    return (i + min(max(frac, 0.0), 1.0)) / len(hist)


def _dead_summary(top, thresholds):
    """Shares of capsules whose largest strength ``top`` ``(N,)`` is below each threshold, and the curve."""
    if top is None:
        return None
    top = top.double()
    hi = max(1.0, float(top.max()))
    grid = torch.logspace(-4, math.log10(hi), CURVE_POINTS, dtype=torch.float64)
    return dict(
        shares={str(t): float((top < t).double().mean()) for t in thresholds},
        curve=dict(thresholds=grid.tolist(), shares=[float((top < t).double().mean()) for t in grid]),
        capsules=int(top.numel()),
    )


class _Layer:
    """Everything accumulated for one routed layer over the batches."""

    def __init__(self, layer, n_classes, bins):
        self.name, self.routing = layer.name, layer.routing
        self.spec = get_routing(layer.routing)
        g = layer.graph
        self.shape = (g.num_src_nodes(), g.num_dst_nodes(), g.num_edges())
        self.chooser = _chooser_graph(g, self.spec.normalise)
        couplings = layer.result.trace or [layer.result.coupling]
        self.iters = [_Iteration(g.num_edges(), n_classes, bins) for _ in couplings]
        self.child_top = self.parent_top = None
        self.agree_sum = self.agree_n = self.agree_w = self.agree_wsum = 0.0

    def add(self, layer, classes):
        g = layer.graph
        if (g.num_src_nodes(), g.num_dst_nodes(), g.num_edges()) != self.shape:
            raise ValueError(f"model: layer {self.name!r} changed its graph between batches; analyze needs images "
                             "of one size")
        couplings = layer.result.trace or [layer.result.coupling]
        if len(couplings) != len(self.iters):
            raise ValueError(f"model: layer {self.name!r} routed {len(couplings)} iterations in one batch and "
                             f"{len(self.iters)} in another")
        weights = layer.child_strength if self.spec.normalise == "parents" else layer.parent_strength
        for it, c in zip(self.iters, couplings):
            it.add(self.chooser, c.reshape(c.shape[0], -1), weights, classes)
        self.child_top = _running_max(self.child_top, layer.child_strength)
        self.parent_top = _running_max(self.parent_top, layer.parent_strength)
        if layer.votes is not None:
            a = agreement(g, layer.result.coupling, layer.votes, layer.result.poses)  # (N_dst, B)
            keep = torch.isfinite(a)
            self.agree_sum += float(a[keep].sum())
            self.agree_n += int(keep.sum())
            w = torch.where(keep, layer.parent_strength.to(a), torch.zeros_like(a))
            self.agree_wsum += float((torch.where(keep, a, torch.zeros_like(a)) * w).sum())
            self.agree_w += float(w.sum())

    def summary(self, thresholds):
        n_src, n_dst, n_edges = self.shape
        normalised = self.chooser is not None
        agree = None
        if self.agree_n:
            agree = dict(mean=self.agree_sum / self.agree_n,
                         weighted_mean=self.agree_wsum / self.agree_w if self.agree_w > 0 else None)
        return dict(
            name=self.name, routing=self.routing, label=self.spec.label, normalise=self.spec.normalise,
            strength=self.spec.strength_name, children=n_src, parents=n_dst, edges=n_edges,
            iterations=[it.summary(t + 1, normalised) for t, it in enumerate(self.iters)],
            dead=dict(children=_dead_summary(self.child_top, thresholds),
                      parents=_dead_summary(self.parent_top, thresholds)),
            agreement=agree,
        )


def _running_max(top, strength):
    if strength is None:
        return top
    now = strength.detach().reshape(strength.shape[0], -1).amax(1).double().cpu()  # (N,)
    return now if top is None else torch.maximum(top, now)


class _Credit:
    """Couplings chained over the layers that follow one another (parents of one = children of the next)."""

    def __init__(self, layers, n_classes):
        chain = [layers[0]]
        for nxt in layers[1:]:
            if nxt.graph.num_src_nodes() != chain[-1].graph.num_dst_nodes():
                break
            chain.append(nxt)
        self.ok = all(get_routing(l.routing).normalise == "parents" for l in chain)
        self.names = [l.name for l in chain]
        self.child_types = chain[0].child_types
        n0, nl = chain[0].graph.num_src_nodes(), chain[-1].graph.num_dst_nodes()
        self.total = torch.zeros(n0, nl, dtype=torch.float64)
        self.per_class = torch.zeros(n_classes, n0, nl, dtype=torch.float64)
        self.counts = torch.zeros(n_classes, dtype=torch.float64)

    def add(self, layers, classes):
        if not self.ok:
            return
        pairs = [(l.graph, l.result.coupling.reshape(l.result.coupling.shape[0], -1).double())
                 for l in layers[:len(self.names)]]
        k = _chain(pairs)  # (B, N0, NL)
        self.total += k.sum(0)
        self.per_class.index_add_(0, classes, k)
        self.counts += torch.bincount(classes, minlength=len(self.counts)).double()

    def summary(self, top=5):
        n = float(self.counts.sum())
        if not self.ok or n == 0:
            return None
        mean = self.total / n  # (N0, NL)
        share = mean / mean.sum(0, keepdim=True).clamp_min(1e-300)  # each parent's credit over the children
        n0 = mean.shape[0]
        spread = (-(share * torch.log(share.clamp_min(1e-300))).sum(0) / math.log(n0)) if n0 > 1 else None
        best = share.topk(min(top, n0), dim=0)
        out = dict(layers=self.names, children=n0, parents=mean.shape[1],
                   spread=None if spread is None else spread.tolist(),
                   top={str(j): [[int(i), float(v)] for i, v in zip(best.indices[:, j], best.values[:, j])]
                        for j in range(mean.shape[1])})
        if mean.shape[1] == self.per_class.shape[0]:  # class capsules last: credit to the input's own class
            own = [float(self.per_class[k, :, k].mean() / self.counts[k]) for k in range(len(self.counts))
                   if self.counts[k] > 0]
            out["own_class"] = sum(own) / len(own)
        if self.child_types and n0 % self.child_types == 0:
            by_type = mean.view(n0 // self.child_types, self.child_types, -1).sum(0) / n0  # (types, NL)
            out["by_child_type"] = by_type.tolist()
        return out


def _chain(pairs):
    """``(B, N_src of the first, N_dst of the last)`` products of the dense coupling matrices."""
    credit = None
    for g, c in pairs:
        src, dst = g.edges()
        dense = c.new_zeros(c.shape[1], g.num_src_nodes(), g.num_dst_nodes())
        dense[:, src.long(), dst.long()] = c.t()  # (B, N_src, N_dst)
        credit = dense if credit is None else torch.bmm(credit, dense)
    return credit


def _classes(labels, n):
    """One class per input ``(B,)``: the label, or the first labelled class of a multi-hot label."""
    return (labels.argmax(1) if labels.dim() == 2 else labels).long().clamp(0, n - 1)


def _check_inputs(model, data, batch_size, max_samples, bins, thresholds):
    name = type(model).__name__
    if not callable(getattr(model, "routing", None)):
        raise ValueError(f"model: {name} has no routing(x) method, so no routed layers to analyse")
    n = check_samples(data, max_samples, least=2)  # routing varies over inputs: two at least
    check_positive_int("batch_size", batch_size)
    check_positive_int("bins", bins)
    thresholds = tuple(thresholds)
    if not thresholds or any(not isinstance(t, (int, float)) or isinstance(t, bool) or t <= 0 for t in thresholds):
        raise ValueError(f"thresholds must be positive numbers; got {thresholds!r}")
    return n, thresholds


@torch.no_grad()
def analyze(model, data, *, batch_size=128, max_samples=None, bins=10, thresholds=DEAD_THRESHOLDS, progress=True):
    r"""Measure what routing does in ``model`` over ``data``: every routed layer and iteration, as a JSON-ready dict.

    The model runs in eval mode; its routed layers come from
    ``model.routing(x)`` (:class:`~dgl_capsules.models.RoutedLayer`) and their
    family's label, normalisation and strengths from the routing registry.
    Per layer and per routing iteration (the result's ``trace``):

    - ``entropy``: normalised coupling entropy
      :math:`H(c_i) / \log |\mathcal{N}(i)|` of every choosing capsule on
      every input (children for families normalised over parents, parents for
      those normalised over children): ``mean``, ``weighted_mean`` (each
      child weighted by its strength), ``quantiles`` (read from a histogram of
      :data:`ENTROPY_BINS` bins, so to within 1/50) and the ``histogram``;
    - ``static_index``: the mean over edges of the standard deviation of
      :math:`c_{ij}` over all inputs (0: the routing ignores its input);
    - ``dynamics``: routing-dynamics entropy and distinct parse trees per class
      of couplings quantised into ``bins`` bins (Renzulli et al. 2022).

    Per layer: ``dead`` (shares of children and parents whose strength stays
    below each of ``thresholds`` on every input, and a curve over thresholds),
    ``agreement`` (coupling-weighted cosine of votes and parent poses, plain
    and weighted by parent strength; ``None`` where the model does not record
    the votes). Per model: ``credit``, the final couplings chained over the
    layers that follow the first one (which children decide each parent: the
    normalised entropy of every parent's credit over the children, its top
    children, the mean credit of the inputs' own class and per child type).

    The numbers equal those of :mod:`~dgl_capsules.analysis.metrics` on all
    inputs in one batch (the tests check it).

    Parameters
    ----------
    model : torch.nn.Module
        A model with ``routing(x)`` (every routed model of :func:`~dgl_capsules.models.list_models`).
    data : ImageDataset
        Images ``(N, C, H, W)`` and labels ``(N,)`` (or multi-hot ``(N, K)``: the first labelled class counts).
    batch_size : int
    max_samples : int, optional
        Analyse only the first ``max_samples`` inputs (at least 2).
    bins : int
        Quantisation bins of the routing dynamics.
    thresholds : sequence of float
        Strength thresholds of the dead-capsule shares.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``model``, ``samples``, ``accuracy``, ``layers`` (a dict per routed layer: ``name``, ``routing``,
        ``label``, ``normalise``, ``strength``, ``children``, ``parents``, ``edges``, ``iterations``,
        ``dead``, ``agreement``) and ``credit``; only numbers, strings, lists, dicts and ``None``.

    Raises
    ------
    ValueError
        If the model has no ``routing`` method or no routed layer, ``data`` is not an image data set of at least
        two samples, or ``batch_size``, ``max_samples``, ``bins`` or ``thresholds`` are out of range.
    """
    n, thresholds = _check_inputs(model, data, batch_size, max_samples, bins, thresholds)
    n_classes = getattr(data, "n_classes", None) or (
        int(data.labels.shape[1]) if data.labels.dim() == 2 else int(data.labels.max()) + 1)
    was_training = model.training
    model.eval()
    try:
        layers, credit, right = None, None, 0
        for i in tqdm(range(0, n, batch_size), desc="analyze", leave=False, disable=not progress):
            x, y = data.images[i:min(i + batch_size, n)], data.labels[i:min(i + batch_size, n)]
            routed = list(model.routing(x))
            if not routed:
                raise ValueError(f"model: {type(model).__name__} has no routed capsule layers to analyse")
            if layers is None:
                layers = [_Layer(l, n_classes, bins) for l in routed]
                credit = _Credit(routed, n_classes)
            classes = _classes(y, n_classes)
            for acc, layer in zip(layers, routed):
                acc.add(layer, classes)
            credit.add(routed, classes)
            right += int(correct(model.scores(model(x)), y).sum())
    finally:
        model.train(was_training)
    return dict(model=type(model).__name__, samples=n, accuracy=right / n,
                layers=[l.summary(thresholds) for l in layers], credit=credit.summary())
