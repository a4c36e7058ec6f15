"""Capsule layers as bipartite DGL graphs.

A capsule layer connects child capsules (layer *l*, the source node type
``"child"``) to parent capsules (layer *l + 1*, the destination node type
``"parent"``) through one edge type ``"vote"``. Every routing algorithm in
:mod:`dgl_capsules.routing` runs on such a graph.

Graphs depend only on their sizes, so they are built once per set of arguments
and device and cached. Every call returns a fresh view of the cached graph: it
shares the immutable structure (and the formats DGL built for it) but has
feature frames of its own, so what a caller adds, deletes or changes on its
handle (``g.edata["x"] = ...``, ``g.add_edges(...)``) never reaches the cache or
any other caller (``bench/bench_graph_call.py`` measures what a call costs).
"""
from collections import OrderedDict

import dgl
import torch

from ._checks import check_positive_int

__all__ = ["capsule_graph", "conv_capsule_graph", "CHILD", "PARENT", "VOTE"]

#: The node type of the child capsules (the sources of every edge).
CHILD = "child"
#: The node type of the parent capsules (the destinations).
PARENT = "parent"
#: The one edge type, child to parent: a vote.
VOTE = "vote"
_ETYPE = (CHILD, VOTE, PARENT)

_CACHE_SIZE = 64
_cache = OrderedDict()  # (kind, *sizes, device) -> (graph, [(feature tensor, its version)])


def _bipartite(src, dst, n_src, n_dst):
    g = dgl.heterograph({_ETYPE: (src, dst)}, num_nodes_dict={CHILD: n_src, PARENT: n_dst})
    g.create_formats_()  # build COO/CSR/CSC once, not on the first routing call
    return g


def _view(g):
    """The same structure with feature frames of its own (DGL's ``local_var``)."""
    return g.local_var()


def _device(device):
    return _CPU if device is None else torch.device(device)


_CPU = torch.device("cpu")


def _cached(key, build):
    """A fresh view of the cached graph for ``key`` (built by ``build()`` on the CPU and moved to ``key[-1]``)."""
    entry = _cache.get(key)
    if entry is not None:
        g, versions = entry
        # A caller may have changed a shared feature tensor in place through its view
        # (g.edata["offset"] += 1); then that entry is rebuilt, never handed out again.
        if all(t._version == v for t, v in versions):
            _cache.move_to_end(key)
            return _view(g)
    g = build()
    if key[-1] != _CPU:
        g = g.to(key[-1])
        g.create_formats_()
    _cache[key] = (g, [(g.edata[k], g.edata[k]._version) for k in g.edata.keys()])
    if len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return _view(g)


def capsule_graph(n_in, n_out, device=None):
    """Complete bipartite graph from ``n_in`` child capsules to ``n_out`` parents.

    Every child votes for every parent: the graph has ``n_in * n_out`` edges of
    the single edge type ``("child", "vote", "parent")``. The graph is cached
    per ``(n_in, n_out, device)`` and every call returns a view of it with
    feature frames of its own (see the module notes); the edge order is an
    implementation detail that no code in this library relies on (read it
    from ``g.edges()``).

    Parameters
    ----------
    n_in : int
        Number of child capsules (source nodes).
    n_out : int
        Number of parent capsules (destination nodes).
    device : torch.device or str, optional
        Where the returned graph lives (default: the CPU); cached per device.

    Returns
    -------
    dgl.DGLGraph
        A unibipartite graph with ``num_nodes("child") == n_in`` and
        ``num_nodes("parent") == n_out``.

    Raises
    ------
    ValueError
        If ``n_in`` or ``n_out`` is not a positive integer.

    Examples
    --------
    >>> import dgl_capsules as dc
    >>> g = dc.capsule_graph(1152, 10)
    >>> g.num_nodes("child"), g.num_nodes("parent"), g.num_edges()
    (1152, 10, 11520)
    >>> g.edata["x"] = torch.zeros(11520)  # on this handle only
    >>> len(dc.capsule_graph(1152, 10).edata)
    0
    """
    n_in = check_positive_int("n_in", n_in)
    n_out = check_positive_int("n_out", n_out)
    return _cached(("complete", n_in, n_out, _device(device)), lambda: _capsule_graph(n_in, n_out))


def _capsule_graph(n_in, n_out):
    src = torch.arange(n_in).repeat_interleave(n_out)
    dst = torch.arange(n_out).repeat(n_in)
    return _bipartite(src, dst, n_in, n_out)


def conv_output_size(in_hw, kernel, stride):
    """Output grid ``(Ho, Wo)`` of a convolution with no padding."""
    return tuple((n - kernel) // stride + 1 for n in in_hw)


def conv_capsule_graph(in_hw, kernel, stride, in_types, out_types, device=None):
    """Convolutional capsule connectivity on a grid, with no padding.

    Child capsule type ``a`` at grid position ``(y, x)`` of an ``H x W`` grid
    votes for parent type ``c`` at output position ``(y', x')`` when the child
    lies in that parent's ``kernel x kernel`` receptive field:
    ``y'*stride <= y < y'*stride + kernel`` and likewise for ``x``. Node ids are
    row-major over (row, column, type):

    .. math::

        \\text{child} = (y W + x) A + a, \\qquad
        \\text{parent} = (y' W_o + x') C + c,

    with ``Ho = (H - kernel) // stride + 1`` and ``Wo`` likewise. A child in
    overlapping receptive fields has parents at several positions; routing
    normalises over all of them.

    Each edge carries integer features naming the transformation matrix it
    uses: ``"offset"`` (``ky * kernel + kx``), ``"child_type"`` (``a``),
    ``"parent_type"`` (``c``) and ``"w_index"``, their flat index
    ``(offset * A + a) * C + c`` into a weight of shape
    ``(kernel * kernel * A * C, ...)``. The graph is cached per arguments and
    device like :func:`capsule_graph`'s, each call returning a view of it.

    Parameters
    ----------
    in_hw : tuple of int
        ``(H, W)``, the child grid.
    kernel : int
        Receptive field side, ``1 <= kernel <= min(H, W)``.
    stride : int
        Step between receptive fields.
    in_types, out_types : int
        Capsule types ``A`` per child position and ``C`` per parent position.
    device : torch.device or str, optional
        Where the returned graph lives (default: the CPU); cached per device.

    Returns
    -------
    dgl.DGLGraph
        ``H*W*A`` children, ``Ho*Wo*C`` parents, ``Ho*Wo*kernel**2*A*C`` edges.

    Raises
    ------
    ValueError
        If a size is not a positive integer or the kernel is larger than the grid.

    Examples
    --------
    >>> import dgl_capsules as dc
    >>> g = dc.conv_capsule_graph(in_hw=(6, 6), kernel=3, stride=2, in_types=4, out_types=5)
    >>> g.num_nodes("child"), g.num_nodes("parent"), g.num_edges()
    (144, 20, 720)
    >>> sorted(g.edata.keys())
    ['child_type', 'offset', 'parent_type', 'w_index']
    """
    if not isinstance(in_hw, (tuple, list)) or len(in_hw) != 2:
        raise ValueError(f"in_hw must be a pair (H, W) of positive integers; got {in_hw!r}")
    h = check_positive_int("in_hw[0]", in_hw[0])
    w = check_positive_int("in_hw[1]", in_hw[1])
    kernel = check_positive_int("kernel", kernel)
    stride = check_positive_int("stride", stride)
    in_types = check_positive_int("in_types", in_types)
    out_types = check_positive_int("out_types", out_types)
    if kernel > min(h, w):
        raise ValueError(
            f"kernel must be at most min(H, W) = {min(h, w)} for in_hw = {(h, w)}; got {kernel}"
        )
    key = ("conv", h, w, kernel, stride, in_types, out_types, _device(device))
    return _cached(key, lambda: _conv_capsule_graph(h, w, kernel, stride, in_types, out_types))


def _conv_capsule_graph(h, w, kernel, stride, n_a, n_c):
    ho, wo = conv_output_size((h, w), kernel, stride)
    # One edge per (y', x', c, ky, kx, a), enumerated with broadcasting: grouped by parent, every
    # parent with kernel**2 * A children (EM routing's dense fast path uses such blocks without
    # reordering; nothing else depends on the order).
    yo, xo, c, ky, kx, a = torch.meshgrid(
        torch.arange(ho), torch.arange(wo), torch.arange(n_c), torch.arange(kernel),
        torch.arange(kernel), torch.arange(n_a), indexing="ij",
    )
    y = yo * stride + ky
    x = xo * stride + kx
    src = ((y * w + x) * n_a + a).reshape(-1)
    dst = ((yo * wo + xo) * n_c + c).reshape(-1)
    g = _bipartite(src, dst, h * w * n_a, ho * wo * n_c)
    offset = (ky * kernel + kx).reshape(-1)
    g.edata["offset"] = offset
    g.edata["child_type"] = a.reshape(-1)
    g.edata["parent_type"] = c.reshape(-1)
    g.edata["w_index"] = (offset * n_a + a.reshape(-1)) * n_c + c.reshape(-1)
    return g
