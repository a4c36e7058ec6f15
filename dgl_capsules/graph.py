"""Capsule layers as bipartite DGL graphs.

A capsule layer connects child capsules (layer *l*, the source node type
``"child"``) to parent capsules (layer *l + 1*, the destination node type
``"parent"``) through one edge type ``"vote"``. Every routing algorithm in
:mod:`dgl_capsules.routing` runs on such a graph.

Graphs depend only on their sizes, so they are built once per set of arguments
and cached. They are shared: routing never writes features onto them (it works
inside ``g.local_scope()``), and user code should not either.
"""
from functools import lru_cache
from numbers import Integral

import dgl
import torch

__all__ = ["capsule_graph", "conv_capsule_graph", "CHILD", "PARENT", "VOTE"]

CHILD = "child"
PARENT = "parent"
VOTE = "vote"
_ETYPE = (CHILD, VOTE, PARENT)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value}")
    return int(value)


def _bipartite(src, dst, n_src, n_dst):
    g = dgl.heterograph({_ETYPE: (src, dst)}, num_nodes_dict={CHILD: n_src, PARENT: n_dst})
    g.create_formats_()  # build COO/CSR/CSC once, not on the first routing call
    return g


def _to(g, device):
    return g if device is None else g.to(device)


def capsule_graph(n_in, n_out, device=None):
    """Complete bipartite graph from ``n_in`` child capsules to ``n_out`` parents.

    Every child votes for every parent: the graph has ``n_in * n_out`` edges of
    the single edge type ``("child", "vote", "parent")``. The graph is cached
    per ``(n_in, n_out)``; the edge order is an implementation detail that no
    code in this library relies on (read it from ``g.edges()``).

    Parameters
    ----------
    n_in : int
        Number of child capsules (source nodes).
    n_out : int
        Number of parent capsules (destination nodes).
    device : torch.device or str, optional
        Where the returned graph lives; the cache keeps the CPU copy.

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
    >>> g is dc.capsule_graph(1152, 10)
    True
    """
    n_in = _check_positive_int("n_in", n_in)
    n_out = _check_positive_int("n_out", n_out)
    return _to(_capsule_graph(n_in, n_out), device)


@lru_cache(maxsize=64)
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
    ``(kernel * kernel * A * C, ...)``.

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
        Where the returned graph lives; the cache keeps the CPU copy.

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
    h = _check_positive_int("in_hw[0]", in_hw[0])
    w = _check_positive_int("in_hw[1]", in_hw[1])
    kernel = _check_positive_int("kernel", kernel)
    stride = _check_positive_int("stride", stride)
    in_types = _check_positive_int("in_types", in_types)
    out_types = _check_positive_int("out_types", out_types)
    if kernel > min(h, w):
        raise ValueError(
            f"kernel must be at most min(H, W) = {min(h, w)} for in_hw = {(h, w)}; got {kernel}"
        )
    return _to(_conv_capsule_graph(h, w, kernel, stride, in_types, out_types), device)


@lru_cache(maxsize=64)
def _conv_capsule_graph(h, w, kernel, stride, n_a, n_c):
    ho, wo = conv_output_size((h, w), kernel, stride)
    # One edge per (y', x', ky, kx, a, c), enumerated with broadcasting.
    yo, xo, ky, kx, a, c = torch.meshgrid(
        torch.arange(ho), torch.arange(wo), torch.arange(kernel), torch.arange(kernel),
        torch.arange(n_a), torch.arange(n_c), indexing="ij",
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
