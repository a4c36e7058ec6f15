"""Vector routing layer: a drop-in for the published ``EfficientVectorRouting`` (Heinsen 2022), routed on graphs."""
from numbers import Integral

import dgl
import torch
from torch import nn

from .._checks import check_float_tensor, check_n_iters, check_positive_int, check_tensor
from ..graph import capsule_graph
from ..routing import RoutingResult
from ..routing.vector import sequence_lengths, vector_routing_state

__all__ = ["EfficientVectorRouting"]

_DICT_KEYS = ("a_inp", "V", "pred_x_inp", "S", "R", "D_use", "D_ign", "phi", "x_out")


def _check_flag(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return value


class EfficientVectorRouting(nn.Module):
    r"""Routing of vectors in sequences (Heinsen 2022), a drop-in for the published ``EfficientVectorRouting``.

    The same constructor, attributes, parameter and buffer names and shapes
    (a published ``state_dict`` loads with ``strict=True``), the same
    initialisation drawn in the same order (the same seed gives the same
    parameters), and the same ``forward(x_inp)`` and outputs, ``return_dict``
    included. The routing itself is
    :func:`~dgl_capsules.routing.vector_routing` on a complete
    :func:`~dgl_capsules.capsule_graph` from the ``n`` inputs to the
    ``n_out`` outputs, with

    .. math::

        \tilde x_i = x_i / \sqrt{n}, \quad a_i = \tilde x_i \cdot W^A_i + B^A_i, \quad
        V_{ij} = (\tilde x_i \odot W^{F1}_j) W^{F2} + B^{F2}_j,

        P_j = \big(\mathrm{N}(x^{out}_j) W^{G1}\big) \odot W^{G2}_j + B^{G2}_j, \quad
        S_{ij} = \log f\big((x_i \cdot P_j) W^S_{ij} + B^S_{ij}\big),

    and :math:`\beta^{use}_{ij}, \beta^{ign}_{ij}` learned per pair, or, for a
    variable number of inputs (``n_inp=-1``), computed from :math:`x_i` by
    the linear maps ``compute_beta_use`` / ``compute_beta_ign`` (and
    :math:`W^A, B^A, W^S, B^S` shared by all inputs).

    Beyond the published class:

    - ``forward(x_inp, mask=mask)`` routes every sequence of a padded batch
      on its real inputs alone, as if it were not padded: scaled by its own
      length :math:`n_k` (not the padded one), with the padded inputs taking
      no part in any sum and getting no credit. The published class has no
      mask; its scale counts the padding.
    - :meth:`forward_ragged` routes a list of sequences of different lengths
      in one call on a :func:`dgl.batch` of graphs, without padding.
    - ``return_routing=True`` / ``return_trace=True`` also return the
      :class:`~dgl_capsules.routing.RoutingResult` (couplings :math:`R` on
      the edges of :meth:`graph`).

    Differences from the published code, on purpose: ``return_dict`` with
    ``n_iters=1`` returns ``pred_x_inp = S = None`` (no E-step ran) where the
    published class raises ``UnboundLocalError``; ``R`` in the dict always has
    the shape ``(..., n_inp, n_out)``; ``memory_efficient=False`` only adds the
    votes ``V`` to the dict (the routing never forms them, whatever the flag:
    the results are the same). The input decides the dtype (float32 or
    float64) and the parameters are cast to it.

    Parameters
    ----------
    n_inp : int
        Number of input vectors, or -1 for any number.
    n_out : int
        Number of output vectors, ``>= 2``.
    d_inp, d_out : int
        Sizes of the input and output vectors.
    n_iters : int
        Routing iterations (2: one data-dependent E-step).
    normalize : bool
        LayerNorm (no affine) the outputs when ``d_out > 1``.
    memory_efficient : bool
        Kept for compatibility; with ``False`` the dict also holds ``V``.
    return_dict : bool
        Return a dict of the final internal state instead of ``x_out``.

    Shape
    -----
    - Input: ``x_inp`` ``(..., n_inp, d_inp)``; ``mask`` ``(..., n_inp)`` bool.
    - Output: ``x_out`` ``(..., n_out, d_out)``, or a dict with ``a_inp``
      ``(..., n_inp)``, ``V`` ``(..., n_inp, n_out, d_out)`` or ``None``,
      ``pred_x_inp`` ``(..., n_out, d_inp)``, ``S``, ``R``, ``D_use``,
      ``D_ign`` and ``phi`` ``(..., n_inp, n_out)`` and ``x_out``. With a
      mask, the entries of padded inputs are 0.

    Examples
    --------
    >>> import torch
    >>> m = EfficientVectorRouting(n_inp=100, n_out=10, d_inp=64, d_out=32)
    >>> m(torch.randn(4, 100, 64)).shape
    torch.Size([4, 10, 32])
    >>> m = EfficientVectorRouting(n_inp=-1, n_out=5, d_inp=16, d_out=8)
    >>> m.forward_ragged([torch.randn(n, 16) for n in (3, 30, 12)]).shape
    torch.Size([3, 5, 8])
    """

    #: The registered routing family the layer routes with.
    routing = "vector"

    def __init__(self, n_inp, n_out, d_inp, d_out, n_iters=2, normalize=True, memory_efficient=True,
                 return_dict=False):
        super().__init__()
        if isinstance(n_inp, bool) or not isinstance(n_inp, Integral) or not (n_inp > 0 or n_inp == -1):
            raise ValueError(f"n_inp must be a positive integer, or -1 for a variable number; got {n_inp!r}")
        if isinstance(n_out, bool) or not isinstance(n_out, Integral) or n_out < 2:
            raise ValueError(f"n_out must be an integer >= 2; got {n_out!r}")
        self.n_inp, self.n_out = int(n_inp), int(n_out)
        self.d_inp = check_positive_int("d_inp", d_inp)
        self.d_out = check_positive_int("d_out", d_out)
        self.n_iters = check_n_iters(n_iters)
        self.normalize = _check_flag("normalize", normalize)
        self.memory_efficient = _check_flag("memory_efficient", memory_efficient)
        self.return_dict = _check_flag("return_dict", return_dict)
        n1, j, d, h = max(1, self.n_inp), self.n_out, self.d_inp, self.d_out
        self.register_buffer("CONST_ones_over_n_out", torch.ones(j) / j)
        self.W_A = nn.Parameter(torch.empty(n1, d))
        self.B_A = nn.Parameter(torch.empty(n1))
        self.W_F1 = nn.Parameter(torch.empty(j, d))
        self.W_F2 = nn.Parameter(torch.empty(d, h))
        self.B_F2 = nn.Parameter(torch.empty(j, h))
        self.W_G1 = nn.Parameter(torch.empty(h, d))
        self.W_G2 = nn.Parameter(torch.empty(j, d))
        self.B_G2 = nn.Parameter(torch.empty(j, d))
        self.W_S = nn.Parameter(torch.empty(n1, j))
        self.B_S = nn.Parameter(torch.empty(n1, j))
        if self.n_inp > 0:
            self.beta_use = nn.Parameter(torch.empty(self.n_inp, j))
            self.beta_ign = nn.Parameter(torch.empty(self.n_inp, j))
        else:
            # NOTE: skip_init leaves them uninitialised, so that reset_parameters draws every
            # parameter in the published class's order.
            self.compute_beta_use = nn.utils.skip_init(nn.Linear, d, j)
            self.compute_beta_ign = nn.utils.skip_init(nn.Linear, d, j)
        self.N = nn.LayerNorm(h, elementwise_affine=False) if h > 1 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        r"""The published initialisation, drawn in its order.

        :math:`W^A, W^{F2} \sim \mathcal{N}(0, 4/d_{inp})`; :math:`W^{F1}, W^{G2},
        \beta^{use}, \beta^{ign} \sim \mathcal{N}(0, 1)`; :math:`W^{G1} \sim
        \mathcal{N}(0, 1/d_{out})`; :math:`W^S \sim \mathcal{N}(0, 1/d_{inp})`;
        biases 0; ``compute_beta_*`` as :class:`torch.nn.Linear`.
        """
        d, h = self.d_inp, self.d_out
        with torch.no_grad():
            self.W_A.normal_(std=2.0 * d ** -0.5)
            self.B_A.zero_()
            self.W_F1.normal_()
            self.W_F2.normal_(std=2.0 * d ** -0.5)
            self.B_F2.zero_()
            self.W_G1.normal_(std=h ** -0.5)
            self.W_G2.normal_()
            self.B_G2.zero_()
            self.W_S.normal_(std=d ** -0.5)
            self.B_S.zero_()
            if self.n_inp > 0:
                self.beta_use.normal_()
                self.beta_ign.normal_()
            else:
                self.compute_beta_use.reset_parameters()
                self.compute_beta_ign.reset_parameters()
            self.CONST_ones_over_n_out.fill_(1.0 / self.n_out)

    # ------------------------------------------------------------------ checks
    def _check_x(self, x, name="x_inp", ragged=False):
        """A float32/64 tensor ``(..., n, d_inp)`` (``(n, d_inp)`` for an element of a ragged list)."""
        layout = "(n, d_inp)" if ragged else "(..., n_inp, d_inp)"
        if isinstance(x, dgl.DGLGraph):
            raise TypeError(f"{name} must be a torch.Tensor of shape {layout}; got a DGLGraph (the layer builds "
                            "its own graphs)")
        x = check_float_tensor(name, x, layout)
        ok = (x.dim() == 2 if ragged else x.dim() >= 2) and x.shape[-1] == self.d_inp and x.shape[-2] >= 1
        if ok and self.n_inp > 0:
            ok = x.shape[-2] <= self.n_inp if ragged else x.shape[-2] == self.n_inp
        if not ok:
            n = "n_inp >= 1" if self.n_inp < 0 else (f"n <= n_inp = {self.n_inp}" if ragged else f"n_inp = {self.n_inp}")
            raise ValueError(f"{name} must have shape {layout} with {n} and d_inp = {self.d_inp}; "
                             f"got {tuple(x.shape)}")
        return x

    def _check_mask(self, mask, x):
        check_tensor("mask", mask, "(..., n_inp) bool")
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:-1]):
            raise ValueError(f"mask must be a bool tensor of shape (..., n_inp) = {tuple(x.shape[:-1])}, True for "
                             f"real inputs; got {mask.dtype} {tuple(mask.shape)}")
        counts = mask.reshape(-1, mask.shape[-1]).sum(-1)
        if bool((counts == 0).any()):
            k = int((counts == 0).nonzero()[0])
            raise ValueError(f"mask must keep at least one input of every sequence; sequence {k} (flattened "
                             "leading dims) has none")
        return mask.to(x.device)

    # ------------------------------------------------------------------ graphs
    def graph(self, lengths, device=None):
        """The graph the layer routes on: ``capsule_graph(n, n_out)`` for an int, a :func:`dgl.batch` for a list.

        Parameters
        ----------
        lengths : int or sequence of int
            Inputs of one sequence (every sample of an unmasked batch), or of each sequence.
        device : torch.device or str, optional
            Where the graph lives.
        """
        if isinstance(lengths, Integral):
            return capsule_graph(int(lengths), self.n_out, device=device)
        return dgl.batch([capsule_graph(int(n), self.n_out, device=device) for n in lengths])

    # ----------------------------------------------------------------- routing
    def _params(self, like):
        names = ("W_A", "B_A", "W_F1", "W_F2", "B_F2", "W_G1", "W_G2", "B_G2", "W_S", "B_S")
        return {k: getattr(self, k).to(like.dtype) for k in names}

    def _betas(self, x, pos_src, j, src):
        """Per-edge betas ``(|E|,)``, or ``(|E|, *)`` computed from the inputs when ``n_inp = -1``."""
        if self.n_inp > 0:
            return (self.beta_use.to(x.dtype)[pos_src, j], self.beta_ign.to(x.dtype)[pos_src, j])
        out = []
        for lin in (self.compute_beta_use, self.compute_beta_ign):
            b = nn.functional.linear(x, lin.weight.to(x.dtype), lin.bias.to(x.dtype))  # (N_src, *, n_out)
            out.append(b.movedim(-1, 1)[src, j])  # (E, *)
        return tuple(out)

    def _route(self, g, x, pos, n_parts, return_trace):
        """Route node-layout inputs ``x`` ``(N_src, *, d_inp)``; ``pos`` ``(N_src,)`` is each input's position."""
        p = self._params(x)
        n = sequence_lengths(g).to(x)  # (N_src,)
        lead = (-1,) + (1,) * (x.dim() - 2)
        pos_w = pos if self.n_inp > 0 else torch.zeros_like(pos)
        x_scaled = x * n.rsqrt().view(lead + (1,))  # (N_src, *, d_inp)
        a = (x_scaled * p["W_A"][pos_w].view(lead + (self.d_inp,))).sum(-1) + p["B_A"][pos_w].view(lead)
        src, dst = (e.long() for e in g.edges())
        j = dst % self.n_out  # (E,) output index within its sequence
        pos_src = pos[src] if self.n_inp > 0 else None  # (E,) position of the edge's input
        beta_use, beta_ign = self._betas(x, pos_src, j, src)
        w_s, b_s = (t[pos_src, j] if self.n_inp > 0 else t[0][j] for t in (p["W_S"], p["B_S"]))  # (E,) each
        state = vector_routing_state(
            g, x, a, beta_use, beta_ign, p["W_F1"].repeat(n_parts, 1), p["W_F2"], p["B_F2"].repeat(n_parts, 1),
            p["W_G1"], p["W_G2"].repeat(n_parts, 1), p["B_G2"].repeat(n_parts, 1), w_s, b_s,
            n_iters=self.n_iters, normalize=self.normalize, return_trace=return_trace)
        return state, a, beta_use, beta_ign, x_scaled, p

    def _as_dict(self, g, state, a, beta_use, beta_ign, x_scaled, p, dense, node_out):
        """The published return_dict from the routing's edge and node tensors.

        ``dense(e)`` turns an edge tensor ``(E, *)`` into ``(..., n_inp, n_out)`` (zeros for pads) and
        ``node_out(y)`` a parent tensor ``(N_dst, *, F)`` into ``(..., n_out, F)``.
        """
        f_a = torch.sigmoid(a)[g.edges()[0].long()]  # (E, *)
        d_use = f_a * state.coupling
        d_ign = f_a - d_use
        beta_use, beta_ign = (b.view(b.shape + (1,) * (d_use.dim() - b.dim())) for b in (beta_use, beta_ign))
        out = dict(R=dense(state.coupling), D_use=dense(d_use), D_ign=dense(d_ign),
                   phi=dense(beta_use * d_use - beta_ign * d_ign), x_out=node_out(state.poses),
                   S=None if state.logits is None else dense(state.logits),
                   pred_x_inp=None if state.predicted is None else node_out(state.predicted))
        out["V"] = None
        if not self.memory_efficient:
            out["V"] = torch.einsum("...id,jd,dh->...ijh", x_scaled, p["W_F1"], p["W_F2"]) + p["B_F2"]
        return out

    # ----------------------------------------------------------------- forward
    def forward(self, x_inp, mask=None, return_routing=False, return_trace=False):
        """Route input vectors ``(..., n_inp, d_inp)`` to output vectors ``(..., n_out, d_out)``.

        Parameters
        ----------
        x_inp : torch.Tensor
            Input vectors ``(..., n_inp, d_inp)``.
        mask : torch.Tensor, optional
            ``(..., n_inp)`` bool, True for real inputs: each sequence is routed
            on its real inputs alone, scaled by its own length.
        return_routing : bool
            Also return the :class:`~dgl_capsules.routing.RoutingResult`, on
            ``self.graph(n_inp)`` (batch in dims ``1:``) or, with a mask, on
            ``self.graph(mask.sum(-1).flatten().tolist())``.
        return_trace : bool
            Record the coupling of every iteration (implies ``return_routing``).

        Returns
        -------
        torch.Tensor or dict
            ``x_out`` ``(..., n_out, d_out)``, or the dict if ``return_dict``;
            then the RoutingResult if ``return_routing``.

        Raises
        ------
        TypeError
            If ``x_inp`` is not a float32 / float64 tensor or ``mask`` not a tensor.
        ValueError
            If ``x_inp`` or ``mask`` has the wrong shape, ``mask`` is not bool or
            keeps no input of a sequence.
        """
        x = self._check_x(x_inp)
        return_routing = return_routing or return_trace
        if mask is not None:
            mask = self._check_mask(mask, x)
            lead, n = x.shape[:-2], x.shape[-2]
            flat = mask.reshape(-1, n)
            out, r = self._ragged(x.reshape(-1, n, self.d_inp)[flat], flat, return_trace)
            out = {k: (v if v is None else v.reshape(lead + v.shape[1:])) for k, v in out.items()}
        else:
            out, r = self._dense(x, return_trace)
        result = out if self.return_dict else out["x_out"]
        return (result, r) if return_routing else result

    def _dense(self, x, return_trace):
        """One graph for every sample: the batch dims ``...`` ride along as feature dims."""
        n = x.shape[-2]
        g = self.graph(n, device=x.device)
        xn = x.movedim(-2, 0)  # (n, ..., d_inp)
        pos = torch.arange(n, device=x.device)
        state, a, bu, bi, x_scaled, p = self._route(g, xn, pos, 1, return_trace)
        r = RoutingResult(poses=state.poses, coupling=state.coupling, trace=state.trace)
        if not self.return_dict:
            return dict(x_out=state.poses.movedim(0, -2)), r
        src, dst = (e.long() for e in g.edges())

        def dense(e):  # (E, ...) -> (..., n, n_out)
            m = e.new_zeros((n, self.n_out) + e.shape[1:])
            m[src, dst] = e
            return m.movedim((0, 1), (-2, -1))

        out = self._as_dict(g, state, a, bu, bi, x_scaled.movedim(0, -2), p, dense, lambda y: y.movedim(0, -2))
        out["a_inp"] = a.movedim(0, -1)
        return {k: out[k] for k in _DICT_KEYS}, r

    def _ragged(self, xr, flat, return_trace):
        """Sequences ``k`` of ``n_k`` real inputs ``xr`` ``(sum n_k, d_inp)``; ``flat`` ``(K, n)`` says where they sit."""
        n_parts, n = flat.shape
        counts = flat.sum(-1)
        g = self.graph(counts.tolist(), device=xr.device)
        pos = torch.arange(n, device=xr.device).expand(n_parts, n)[flat]  # (N_src,) position in its sequence
        state, a, bu, bi, x_scaled, p = self._route(g, xr, pos, n_parts, return_trace)
        r = RoutingResult(poses=state.poses, coupling=state.coupling, trace=state.trace)

        def node_out(y):  # (K * n_out, F) -> (K, n_out, F)
            return y.view((n_parts, self.n_out) + y.shape[1:])

        if not self.return_dict:
            return dict(x_out=node_out(state.poses)), r
        sample = torch.arange(n_parts, device=xr.device).repeat_interleave(counts)  # (N_src,)
        src, dst = (e.long() for e in g.edges())

        def dense(e):  # (E,) -> (K, n, n_out), zeros for pads
            m = e.new_zeros(n_parts, n, self.n_out)
            m[sample[src], pos[src], dst % self.n_out] = e
            return m

        def scatter_nodes(y):  # (N_src, *F) -> (K, n, *F), zeros for pads
            m = y.new_zeros((n_parts, n) + y.shape[1:])
            m[sample, pos] = y
            return m

        out = self._as_dict(g, state, a, bu, bi, scatter_nodes(x_scaled), p, dense, node_out)
        if out["V"] is not None:
            out["V"] = out["V"] * flat[..., None, None]
        out["a_inp"] = scatter_nodes(a)
        return {k: out[k] for k in _DICT_KEYS}, r

    def forward_ragged(self, x_inp, return_routing=False, return_trace=False):
        """Route a list of sequences of different lengths in one call, on a :func:`dgl.batch`, without padding.

        ``forward_ragged([x_1, ..., x_K])`` equals ``forward`` of the padded
        batch with its mask, and each ``x_k`` routed alone.

        Parameters
        ----------
        x_inp : sequence of torch.Tensor
            Sequence ``k`` is ``(n_k, d_inp)``; with a fixed ``n_inp``,
            ``n_k <= n_inp`` (the first ``n_k`` positions).
        return_routing, return_trace : bool
            As in :meth:`forward` (the graph is ``self.graph([n_1, ..., n_K])``).

        Returns
        -------
        torch.Tensor or dict
            ``x_out`` ``(K, n_out, d_out)``, or with ``return_dict`` the dict
            of :meth:`forward` for the padded batch ``(K, max n_k, ...)``.

        Raises
        ------
        TypeError, ValueError
            As :meth:`forward`, naming the element (``x_inp[2]``), and for an
            empty list or elements of different dtypes.
        """
        if isinstance(x_inp, torch.Tensor) or not isinstance(x_inp, (list, tuple)) or not x_inp:
            raise TypeError("x_inp must be a non-empty list of tensors (n_k, d_inp); use forward for one tensor")
        xs = [self._check_x(x, f"x_inp[{k}]", ragged=True) for k, x in enumerate(x_inp)]
        if any(x.dtype != xs[0].dtype for x in xs):
            raise TypeError(f"x_inp must hold tensors of one dtype; got {sorted({str(x.dtype) for x in xs})}")
        counts = torch.tensor([len(x) for x in xs], device=xs[0].device)
        n = self.n_inp if self.n_inp > 0 else int(counts.max())
        flat = torch.arange(n, device=counts.device) < counts[:, None]  # (K, n)
        out, r = self._ragged(torch.cat(xs), flat, return_trace)
        result = out if self.return_dict else out["x_out"]
        return (result, r) if (return_routing or return_trace) else result

    def extra_repr(self):
        return ", ".join(f"{k}={getattr(self, k)}" for k in ("n_inp", "n_out", "d_inp", "d_out", "n_iters", "normalize",
                                                              "memory_efficient", "return_dict"))
