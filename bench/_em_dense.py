"""EM routing per receptive field, written densely: "what a user would run instead" of the graph.

Public PyTorch implementations of matrix capsules route a convolutional
capsule layer patch by patch: unfold the child grid into ``Ho * Wo``
receptive fields of ``kernel * kernel * A`` children, compute their votes for
the ``C`` parent types of that position, and run Procedure 1 of Hinton et al.
(2018) on every patch on its own, as a batch of small complete child x parent
problems. A child in overlapping fields then takes part in several
independent routings, each with its full vote mass (no normalisation over all
of its parents, unlike :func:`dgl_capsules.routing.em_routing` on the exact
convolutional graph). This module writes that formulation from the paper's
equations, for the benchmarks only; it uses the weights of our
:class:`~dgl_capsules.nn.ConvCaps` / :class:`~dgl_capsules.nn.ClassCaps`
layers, so the same network runs either way.
"""
import math
import types

import torch
import torch.nn.functional as F

_LOG_2PI = math.log(2 * math.pi)


def dense_em(V, a, beta_u, beta_a, lambdas, eps=1e-6):
    """Procedure 1 on independent complete problems.

    V: (N, I, J, P) votes of I children for J parents in each of N problems; a: (N, I) child
    activations; beta_u, beta_a: (J,). Returns mu (N, J, P) and the parent activations (N, J).
    """
    n, i, j, p = V.shape
    R = V.new_full((n, i, j), 1.0 / j)
    a = a.unsqueeze(-1)  # (N, I, 1)
    tiny = torch.finfo(V.dtype).tiny
    for t, lam in enumerate(lambdas):
        Rp = R * a  # (N, I, J)
        S = Rp.sum(1).clamp_min(tiny)  # (N, J)
        mu = torch.einsum("nij,nijp->njp", Rp, V) / S[..., None]  # (N, J, P)
        sq = (V - mu[:, None]).square()  # (N, I, J, P)
        sigma2 = torch.einsum("nij,nijp->njp", Rp, sq) / S[..., None] + eps
        log_sigma2 = sigma2.log()
        logit = lam * (beta_a - S * (p * beta_u + 0.5 * log_sigma2.sum(-1)))  # (N, J)
        act = torch.sigmoid(logit)
        if t + 1 == len(lambdas):
            break
        node = F.logsigmoid(logit) - 0.5 * (log_sigma2 + _LOG_2PI).sum(-1)  # (N, J)
        logp = torch.einsum("nijp,njp->nij", sq, -0.5 / sigma2) + node[:, None]  # (N, I, J)
        R = torch.softmax(logp, dim=2)
    return mu, act


def _lambdas(layer):
    if layer.inverse_temperatures is not None:
        return layer.inverse_temperatures[: layer.n_iters]
    return [0.01 * (1 - 0.95 ** t) for t in range(1, layer.n_iters + 1)]


def conv_caps_forward(self, poses, activations, return_routing=False, return_trace=False):
    """ConvCaps.forward routed patch by patch: unfold, votes per patch, EM per patch."""
    b = poses.shape[0]
    k, s, n_a, n_c = self.kernel, self.stride, self.in_types, self.out_types
    patches = poses.unfold(1, k, s).unfold(2, k, s)  # (B, Ho, Wo, A, 4, 4, ky, kx)
    ho, wo = patches.shape[1:3]
    patches = patches.permute(0, 1, 2, 6, 7, 3, 4, 5).reshape(b * ho * wo, k * k * n_a, 1, 4, 4)
    acts = activations.unfold(1, k, s).unfold(2, k, s)  # (B, Ho, Wo, A, ky, kx)
    acts = acts.permute(0, 1, 2, 4, 5, 3).reshape(b * ho * wo, k * k * n_a)
    weight = self.weight.view(k * k * n_a, n_c, 4, 4)
    V = torch.matmul(patches, weight).flatten(-2)  # (N, kkA, C, 16)
    mu, act = dense_em(V, acts, self.beta_u, self.beta_a, _lambdas(self), self.eps)
    return mu.reshape(b, ho, wo, n_c, 4, 4), act.reshape(b, ho, wo, n_c)


def class_caps_forward(self, poses, activations, return_routing=False, return_trace=False):
    """ClassCaps.forward with the dense complete problem per sample (coordinate addition as ours)."""
    b, h, w = poses.shape[:3]
    n_a, n_k = self.in_types, self.n_classes
    weight = self.weight.view(n_a, n_k, 4, 4)
    V = torch.matmul(poses.reshape(b, h * w, n_a, 1, 4, 4), weight)  # (B, HW, A, K, 4, 4)
    if self.coord_add:
        offset = V.new_zeros(h, w, 4, 4)
        offset[:, :, 0, 3] = (torch.arange(w, dtype=V.dtype) + 0.5) / w
        offset[:, :, 1, 3] = ((torch.arange(h, dtype=V.dtype) + 0.5) / h)[:, None]
        V = V + offset.view(1, h * w, 1, 1, 4, 4)
    V = V.reshape(b, h * w * n_a, n_k, 16)
    mu, act = dense_em(V, activations.reshape(b, -1), self.beta_u, self.beta_a, _lambdas(self), self.eps)
    return mu.reshape(b, n_k, 4, 4), act


def make_dense(net):
    """Switch a MatrixCapsNet's routed layers to per-patch dense EM (this instance only)."""
    net.caps1.forward = types.MethodType(conv_caps_forward, net.caps1)
    net.caps2.forward = types.MethodType(conv_caps_forward, net.caps2)
    net.classes.forward = types.MethodType(class_caps_forward, net.classes)
    return net
