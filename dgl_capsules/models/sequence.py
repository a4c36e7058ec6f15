"""A sequence classifier routed by Heinsen routing: tokens -> parts -> classes, ragged batches without padding."""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_positive_int
from ..nn.heinsen import HeinsenRouting
from .registry import RoutedLayer

__all__ = ["SequenceCapsClassifier", "SequenceCapsOutput"]


class SequenceCapsOutput(NamedTuple):
    """What :meth:`SequenceCapsClassifier.forward` returns."""

    scores: torch.Tensor  # (B, n_classes) class score logits
    poses: torch.Tensor  # (B, n_classes, 1, d_cap) class capsules
    sigma2: torch.Tensor  # (B, n_classes, 1, d_cap) their variances


class SequenceCapsClassifier(nn.Module):
    r"""Classify sequences of token embeddings with two Heinsen routings (after Heinsen 2019, SST model).

    Every token embedding :math:`x_t` becomes an input capsule with score
    logit :math:`a_t = w^\top x_t + b` and a :math:`1 \times d_{inp}` pose
    :math:`\mu_t = \operatorname{LayerNorm}(\operatorname{SiLU}(W x_t + c))`.
    A first :class:`~dgl_capsules.nn.HeinsenRouting` with a variable number
    of inputs routes the tokens of each sequence to ``n_parts`` part capsules;
    a second routes the parts to ``n_classes`` class capsules, whose score
    logits :math:`a^{out}` classify the sequence (cross-entropy).

    A batch is a list of sequences of different lengths. The token layers run
    once on all tokens, and the first routing runs once for the whole batch
    on a :func:`dgl.batch` of per-sequence capsule graphs
    (:meth:`~dgl_capsules.nn.HeinsenRouting.forward_ragged`): no padding and
    no masks, each sequence gets what it would get alone.

    It is not in the model registry (:func:`~dgl_capsules.models.get_model`)
    and does not train through :func:`dgl_capsules.train.train`: that loop
    feeds image batches ``(B, C, H, W)`` from an image data set, while this
    model takes a list of token sequences of different lengths (e.g.
    :func:`~dgl_capsules.data.motif_sequences` batches). It has ``loss`` and
    ``scores`` as the image models do, so a short loop of your own trains it
    (see ``tests/test_models_sequence.py``), and :meth:`routing` for the
    pictures of :mod:`dgl_capsules.viz`.

    Parameters
    ----------
    d_emb : int
        Size of the token embeddings.
    n_classes : int
        Number of classes.
    d_inp : int
        Size of the token capsules.
    d_cap : int
        Size of the part and class capsules.
    n_parts : int
        Number of part capsules.
    n_iters : int
        Routing iterations of both routings.
    p_model : {"gaussian", "skm"}
        E-step of both routings.

    Examples
    --------
    >>> import torch
    >>> model = SequenceCapsClassifier(d_emb=16, n_classes=4)
    >>> out = model([torch.randn(n, 16) for n in (5, 40, 12)])
    >>> out.scores.shape, out.poses.shape
    (torch.Size([3, 4]), torch.Size([3, 4, 1, 8]))
    """

    def __init__(self, d_emb, n_classes, d_inp=32, d_cap=8, n_parts=16, n_iters=3, p_model="gaussian"):
        super().__init__()
        self.d_emb = check_positive_int("d_emb", d_emb)
        self.n_classes = check_positive_int("n_classes", n_classes)
        self.d_inp = check_positive_int("d_inp", d_inp)
        self.d_cap = check_positive_int("d_cap", d_cap)
        self.n_parts = check_positive_int("n_parts", n_parts)
        self.token_score = nn.Linear(d_emb, 1)
        self.token_pose = nn.Linear(d_emb, d_inp)
        self.token_norm = nn.LayerNorm(d_inp)
        self.parts = HeinsenRouting(d_cov=1, d_inp=d_inp, d_out=d_cap, n_out=n_parts, n_iters=n_iters,
                                    p_model=p_model)
        self.classes = HeinsenRouting(d_cov=1, d_inp=d_cap, d_out=d_cap, n_inp=n_parts, n_out=n_classes,
                                      n_iters=n_iters, p_model=p_model)
        self.reset_parameters()

    def reset_parameters(self):
        """Kaiming-normal token pose weights and zero biases (as the published SST model); zero token scores,
        so every token starts with :math:`f(a) = 1/2`; the routings keep their own init."""
        nn.init.kaiming_normal_(self.token_pose.weight)
        nn.init.zeros_(self.token_pose.bias)
        nn.init.zeros_(self.token_score.weight)
        nn.init.zeros_(self.token_score.bias)
        self.token_norm.reset_parameters()
        self.parts.reset_parameters()
        self.classes.reset_parameters()

    def _check(self, embs):
        if isinstance(embs, torch.Tensor):
            raise TypeError(
                "embs must be a list of (n_k, d_emb) tensors, one per sequence; for one sequence pass [embs]"
            )
        embs = list(embs)
        if not embs:
            raise ValueError("embs must hold at least one sequence; got an empty list")
        for k, x in enumerate(embs):
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.d_emb or x.shape[0] < 1:
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(
                    f"embs[{k}] must have shape (n_k, d_emb) = (n_k, {self.d_emb}) with n_k >= 1; got {got}"
                )
        return embs

    def forward(self, embs, y=None):
        """Score a batch of sequences.

        Parameters
        ----------
        embs : list of torch.Tensor
            ``B`` sequences of token embeddings ``(n_k, d_emb)``, any lengths.
        y : torch.Tensor, optional
            Ignored; accepted so every model in :mod:`dgl_capsules.models`
            has the same call.

        Returns
        -------
        SequenceCapsOutput
            ``scores`` ``(B, n_classes)`` logits, ``poses`` and ``sigma2``
            ``(B, n_classes, 1, d_cap)``.

        Raises
        ------
        TypeError, ValueError
            If ``embs`` is not a non-empty list of ``(n_k, d_emb)`` tensors.
        """
        lengths, a, mu = self._tokens(embs)
        a_p, mu_p, _ = self.parts.forward_ragged(torch.split(a, lengths), torch.split(mu, lengths))
        a_p, mu_p = torch.stack(a_p), torch.stack(mu_p)  # (B, n_parts), (B, n_parts, 1, d_cap)
        return SequenceCapsOutput(*self.classes(a_p, mu_p))

    def _tokens(self, embs):
        embs = self._check(embs)
        tokens = torch.cat(embs)  # (T, d_emb), all tokens of the batch
        a = self.token_score(tokens).squeeze(-1)  # (T,)
        mu = self.token_norm(F.silu(self.token_pose(tokens))).unsqueeze(-2)  # (T, 1, d_inp)
        return [x.shape[0] for x in embs], a, mu

    def routing(self, embs):
        """Both routings of a batch of sequences, with their traces (what :meth:`forward` computes).

        Returns
        -------
        list of RoutedLayer
            ``"parts"`` on the :func:`dgl.batch` of the per-sequence complete
            ``n_k -> n_parts`` graphs, so the batch lives in the graph and the
            parent strengths are ``(B * n_parts, 1)`` (a batch axis of one);
            ``"classes"`` on the complete ``n_parts -> n_classes`` graph with
            parent strengths ``(n_classes, B)``. Strengths are activation
            probabilities (sigmoid of the score logits) of parents and children.

        Examples
        --------
        >>> model = SequenceCapsClassifier(d_emb=16, n_classes=4, n_parts=6)
        >>> parts, classes = model.routing([torch.randn(n, 16) for n in (5, 40, 12)])
        >>> parts.graph.num_dst_nodes(), parts.parent_strength.shape, classes.parent_strength.shape
        (18, torch.Size([18, 1]), torch.Size([4, 3]))
        """
        lengths, a, mu = self._tokens(embs)
        # NOTE: every sequence gets a batch axis of one: the sequences live in the graph.
        a_p, mu_p, _, r = self.parts.forward_ragged([t[None] for t in torch.split(a, lengths)],
                                                    [t[None] for t in torch.split(mu, lengths)], return_trace=True)
        g, _ = self.parts.ragged_graph(lengths, device=a.device)
        parts = RoutedLayer.of("parts", g, r, self.parts.routing, a_in=a[:, None])  # (T, 1)
        a_p, mu_p = torch.cat(a_p), torch.cat(mu_p)  # (B, n_parts), (B, n_parts, 1, d_cap)
        *_, r = self.classes(a_p, mu_p, return_trace=True)
        classes = RoutedLayer.of("classes", self.classes.graph(device=a.device), r, self.classes.routing, a_in=a_p.T)
        return [parts, classes]

    def loss(self, out, y, step=None):
        """Cross-entropy of the class score logits against labels ``y`` ``(B,)``."""
        return F.cross_entropy(out.scores, y)

    def scores(self, out):
        """Class scores ``(B, n_classes)``: the logits :math:`a^{out}`."""
        return out.scores

    def extra_repr(self):
        return (
            f"d_emb={self.d_emb}, n_classes={self.n_classes}, d_inp={self.d_inp}, d_cap={self.d_cap}, "
            f"n_parts={self.n_parts}"
        )
