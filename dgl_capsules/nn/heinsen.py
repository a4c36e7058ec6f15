"""Heinsen routing layer: a drop-in for the published 2019 ``Routing`` class, plus ragged batches."""
from numbers import Integral

import dgl
import torch
from torch import nn

from .._checks import check_eps, check_float_tensor, check_n_iters, check_positive_int
from ..graph import capsule_graph
from ..routing.heinsen import check_p_model, heinsen_routing

__all__ = ["HeinsenRouting"]


def _check_count(name, value):
    """A capsule count: a positive integer, or -1 for "any number"."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not (value > 0 or value == -1):
        raise ValueError(f"{name} must be a positive integer, or -1 for a variable count; got {value!r}")
    return int(value)


class HeinsenRouting(nn.Module):
    r"""Routing layer of Heinsen (2019), "An Algorithm for Routing Capsules in All Domains".

    A drop-in replacement for the official ``Routing`` class: the same
    constructor, forward signature, outputs, parameter names and shapes, and
    the ``CONST_one`` buffer, so its example code runs unchanged and a
    ``state_dict`` it saved loads with ``strict=True``. The routing itself is
    :func:`~dgl_capsules.routing.heinsen_routing` on a complete
    :func:`~dgl_capsules.capsule_graph`, the batch in the feature dimensions.

    Input capsule :math:`i` (a :math:`d_{cov} \times d_{inp}` matrix
    :math:`\mu_i` with score logit :math:`a_i`) votes for output capsule
    :math:`j` with

    .. math::

        V_{ij} = \mu_i W_{ij} + B_{ij},

    where :math:`W_{ij}` is :math:`d_{inp} \times d_{out}`. A count that is
    not fixed (``-1``) shares one ``W``, ``B`` and beta across that axis. When
    ``n_out`` is not fixed, output :math:`j` of :math:`n` also gets
    :math:`B^{brk} (-1 + 2j / (n - 1))` (``torch.linspace(-1, 1, n)``) added
    to its votes, so outputs that share all their parameters can differ.

    Beyond the published layer, :meth:`forward_ragged` routes a list of inputs
    with different numbers of capsules (sequences of different lengths) in one
    call on a :func:`dgl.batch` of capsule graphs, without padding, and gives
    what :meth:`forward` gives for each of them; and both return the
    :class:`~dgl_capsules.routing.RoutingResult` with ``return_routing=True``
    (its trace with ``return_trace=True``), as every capsule layer does.

    Parameters
    ----------
    d_cov : int
        First dimension of input and output capsules.
    d_inp, d_out : int
        Second dimension of input and output capsules.
    n_inp : int
        Number of input capsules, or -1 to accept any number.
    n_out : int
        Number of output capsules, or -1: then ``forward`` takes ``n_out=``
        and defaults to the number of input capsules.
    n_iters : int
        Routing iterations.
    single_beta : bool
        Use one parameter for ``beta_use`` and ``beta_ign``.
    p_model : {"gaussian", "skm"}
        Gaussian mixture or soft k-means scoring in the E-step.
    eps : float
        Small positive number for numerical stability.

    Attributes
    ----------
    W : torch.nn.Parameter
        ``(n_inp or 1, n_out or 1, d_inp, d_out)``.
    B : torch.nn.Parameter
        ``(n_inp or 1, n_out or 1, d_cov, d_out)``.
    B_brk : torch.nn.Parameter
        ``(1, d_cov, d_out)``, only when ``n_out`` is not fixed.
    beta_use, beta_ign : torch.nn.Parameter
        ``(n_inp or 1, n_out or 1)``; the same object when ``single_beta``.

    Shape
    -----
    - Input: ``a_inp`` ``(..., n_inp)`` score logits and ``mu_inp``
      ``(..., n_inp, d_cov, d_inp)`` capsules, any number of leading dims.
    - Output: ``a_out`` ``(..., n_out)`` score logits, ``mu_out`` and
      ``sig2_out`` ``(..., n_out, d_cov, d_out)``, and with ``return_R=True``
      the routing probabilities ``R`` ``(..., n_inp, n_out)``; with
      ``return_routing=True`` the routing result last (couplings ``(|E|, ...)``
      on :meth:`graph`, the leading dims after the edges).

    Examples
    --------
    >>> import torch
    >>> m = HeinsenRouting(d_cov=4, d_inp=4, d_out=4, n_inp=100, n_out=10)
    >>> a_out, mu_out, sig2_out = m(torch.randn(100), torch.randn(100, 4, 4))
    >>> a_out.shape, mu_out.shape, sig2_out.shape
    (torch.Size([10]), torch.Size([10, 4, 4]), torch.Size([10, 4, 4]))

    Three sequences of different lengths in one call:

    >>> m = HeinsenRouting(d_cov=1, d_inp=16, d_out=8, n_out=5)
    >>> lengths = [3, 30, 12]
    >>> a_out, mu_out, sig2_out = m.forward_ragged([torch.randn(n) for n in lengths],
    ...                                            [torch.randn(n, 1, 16) for n in lengths])
    >>> [a.shape for a in a_out], mu_out[1].shape
    ([torch.Size([5]), torch.Size([5]), torch.Size([5])], torch.Size([5, 1, 8]))
    """

    #: The registered routing family the layer routes with.
    routing = "heinsen"

    def __init__(self, d_cov, d_inp, d_out, n_inp=-1, n_out=-1, n_iters=3, single_beta=False,
                 p_model="gaussian", eps=1e-5):
        super().__init__()
        self.d_cov = check_positive_int("d_cov", d_cov)
        self.d_inp = check_positive_int("d_inp", d_inp)
        self.d_out = check_positive_int("d_out", d_out)
        self.n_inp = _check_count("n_inp", n_inp)
        self.n_out = _check_count("n_out", n_out)
        self.n_iters = check_n_iters(n_iters)
        self.single_beta = bool(single_beta)
        self.p_model = check_p_model(p_model)
        self.eps = check_eps(eps)
        self.n_inp_is_fixed, self.n_out_is_fixed = self.n_inp > 0, self.n_out > 0
        i, j = max(1, self.n_inp), max(1, self.n_out)
        # The published layer keeps this buffer; it is part of its state_dict.
        self.register_buffer("CONST_one", torch.tensor(1.0))
        self.W = nn.Parameter(torch.empty(i, j, self.d_inp, self.d_out))
        self.B = nn.Parameter(torch.empty(i, j, self.d_cov, self.d_out))
        if not self.n_out_is_fixed:
            self.B_brk = nn.Parameter(torch.empty(1, self.d_cov, self.d_out))
        self.beta_use = nn.Parameter(torch.empty(i, j))
        # NOTE: with single_beta the one Parameter is registered under both names,
        # so the state_dict has both keys, as the published layer's has.
        self.beta_ign = self.beta_use if self.single_beta else nn.Parameter(torch.empty(i, j))
        self.reset_parameters()

    def reset_parameters(self):
        r"""Initialise as the published layer: :math:`W \sim \mathcal{N}(0, 1/d_{inp}^2)`; ``B``, ``B_brk`` and betas zero."""
        with torch.no_grad():
            self.W.normal_().div_(self.d_inp)
        nn.init.zeros_(self.B)
        if not self.n_out_is_fixed:
            nn.init.zeros_(self.B_brk)
        nn.init.zeros_(self.beta_use)
        nn.init.zeros_(self.beta_ign)
        self.CONST_one.fill_(1.0)

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, a, mu, a_name="a_inp", mu_name="mu_inp"):
        """Validate one input pair; returns (a, mu, batch dims, number of input capsules).

        ``mu`` decides the dtype (float32 or float64); ``a`` is cast to it.
        """
        if isinstance(a, dgl.DGLGraph):
            raise TypeError(
                f"{a_name} must be a torch.Tensor of shape (..., n_inp); got a DGLGraph: HeinsenRouting builds "
                "its own graphs, call it as layer(a_inp, mu_inp)"
            )
        mu = check_float_tensor(mu_name, mu, "(..., n_inp, d_cov, d_inp)")
        if mu.dtype != self.W.dtype:
            raise TypeError(
                f"{mu_name} must have the layer's dtype {self.W.dtype} (convert it, or the layer with "
                f".to({mu.dtype})); got {mu.dtype}"
            )
        a = check_float_tensor(a_name, a, "(..., n_inp)", dtype=mu.dtype)
        if a.dim() < 1:
            raise ValueError(f"{a_name} must have shape (..., n_inp) with at least one dim; got {tuple(a.shape)}")
        n = a.shape[-1]
        if n == 0:
            raise ValueError(
                f"{a_name} must have shape (..., n_inp) with at least one input capsule; got {tuple(a.shape)}"
            )
        if self.n_inp_is_fixed and n != self.n_inp:
            raise ValueError(
                f"{a_name} must have shape (..., n_inp) with n_inp = {self.n_inp} input capsules, fixed at "
                f"construction; got {tuple(a.shape)}"
            )
        expected = tuple(a.shape) + (self.d_cov, self.d_inp)
        if tuple(mu.shape) != expected:
            raise ValueError(
                f"{mu_name} must have shape (..., n_inp, d_cov, d_inp) = {expected} to match {a_name} of shape "
                f"{tuple(a.shape)}, d_cov = {self.d_cov} and d_inp = {self.d_inp}; got {tuple(mu.shape)}"
            )
        return a, mu, tuple(a.shape[:-1]), n

    def _n_out_for(self, n, n_out):
        if self.n_out_is_fixed:
            if n_out is not None:
                raise ValueError(
                    f"n_out was fixed to {self.n_out} at construction; do not pass n_out to forward "
                    f"(got n_out={n_out!r})"
                )
            return self.n_out
        if n_out is None:
            return n
        return check_positive_int("n_out", n_out)

    # ------------------------------------------------------------------- graph
    def graph(self, n_inp=None, n_out=None, device=None):
        """The complete ``n_inp -> n_out`` capsule graph the layer routes on (a view of the cached one).

        Parameters
        ----------
        n_inp : int, optional
            Number of input capsules; defaults to the count fixed at construction.
        n_out : int, optional
            Number of output capsules when not fixed at construction (default: ``n_inp``).
        device : torch.device or str, optional
            Where the graph lives (default: the CPU).

        Returns
        -------
        dgl.DGLGraph
            :func:`~dgl_capsules.capsule_graph` ``(n_inp, n_out)``.

        Raises
        ------
        ValueError
            If ``n_inp`` is missing while not fixed, differs from the fixed count, or ``n_out`` is
            passed although fixed.
        """
        if n_inp is None:
            if not self.n_inp_is_fixed:
                raise ValueError("n_inp must be given: the layer takes any number of input capsules")
            n_inp = self.n_inp
        n_inp = check_positive_int("n_inp", n_inp)
        if self.n_inp_is_fixed and n_inp != self.n_inp:
            raise ValueError(f"n_inp must be {self.n_inp}, fixed at construction; got {n_inp}")
        return capsule_graph(n_inp, self._n_out_for(n_inp, n_out), device=device)

    # ------------------------------------------------------------------- votes
    def _routing_inputs(self, g, mu, n_out_per):
        """Votes ``(|E|, *, d_cov, d_out)`` and per-edge betas on graph ``g``.

        ``mu`` is ``(*, N_src, d_cov, d_inp)`` with the input capsules of every
        part of ``g`` concatenated; ``n_out_per`` gives each part's outputs.
        """
        src, dst = g.edges()
        if self.n_inp_is_fixed:
            # Every part has n_inp inputs: W_ij depends on the local input index.
            k = mu.shape[-3] // self.n_inp
            mu_k = mu.unflatten(-3, (k, self.n_inp))  # (*, K, n_inp, C, D)
            u = torch.einsum("...kicd,ijdh->...kijch", mu_k, self.W) + self.B  # (*, K, n_inp, J, C, H)
            u = u.flatten(-5, -4)  # (*, N_src, J, C, H)
            i_w = src % self.n_inp  # (E,) local input index
        else:
            u = torch.einsum("...icd,jdh->...ijch", mu, self.W[0]) + self.B[0]  # (*, N_src, J, C, H)
            i_w = torch.zeros_like(src)
        n_j = u.shape[-3]
        j_w = dst % self.n_out if self.n_out_is_fixed else torch.zeros_like(dst)  # (E,) local output index
        u = u.movedim((-4, -3), (0, 1)).flatten(0, 1)  # (N_src * J, *, C, H)
        row = src * n_j + j_w  # (E,) the row of u that edge e reads
        if u.shape[0] == len(row) and torch.equal(row, torch.arange(len(row), device=row.device)):
            # NOTE: the edges of g happen to list (i, j) in u's own order (checked, not
            # assumed), so u already is the edge tensor and the gather is skipped.
            votes = u  # (E, *, C, H)
        else:
            votes = u.index_select(0, row)  # (E, *, C, H)
        if not self.n_out_is_fixed:
            # NOTE: B_brk * linspace(-1, 1, n) over the n outputs of each part, looked up per edge.
            lin = torch.cat([self._linspace(m, self.B_brk) for m in n_out_per])  # (N_dst,)
            brk = self.B_brk * lin[dst][:, None, None]  # (E, C, H)
            votes = votes + brk.view(brk.shape[:1] + (1,) * (mu.dim() - 3) + brk.shape[1:])
        return votes, self.beta_use[i_w, j_w], self.beta_ign[i_w, j_w]

    @staticmethod
    def _linspace(m, like):
        return torch.linspace(-1, 1, m, device=like.device, dtype=like.dtype)

    def _route(self, g, a, mu, n_out_per, return_trace=False):
        votes, beta_use, beta_ign = self._routing_inputs(g, mu, n_out_per)  # (E, *, C, H), (E,), (E,)
        a = a.movedim(-1, 0)  # (N_src, *)
        return heinsen_routing(g, votes, a, beta_use, beta_ign, n_iters=self.n_iters, eps=self.eps,
                               p_model=self.p_model, return_trace=return_trace)

    @staticmethod
    def _dense_R(g, R, n, m):
        """Edge couplings ``(|E|, *)`` of a complete ``n x m`` graph -> ``(*, n, m)``."""
        src, dst = g.edges()
        out = R.new_zeros((n, m) + R.shape[1:])
        out[src, dst] = R
        return out.movedim((0, 1), (-2, -1))

    # ----------------------------------------------------------------- forward
    def forward(self, a_inp, mu_inp, return_R=False, n_out=None, return_routing=False, return_trace=False):
        """Route input capsules to output capsules.

        Parameters
        ----------
        a_inp : torch.Tensor
            Input score logits ``(..., n_inp)``.
        mu_inp : torch.Tensor
            Input capsules ``(..., n_inp, d_cov, d_inp)``.
        return_R : bool
            Also return the routing probabilities ``R`` ``(..., n_inp, n_out)``.
        n_out : int, optional
            Number of output capsules; only when not fixed at construction
            (default: the number of input capsules).
        return_routing : bool
            Also return the :class:`~dgl_capsules.routing.RoutingResult` on
            :meth:`graph` (couplings ``(|E|, ...)``, the leading dims of
            ``a_inp`` after the edges).
        return_trace : bool
            Record ``R`` of every iteration in that result; implies
            ``return_routing=True``.

        Returns
        -------
        tuple
            ``a_out`` ``(..., n_out)``, ``mu_out`` and ``sig2_out``
            ``(..., n_out, d_cov, d_out)``, ``R`` if ``return_R``, and the
            routing result if ``return_routing`` or ``return_trace``.

        Raises
        ------
        TypeError
            If an input is not a floating-point tensor.
        ValueError
            If ``mu_inp`` does not match ``a_inp`` and the capsule shape, a
            fixed ``n_inp`` gets another count, or ``n_out`` is passed although
            it is fixed.
        """
        a_inp, mu_inp, batch, n = self._check_inputs(a_inp, mu_inp)
        m = self._n_out_for(n, n_out)
        g = self.graph(n, m if not self.n_out_is_fixed else None, device=a_inp.device)
        r = self._route(g, a_inp, mu_inp, [m], return_trace)
        out = (r.activations.movedim(0, -1),  # (..., n_out)
               r.poses.movedim(0, -3), r.sigma2.movedim(0, -3))  # (..., n_out, d_cov, d_out) each
        if return_R:
            out += (self._dense_R(g, r.coupling, n, m),)  # (..., n_inp, n_out)
        return out + (r,) if return_routing or return_trace else out

    def ragged_graph(self, sizes, n_out=None, device=None):
        """The :func:`dgl.batch` of complete ``n_k -> n_out_k`` capsule graphs that :meth:`forward_ragged` routes on.

        Parameters
        ----------
        sizes : sequence of int
            The number of input capsules ``n_k`` of every input.
        n_out : int or sequence of int, optional
            As in :meth:`forward_ragged`.
        device : torch.device or str, optional
            Where the graph lives (default: the CPU).

        Returns
        -------
        (dgl.DGLGraph, list of int)
            The batched graph and the output counts ``n_out_k``.
        """
        if n_out is not None and not isinstance(n_out, Integral) and not self.n_out_is_fixed:
            n_out = list(n_out)
            if len(n_out) != len(sizes):
                raise ValueError(f"n_out must be an int or have one count per input ({len(sizes)}); got {len(n_out)}")
            outs = [self._n_out_for(n, m) for n, m in zip(sizes, n_out)]
        else:
            outs = [self._n_out_for(n, n_out) for n in sizes]
        return dgl.batch([capsule_graph(n, m, device=device) for n, m in zip(sizes, outs)]), outs

    def forward_ragged(self, a_inp, mu_inp, return_R=False, n_out=None, return_routing=False, return_trace=False):
        """Route a list of inputs with different numbers of capsules in one call, without padding.

        ``forward_ragged(a_list, mu_list)`` returns what
        ``[forward(a, mu) for a, mu in zip(a_list, mu_list)]`` returns, as
        lists per output: input ``k`` with ``n_k`` capsules gets its own
        complete ``n_k x n_out`` capsule graph, and all of them are routed
        together as one :func:`dgl.batch`.

        Parameters
        ----------
        a_inp : sequence of torch.Tensor
            Score logits ``(..., n_k)``; every element has the same leading dims.
        mu_inp : sequence of torch.Tensor
            Capsules ``(..., n_k, d_cov, d_inp)``, one per element of ``a_inp``.
        return_R : bool
            Also return the list of ``R`` ``(..., n_k, n_out_k)``.
        n_out : int or sequence of int, optional
            Only when ``n_out`` is not fixed: one count for all inputs, or
            one per input (default: ``n_k``).
        return_routing, return_trace : bool
            Also return the routing result on :meth:`ragged_graph` (and its trace).

        Returns
        -------
        tuple
            ``a_out``, ``mu_out``, ``sig2_out`` (and ``R``), each a list with
            one tensor per input, shaped as :meth:`forward`'s outputs; then
            the routing result if ``return_routing`` or ``return_trace``.

        Raises
        ------
        TypeError, ValueError
            As :meth:`forward`, naming the element (``a_inp[2]``), and if the
            lists are empty, differ in length or in leading dims.
        """
        if isinstance(a_inp, torch.Tensor) or isinstance(mu_inp, torch.Tensor):
            raise TypeError("forward_ragged takes lists of tensors a_inp and mu_inp; use forward for one tensor")
        a_inp, mu_inp = list(a_inp), list(mu_inp)
        if not a_inp or len(a_inp) != len(mu_inp):
            raise ValueError(
                f"a_inp and mu_inp must be non-empty lists of the same length; got {len(a_inp)} and {len(mu_inp)}"
            )
        sizes = []
        for k, (a, mu) in enumerate(zip(a_inp, mu_inp)):
            a_inp[k], mu_inp[k], batch, n = self._check_inputs(a, mu, f"a_inp[{k}]", f"mu_inp[{k}]")
            if k and batch != batch0:
                raise ValueError(
                    f"a_inp[{k}] must have the leading dims {batch0} of a_inp[0]; got shape {tuple(a.shape)}"
                )
            batch0 = batch
            sizes.append(n)
        g, outs = self.ragged_graph(sizes, n_out, device=a_inp[0].device)
        r = self._route(g, torch.cat(a_inp, -1), torch.cat(mu_inp, -3), outs, return_trace)
        out = ([x.movedim(0, -1) for x in torch.split(r.activations, outs)],
               [x.movedim(0, -3) for x in torch.split(r.poses, outs)],
               [x.movedim(0, -3) for x in torch.split(r.sigma2, outs)])
        if return_R:
            parts = dgl.unbatch(g)
            couplings = torch.split(r.coupling, [p.num_edges() for p in parts])
            out += ([self._dense_R(p, c, n, m) for p, c, n, m in zip(parts, couplings, sizes, outs)],)
        return out + (r,) if return_routing or return_trace else out

    def extra_repr(self):
        return (
            f"d_cov={self.d_cov}, d_inp={self.d_inp}, d_out={self.d_out}, n_inp={self.n_inp}, "
            f"n_out={self.n_out}, n_iters={self.n_iters}, single_beta={self.single_beta}, "
            f"p_model={self.p_model!r}, eps={self.eps}"
        )
