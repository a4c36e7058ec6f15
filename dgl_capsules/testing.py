"""Testing routing algorithms: dense references from the papers and one contract check.

The dense references restate each routing procedure with plain tensors, one
``(child, parent)`` cell per pair and a mask for the pairs that are not
connected, straight from the papers' equations. They are slow and use no DGL,
which is what makes them independent checks of the message-passing code; use
them in float64.

:func:`check_routing_contract` checks the properties every routing function
of this library has (and that a new one should have) on a few small graphs:
a ragged :func:`dgl.batch` equals its parts alone, relabelling the edges
relabels the couplings and changes nothing else, the samples of a batch are
independent, each child's couplings sum to 1, the graph is left as it was
found, int32 and int64 graphs agree, an empty batch gives empty outputs, the
gradients pass :func:`torch.autograd.gradcheck`, and bad votes get an error
naming ``votes``.

Examples
--------
>>> import torch, dgl_capsules as dc
>>> from dgl_capsules.testing import check_routing_contract
>>> def make_inputs(g, batch, generator):
...     return (torch.randn(g.num_edges(), batch, 4, generator=generator, dtype=torch.float64),)
>>> check_routing_contract(dc.routing.dynamic_routing, make_inputs, kinds=("edge",))
"""
import math

import dgl
import torch

from .graph import CHILD, PARENT, VOTE, capsule_graph, conv_capsule_graph
from .routing.registry import KINDS

__all__ = [
    "dense_dynamic_routing",
    "dense_em_routing",
    "dense_heinsen_routing",
    "edge_to_dense",
    "dense_to_edge",
    "dense_mask",
    "permuted",
    "random_bipartite",
    "check_routing_contract",
    "KINDS",
]


# ---------------------------------------------------------------------------
# Edge tensors <-> dense (child, parent) arrays
# ---------------------------------------------------------------------------


def edge_to_dense(g, x):
    """Edge tensor ``(|E|, *rest)`` -> dense ``(N_src, N_dst, *rest)`` with zeros off the graph."""
    src, dst = g.edges()
    out = x.new_zeros((g.num_src_nodes(), g.num_dst_nodes()) + tuple(x.shape[1:]))
    out[src.long(), dst.long()] = x
    return out


def dense_to_edge(g, x):
    """Dense ``(N_src, N_dst, *rest)`` -> edge tensor ``(|E|, *rest)`` in the edge order of ``g``."""
    src, dst = g.edges()
    return x[src.long(), dst.long()]


def dense_mask(g):
    """``(N_src, N_dst)`` boolean: which child votes for which parent."""
    src, dst = g.edges()
    mask = torch.zeros(g.num_src_nodes(), g.num_dst_nodes(), dtype=torch.bool)
    mask[src.long(), dst.long()] = True
    return mask


def permuted(g, seed=1):
    """The same graph with its edge ids shuffled: ``(graph, perm)``, new edge ``k`` = old edge ``perm[k]``.

    Edge features are carried along (permuted).
    """
    src, dst = g.edges()
    perm = torch.randperm(g.num_edges(), generator=torch.Generator().manual_seed(seed))
    h = dgl.heterograph(
        {(CHILD, VOTE, PARENT): (src[perm], dst[perm])},
        num_nodes_dict={CHILD: g.num_src_nodes(), PARENT: g.num_dst_nodes()},
    )
    for k, v in g.edata.items():
        h.edata[k] = v[perm]
    return h, perm


def random_bipartite(n_in, n_out, p=0.5, seed=0):
    """A random capsule graph: every parent has a child, some children may have no parent."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n_in, n_out, generator=gen) < p
    mask[torch.randint(n_in, (n_out,), generator=gen), torch.arange(n_out)] = True
    src, dst = mask.nonzero(as_tuple=True)
    return dgl.heterograph({(CHILD, VOTE, PARENT): (src, dst)}, num_nodes_dict={CHILD: n_in, PARENT: n_out})


# ---------------------------------------------------------------------------
# Dense references, from the papers' equations
# ---------------------------------------------------------------------------


def dense_dynamic_routing(u, mask=None, n_iters=3):
    r"""Sabour et al. 2017, Procedure 1, written densely.

    .. math::

        c_{ij} = \operatorname{softmax}_j b_{ij}, \quad s_j = \sum_i c_{ij} \hat u_{j|i}, \quad
        v_j = \frac{\lVert s_j \rVert^2}{1 + \lVert s_j \rVert^2} \frac{s_j}{\lVert s_j \rVert}, \quad
        b_{ij} \mathrel{+}= \hat u_{j|i} \cdot v_j

    Parameters
    ----------
    u : torch.Tensor
        Prediction vectors :math:`\hat u_{j|i}`, ``(B, I, J, D)``.
    mask : torch.Tensor, optional
        ``(I, J)`` boolean, which child votes for which parent (all if ``None``).
    n_iters : int
        Iterations.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``v`` ``(B, J, D)`` and ``c`` ``(B, I, J)`` of the last iteration.
    """
    b = u.new_zeros(u.shape[:3])  # (B, I, J)
    for r in range(n_iters):
        if mask is None:
            c = torch.softmax(b, dim=2)
        else:
            c = torch.softmax(b.masked_fill(~mask, float("-inf")), dim=2).nan_to_num(0.0) * mask
        s = torch.einsum("bij,bijd->bjd", c, u)
        norm = torch.linalg.vector_norm(s, dim=-1, keepdim=True)
        v = norm**2 / (1 + norm**2) * s / norm
        if r + 1 < n_iters:
            b = b + torch.einsum("bijd,bjd->bij", u, v)
    return v, c


def dense_em_routing(V, a, mask, beta_u, beta_a, lambdas, eps=1e-6):
    """Hinton et al. 2018, Procedure 1, written densely from the paper's equations.

    V: (B, I, J, H) votes (anything off the mask); a: (B, I) child activations; mask: (I, J) which
    child votes for which parent; beta_u, beta_a: (J,). Returns mu, sigma2 (B, J, H), activations
    (B, J) and the list of responsibilities R (B, I, J) used by each M-step.
    """
    m = mask.to(V.dtype)
    R = (m / m.sum(1, keepdim=True)).nan_to_num(0.0).expand(V.shape[0], -1, -1)  # 1 / #parents
    Rs = []
    for t, lam in enumerate(lambdas):
        Rs.append(R)
        # M-step
        Rp = R * a[:, :, None]
        S = Rp.sum(1)  # (B, J)
        mu = torch.einsum("bij,bijh->bjh", Rp, V) / S[..., None]
        dev2 = (V - mu[:, None]) ** 2
        sigma2 = torch.einsum("bij,bijh->bjh", Rp, dev2) / S[..., None] + eps
        cost = (beta_u[:, None] + 0.5 * torch.log(sigma2)) * S[..., None]  # (B, J, H)
        act = torch.sigmoid(lam * (beta_a - cost.sum(-1)))
        if t + 1 == len(lambdas):
            break
        # E-step
        logp = -(dev2 / (2 * sigma2[:, None])).sum(-1) - 0.5 * torch.log(2 * math.pi * sigma2).sum(-1)[:, None]
        logits = torch.log(act)[:, None] + logp
        R = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=2).nan_to_num(0.0)
    return mu, sigma2, act, Rs


def dense_heinsen_routing(V, a, beta_use, beta_ign, mask=None, n_iters=3, eps=1e-5, p_model="gaussian"):
    """Heinsen 2019, Algorithm 1, written densely from the paper's equations.

    Parameters
    ----------
    V : torch.Tensor
        Votes ``(B, I, J, C, H)``.
    a : torch.Tensor
        Input score logits ``(B, I)`` (``-inf`` for padding: then ``f(a) = 0``).
    beta_use, beta_ign : torch.Tensor or float
        Scalars or anything broadcastable to ``(B, I, J)`` (``(I, J)``, ``(J,)``).
    mask : torch.Tensor, optional
        ``(I, J)`` boolean, which child votes for which parent (all if ``None``).
    n_iters, eps, p_model
        As :func:`~dgl_capsules.routing.heinsen_routing`.

    Returns
    -------
    tuple of torch.Tensor
        ``a_out`` ``(B, J)``, ``mu`` and ``sig2`` ``(B, J, C, H)`` and ``R``
        ``(B, I, J)`` of the last iteration.
    """
    m = V.new_ones(V.shape[1:3]) if mask is None else mask.to(V.dtype)
    f_a = torch.sigmoid(a)[..., None]  # (B, I, 1)
    for it in range(n_iters):
        if it == 0:
            R = (m / m.sum(1, keepdim=True).clamp(min=1)).expand(V.shape[:3])
        else:
            sq = (V - mu[:, None]) ** 2  # (B, I, J, C, H)
            if p_model == "gaussian":
                log_p = -(sq / (2 * sig2[:, None])).sum((-2, -1)) - torch.log(torch.sqrt(sig2)).sum((-2, -1))[:, None]
            else:
                x = -sq.sum((-2, -1))
                if mask is not None:
                    x = x.masked_fill(~mask, float("-inf"))
                log_p = torch.log_softmax(x, dim=2)
            logits = torch.nn.functional.logsigmoid(a_out)[:, None] + log_p
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            R = torch.softmax(logits, dim=2).nan_to_num(0.0)
        D_use = f_a * R * m
        D_ign = (f_a - D_use) * m
        a_out = (beta_use * D_use).sum(1) - (beta_ign * D_ign).sum(1)
        denom = D_use.sum(1) + eps  # (B, J)
        mu = torch.einsum("bij,bijch->bjch", D_use, V) / denom[..., None, None]
        sq = (V - mu[:, None]) ** 2
        sig2 = torch.einsum("bij,bijch->bjch", D_use, sq) / denom[..., None, None] + eps
    return a_out, mu, sig2, R


# ---------------------------------------------------------------------------
# The routing contract
# ---------------------------------------------------------------------------

#: What each input of a routing function is, for :func:`check_routing_contract`:

_NODE_OUT = ("poses", "activations", "sigma2")  # (N_dst, B, ...)


def _default_graphs():
    return {
        "complete": capsule_graph(4, 3),
        "conv": conv_capsule_graph((4, 4), kernel=2, stride=1, in_types=2, out_types=2),
        "random": random_bipartite(7, 4, p=0.4, seed=3),
    }


def _outputs(r):
    """The tensors of a RoutingResult as a dict (fields that are None left out)."""
    out = {k: getattr(r, k) for k in ("poses", "activations", "sigma2", "coupling")}
    out = {k: v for k, v in out.items() if v is not None}
    for t, c in enumerate(r.trace or []):
        out[f"trace[{t}]"] = c
    return out


def _assert_close(what, got, want, rtol, atol):
    try:
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    except AssertionError as e:
        raise AssertionError(f"routing contract: {what}: {str(e).splitlines()[0]}") from None


def _map_inputs(inputs, kinds, edge=None, child=None, edge_value=None, parent_value=None):
    fns = dict(edge=edge, child=child, edge_value=edge_value, parent_value=parent_value)
    out = []
    for x, kind in zip(inputs, kinds):
        f = fns.get(kind)
        per_item = kind in ("edge_value", "parent_value")
        if f is None or not isinstance(x, torch.Tensor) or (per_item and x.dim() == 0):
            out.append(x)
        else:
            out.append(f(x))
    return tuple(out)


def check_routing_contract(route, make_inputs, kinds, *, graphs=None, batch=3, rtol=1e-10, atol=1e-12,
                           gradcheck=True, n_tiny=(3, 2), first="votes"):
    """Check the properties every routing function should have; raise ``AssertionError`` naming the first broken one.

    Parameters
    ----------
    route : callable
        ``route(g, *inputs) -> RoutingResult``, e.g.
        ``lambda g, v: dynamic_routing(g, v, n_iters=3, return_trace=True)``.
    make_inputs : callable
        ``make_inputs(g, batch, generator) -> tuple`` of float64 inputs for
        graph ``g`` with ``batch`` samples; the votes come first.
    kinds : sequence of str
        What each input is, one of :data:`KINDS` (``("edge",)`` for dynamic
        routing; ``("edge", "child", "edge_value", "edge_value")`` for
        Heinsen's ``votes, a_in, beta_use, beta_ign``). The first is ``"edge"``
        (the votes) or ``"child"`` (child vectors, for a family that never forms
        votes).
    graphs : dict of str to dgl.DGLGraph, optional
        The graphs to check on (default: a complete, a convolutional and a
        random capsule graph).
    batch : int
        Samples per call.
    rtol, atol : float
        Tolerances of the float64 comparisons.
    gradcheck : bool
        Also run :func:`torch.autograd.gradcheck` on a tiny complete graph
        ``n_tiny`` (children, parents) with 2 samples.
    first : str
        The name of the first input, which the errors of check (9) must name.

    Raises
    ------
    AssertionError
        Naming the property and the graph, e.g. ``"routing contract: edge
        permutation (graph 'conv'): coupling: ..."``.
    ValueError
        If ``kinds`` does not fit the inputs.

    Notes
    -----
    Checked on every graph: (1) relabelling the edges permutes the couplings
    and changes nothing else; (2) shuffling the samples shuffles the outputs
    and one sample alone equals itself inside the batch; (3) the couplings of
    every child with a parent sum to 1 over its parents (also every traced
    iteration); (4) the graph's features are as before the call (none added);
    (5) an int32 graph gives the int64 results; (6) a batch of 0 samples
    gives outputs of the same shapes with 0 samples. Then (7) a
    :func:`dgl.batch` of two graphs equals its parts routed alone, (8)
    gradcheck, and (9) votes with a wrong number of rows (``ValueError``),
    float16, integer or numpy votes (``TypeError``) get an error naming
    ``votes``.
    """
    kinds = tuple(kinds)
    if not kinds or kinds[0] not in ("edge", "child") or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must start with 'edge' (the votes) or 'child' and use only {KINDS}; got {kinds}")
    graphs = _default_graphs() if graphs is None else graphs
    gen = torch.Generator().manual_seed(0)
    close = dict(rtol=rtol, atol=atol)

    def call(g, inputs, what):
        try:
            r = route(g, *inputs)
        except Exception as e:  # noqa: BLE001 - any error is a broken contract here
            raise AssertionError(
                f"routing contract: {what}: raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from e
        if not hasattr(r, "coupling") or not hasattr(r, "poses"):
            raise AssertionError(f"routing contract: route must return a RoutingResult; got {type(r).__name__}")
        return _outputs(r)

    for name, g in graphs.items():
        inputs = make_inputs(g, batch, gen)
        if len(inputs) != len(kinds):
            raise ValueError(f"kinds must name each of the {len(inputs)} inputs; got {len(kinds)} kinds")
        feats = {k: v.clone() for k, v in g.edata.items()}
        n_src = g.num_src_nodes()
        base = call(g, inputs, f"plain call (graph {name!r})")

        # (4) graph untouched
        if set(g.edata.keys()) != set(feats) or len(g.srcdata) or len(g.dstdata):
            raise AssertionError(
                f"routing contract: graph untouched (graph {name!r}): features left on the graph: "
                f"edata {sorted(g.edata.keys())}, srcdata {sorted(g.srcdata.keys())}, dstdata {sorted(g.dstdata.keys())}"
            )
        for k, v in feats.items():
            if not torch.equal(g.edata[k], v):
                raise AssertionError(f"routing contract: graph untouched (graph {name!r}): edge feature {k!r} changed")

        # (1) edge permutation
        h, perm = permuted(g)
        r = call(h, _map_inputs(inputs, kinds, edge=lambda x: x[perm], edge_value=lambda x: x[perm]),
                 f"edge permutation (graph {name!r})")
        for k, v in base.items():
            want = v[perm] if k == "coupling" or k.startswith("trace") else v
            _assert_close(f"edge permutation (graph {name!r}): {k}", r[k], want, **close)

        # (2) batch order, and one sample alone
        order = torch.randperm(batch, generator=gen)
        r = call(g, _map_inputs(inputs, kinds, edge=lambda x: x[:, order], child=lambda x: x[:, order]),
                 f"batch order (graph {name!r})")
        for k, v in base.items():
            _assert_close(f"batch order (graph {name!r}): {k}", r[k], v[:, order], **close)
        r = call(g, _map_inputs(inputs, kinds, edge=lambda x: x[:, 1:2], child=lambda x: x[:, 1:2]),
                 f"one sample alone (graph {name!r})")
        for k, v in base.items():
            _assert_close(f"one sample alone (graph {name!r}): {k}", r[k], v[:, 1:2], **close)

        # (3) couplings sum to 1 per child
        src = g.edges()[0].long()
        has_parent = g.out_degrees() > 0
        for k, v in base.items():
            if k == "coupling" or k.startswith("trace"):
                sums = v.new_zeros((n_src,) + v.shape[1:]).index_add(0, src, v)[has_parent]
                _assert_close(f"couplings sum to 1 per child (graph {name!r}): {k}", sums, torch.ones_like(sums),
                              rtol=0, atol=1e-9)

        # (5) int32 graph
        r = call(g.int(), inputs, f"int32 graph (graph {name!r})")
        for k, v in base.items():
            _assert_close(f"int32 graph (graph {name!r}): {k}", r[k], v, **close)

        # (6) empty batch
        r = call(g, _map_inputs(inputs, kinds, edge=lambda x: x[:, :0], child=lambda x: x[:, :0]),
                 f"empty batch (graph {name!r})")
        for k, v in base.items():
            want = v.shape[:1] + (0,) + v.shape[2:]
            if tuple(r[k].shape) != tuple(want):
                raise AssertionError(
                    f"routing contract: empty batch (graph {name!r}): {k} has shape {tuple(r[k].shape)}, "
                    f"expected {tuple(want)}"
                )

    # (7) ragged batch equals its parts alone
    parts = [capsule_graph(3, 2), random_bipartite(5, 3, p=0.5, seed=1), capsule_graph(2, 4)]
    part_inputs = [make_inputs(p, batch, gen) for p in parts]
    together = []
    for k, kind in enumerate(kinds):
        xs = [inp[k] for inp in part_inputs]
        if kind == "const" or not isinstance(xs[0], torch.Tensor) or xs[0].dim() == 0:
            together.append(xs[0])
            part_inputs = [inp[:k] + (xs[0],) + inp[k + 1:] for inp in part_inputs]
        else:
            together.append(torch.cat(xs, 0))
    r = call(dgl.batch(parts), tuple(together), "ragged batch")
    n_e = [p.num_edges() for p in parts]
    n_j = [p.num_dst_nodes() for p in parts]
    pieces = {k: torch.split(v, n_e if (k == "coupling" or k.startswith("trace")) else n_j) for k, v in r.items()}
    for i, (p, inp) in enumerate(zip(parts, part_inputs)):
        alone = call(p, inp, f"ragged batch (part {i} alone)")
        for k, v in alone.items():
            _assert_close(f"ragged batch equals its parts alone (part {i}): {k}", pieces[k][i], v, **close)

    # (8) gradcheck on a tiny graph
    if gradcheck:
        g = capsule_graph(*n_tiny)
        inputs = make_inputs(g, 2, gen)
        wrt = [i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and torch.is_floating_point(x)]
        leaves = [inputs[i].detach().clone().requires_grad_(True) for i in wrt]

        def f(*xs):
            full = list(inputs)
            for i, x in zip(wrt, xs):
                full[i] = x
            return tuple(call(g, tuple(full), "gradcheck").values())

        try:
            torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, rtol=1e-4)
        except RuntimeError as e:  # gradcheck's GradcheckError is a RuntimeError
            raise AssertionError(f"routing contract: gradcheck: {str(e).splitlines()[0]}") from None

    # (9) bad votes are named
    g = next(iter(graphs.values()))
    inputs = make_inputs(g, batch, gen)
    votes, rest = inputs[0], tuple(inputs[1:])
    bad = [
        ("votes with one row too few", ValueError, (votes[1:],) + rest),
        ("float16 votes", TypeError, (votes.half(),) + rest),
        ("integer votes", TypeError, (votes.long(),) + rest),
        ("numpy votes", TypeError, (votes.numpy(),) + rest),
    ]
    for what, exc, args in bad:
        try:
            route(g, *args)
        except exc as e:
            if first not in str(e):
                raise AssertionError(f"routing contract: named errors: {what} raised {exc.__name__} "
                                     f"without naming {first}: {e}") from None
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"routing contract: named errors: {what} raised {type(e).__name__}, "
                                 f"expected {exc.__name__} naming {first}: {str(e).splitlines()[0]}") from None
        else:
            raise AssertionError(f"routing contract: named errors: {what} raised nothing, expected {exc.__name__}")


# ---------------------------------------------------------------------------
# Self-attention routing (Efficient-CapsNet): dense reference and contract inputs
# ---------------------------------------------------------------------------

__all__ += ["reference_self_attention", "example_self_attention"]


def reference_self_attention(g, votes, bias=0.0, uniform=False, eps=1e-20, return_trace=False):
    r"""Efficient-CapsNet's self-attention routing (Mazzia et al. 2021, eqs. 5-7), dense, in float64.

    One ``(child i, parent j)`` cell per pair, masked where ``g`` has no edge:

    .. math::

        A_{ij} = \frac{\hat u_{j|i} \cdot \sum_k \hat u_{j|k}}{\sqrt D}, \quad
        c_{ij} = \operatorname{softmax}_j A_{ij}, \quad
        s_j = \sum_i (c_{ij} + b_{ij})\, \hat u_{j|i}, \quad
        v_j = \Big(1 - \frac{1}{e^{\lVert s_j \rVert} + \epsilon}\Big) \frac{s_j}{\lVert s_j \rVert + \epsilon}

    (the squash exactly as the published code writes it). Only ``g.edges()``
    is read from the graph. Arguments as
    :func:`~dgl_capsules.routing.self_attention_routing`.

    Returns
    -------
    RoutingResult
        float64 ``poses`` ``(N_dst, *, D)``, ``coupling`` ``(|E|, *)`` and, with
        ``return_trace``, ``trace = [coupling]``.
    """
    from .routing import RoutingResult

    votes = votes.to(torch.float64)
    batch_shape, d = tuple(votes.shape[1:-1]), votes.shape[-1]
    flat = votes.reshape(votes.shape[0], -1, d)  # (E, B, D)
    u = edge_to_dense(g, flat)  # (I, J, B, D), zeros off the graph
    mask = dense_mask(g)  # (I, J)
    m = mask.to(torch.float64)
    if uniform:
        c = (m / m.sum(1, keepdim=True)).nan_to_num(0.0)[:, :, None].expand(u.shape[:3])  # (I, J, B)
    else:
        total = torch.einsum("ijbd->jbd", u)  # every vote for parent j (zeros off the graph add nothing)
        a = torch.einsum("ijbd,jbd->ijb", u, total) / math.sqrt(d)
        a = a.masked_fill(~mask[:, :, None], float("-inf"))
        c = torch.softmax(a, dim=1).nan_to_num(0.0) * m[:, :, None]  # softmax over the parents of each child
    b = torch.as_tensor(bias, dtype=torch.float64)
    b = b * m if b.dim() == 0 else edge_to_dense(g, b)  # (I, J)
    s = torch.einsum("ijb,ijbd->jbd", (c + b[:, :, None]) * m[:, :, None], u)  # (J, B, D)
    n = torch.linalg.vector_norm(s, dim=-1, keepdim=True)
    v = (1 - 1 / (torch.exp(n) + eps)) * (s / (n + eps))
    coupling = dense_to_edge(g, c).reshape((-1,) + batch_shape)  # (E, *)
    poses = v.reshape((g.num_dst_nodes(),) + batch_shape + (d,))
    return RoutingResult(poses=poses, coupling=coupling, trace=[coupling] if return_trace else None)


def example_self_attention(g, batch, generator):
    """Contract inputs for :func:`~dgl_capsules.routing.self_attention_routing`: float64 votes ``(|E|, batch, 4)``
    and a bias ``(|E|,)``."""
    kw = dict(generator=generator, dtype=torch.float64)
    return torch.randn(g.num_edges(), batch, 4, **kw), 0.3 * torch.randn(g.num_edges(), **kw)


# ---------------------------------------------------------------------------
# Vector routing (Heinsen 2022): dense reference and contract inputs
# ---------------------------------------------------------------------------

__all__ += ["reference_vector", "example_vector"]


def _dense_layer_norm(y, eps=1e-5, weight=None, bias=None):
    """LayerNorm over the last dim written out: ``(y - mean) / sqrt(biased variance + eps)``, then the affine."""
    mean = y.mean(-1, keepdim=True)
    var = ((y - mean) ** 2).mean(-1, keepdim=True)
    out = (y - mean) / torch.sqrt(var + eps)
    return out * (1 if weight is None else weight) + (0 if bias is None else bias)


def _dense_pairs(g, v, n_samples):
    """A per-edge scalar (number, ``()``, ``(|E|,)`` or ``(|E|, *)``) as ``()`` or ``(1 | B, I, J)``."""
    v = torch.as_tensor(v, dtype=torch.float64)
    if v.dim() == 0:
        return v
    dense = edge_to_dense(g, v.reshape(v.shape[0], -1))  # (I, J, 1 | B)
    return dense.permute(2, 0, 1)


def reference_vector(g, x, a, beta_use, beta_ign, w_f1, w_f2, b_f2, w_g1, w_g2, b_g2, w_s=1.0, b_s=0.0,
                     n_iters=2, normalize=True, return_trace=False):
    r"""Heinsen 2022, Algorithm 1 with the published class's choices of A, F, G and S, written densely.

    Same inputs and result as :func:`~dgl_capsules.routing.vector_routing`. The
    votes :math:`V_{ij} = (\tilde x_i \odot w^{F1}_j) W^{F2} + b^{F2}_j` are
    formed in full, ``(B, I, J, D_out)``, with :math:`\tilde x_i = x_i / \sqrt{n_i}`
    and :math:`n_i` the children of the part of ``g`` (a :func:`dgl.batch`)
    holding child :math:`i`; the softmax over the parents is a masked
    softmax over ``(I, J)`` arrays. No DGL kernels.
    """
    from .routing import RoutingResult

    mask = dense_mask(g)  # (I, J)
    m = mask.to(torch.float64)
    n_src, n_dst = m.shape
    batch, d_in = tuple(x.shape[1:-1]), x.shape[-1]
    X = x.reshape(n_src, -1, d_in).transpose(0, 1)  # (B, I, D_in)
    n_b = X.shape[0]
    f_a = torch.sigmoid(a.reshape(n_src, -1).T)[..., None]  # (B, I, 1)
    counts = g.batch_num_nodes(g.srctypes[0]).long()
    n = torch.repeat_interleave(counts, counts).to(torch.float64)  # (I,)
    V = torch.einsum("bid,jd,dh->bijh", X / n.sqrt()[:, None], w_f1, w_f2) + b_f2  # (B, I, J, D_out)
    WS, BS, BU, BI = (_dense_pairs(g, v, n_b) for v in (w_s, b_s, beta_use, beta_ign))

    def norm(y):
        return y if y.shape[-1] == 1 else _dense_layer_norm(y)

    Rs = []
    for t in range(n_iters):
        if t == 0:
            R = (m / m.sum(1, keepdim=True)).nan_to_num(0.0).expand(n_b, -1, -1)  # (B, I, J)
        else:
            P = (norm(x_out) @ w_g1) * w_g2 + b_g2  # (B, J, D_in)
            S = torch.nn.functional.logsigmoid(torch.einsum("bid,bjd->bij", X, P) * WS + BS)
            R = torch.softmax(S.masked_fill(~mask, float("-inf")), dim=2).nan_to_num(0.0)
        Rs.append(R)
        D_use = f_a * R
        D_ign = f_a * m - D_use
        phi = (BU * D_use - BI * D_ign) * m  # (B, I, J)
        x_out = torch.einsum("bij,bijh->bjh", phi, V)  # (B, J, D_out)
    if normalize:
        x_out = norm(x_out)
    src, dst = g.edges()

    def edges(c):  # (B, I, J) -> (E, *)
        return c[:, src.long(), dst.long()].T.reshape((-1,) + batch)

    poses = x_out.transpose(0, 1).reshape((n_dst,) + batch + x_out.shape[-1:])
    trace = [edges(c) for c in Rs]
    return RoutingResult(poses=poses, coupling=trace[-1], trace=trace if return_trace else None)


def example_vector(g, batch, generator):
    """Float64 inputs of :func:`~dgl_capsules.routing.vector_routing` on ``g`` (``D_in = D_out = 3``)."""
    kw = dict(generator=generator, dtype=torch.float64)
    n_src, n_dst, n_edges, d = g.num_src_nodes(), g.num_dst_nodes(), g.num_edges(), 3
    return (
        torch.randn(n_src, batch, d, **kw), torch.randn(n_src, batch, **kw),  # x, a
        torch.randn(n_edges, **kw), torch.randn(n_edges, **kw),  # beta_use, beta_ign
        torch.randn(n_dst, d, **kw), torch.randn(d, d, **kw) / math.sqrt(d), 0.1 * torch.randn(n_dst, d, **kw),
        torch.randn(d, d, **kw) / math.sqrt(d), torch.randn(n_dst, d, **kw), 0.1 * torch.randn(n_dst, d, **kw),
        torch.randn(n_edges, **kw) / math.sqrt(d), 0.1 * torch.randn(n_edges, **kw),  # w_s, b_s
    )


# ---------------------------------------------------------------------------
# Inverted dot-product attention routing (Tsai et al. 2020): dense reference and contract inputs
# ---------------------------------------------------------------------------

__all__ += ["reference_inverted", "example_inverted"]


def reference_inverted(g, votes, weight=None, bias=None, n_iters=2, normalize=True, eps=1e-5, return_trace=False):
    r"""Tsai et al. 2020, Procedure 1 (with the published code's :math:`1/\sqrt{D}`), written densely.

    Same inputs and result as :func:`~dgl_capsules.routing.inverted_routing`:
    votes as ``(B, I, J, D)``, a masked softmax over the parents of every
    child, the LayerNorm written out. No DGL kernels.
    """
    from .routing import RoutingResult

    mask = dense_mask(g)  # (I, J)
    m = mask.to(torch.float64)
    n_dst = m.shape[1]
    batch, d = tuple(votes.shape[1:-1]), votes.shape[-1]
    V = edge_to_dense(g, votes.reshape(votes.shape[0], -1, d)).permute(2, 0, 1, 3)  # (B, I, J, D)
    rs = []
    for t in range(n_iters):
        if t == 0:
            r = (m / m.sum(1, keepdim=True)).nan_to_num(0.0).expand(V.shape[:3])  # (B, I, J)
        else:
            agreement = torch.einsum("bijd,bjd->bij", V, p) / math.sqrt(d)
            r = torch.softmax(agreement.masked_fill(~mask, float("-inf")), dim=2).nan_to_num(0.0)
        rs.append(r)
        p = torch.einsum("bij,bijd->bjd", r * m, V)  # (B, J, D)
        if normalize:
            p = _dense_layer_norm(p, eps, weight, bias)
    src, dst = g.edges()
    trace = [c[:, src.long(), dst.long()].T.reshape((-1,) + batch) for c in rs]
    poses = p.transpose(0, 1).reshape((n_dst,) + batch + (d,))
    return RoutingResult(poses=poses, coupling=trace[-1], trace=trace if return_trace else None)


def example_inverted(g, batch, generator):
    """Float64 inputs of :func:`~dgl_capsules.routing.inverted_routing` on ``g``: votes ``(|E|, batch, 4)``, LayerNorm weight and bias."""
    kw = dict(generator=generator, dtype=torch.float64)
    return (torch.randn(g.num_edges(), batch, 4, **kw), 1 + 0.2 * torch.randn(4, **kw), 0.2 * torch.randn(4, **kw))
