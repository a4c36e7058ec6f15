"""Scoring trained image models: accuracy, per-sample correctness, and correctness stored compactly.

The per-sample correctness of a run on its test set is what paired tests
between runs (McNemar's test) need; :func:`pack_correct` stores it in a result
JSON as about 1.7 KB of text for 10,000 test digits.

Examples
--------
>>> import torch
>>> right = torch.tensor([True, False, True, True, False, False, True, True, True])
>>> text = pack_correct(right)
>>> bool((unpack_correct(text, 9) == right).all())
True
"""
import base64
import math

import numpy as np
import torch

__all__ = ["accuracy", "correct", "evaluate", "pack_correct", "unpack_correct", "mcnemar"]


def correct(scores, y):
    """Per sample, whether it is classified right: a bool tensor ``(B,)``.

    For labels ``(B,)``, the arg-max score must be the label; for multi-hot
    labels ``(B, K)`` with ``k`` ones, the ``k`` highest scores must be
    exactly those classes (MultiMNIST: both digits right).
    """
    if y.dim() == 1:
        return scores.argmax(1) == y
    k = int(y[0].sum().item())
    top = torch.zeros_like(y).scatter_(1, scores.topk(k, dim=1).indices, 1.0)
    return (top == y).all(1)


def accuracy(scores, y):
    """Fraction of samples classified right (see :func:`correct`).

    Examples
    --------
    >>> import torch
    >>> accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
    0.5
    """
    return correct(scores, y).float().mean().item()


@torch.no_grad()
def evaluate(model, dataset, batch_size=256, per_sample=False):
    """Accuracy of ``model`` on ``dataset`` (eval mode, no decoder masking by labels).

    With ``per_sample=True``, returns the bool tensor of :func:`correct` over the
    whole data set instead.
    """
    was_training = model.training
    model.eval()
    scores = []
    for i in range(0, len(dataset), batch_size):
        x = dataset.images[i:i + batch_size]
        scores.append(model.scores(model(x)))
    model.train(was_training)
    right = correct(torch.cat(scores), dataset.labels)
    return right if per_sample else right.float().mean().item()


def pack_correct(right):
    """A bool tensor ``(N,)`` as base64 text, one bit per sample (see :func:`unpack_correct`)."""
    bits = np.packbits(np.asarray(torch.as_tensor(right).cpu(), dtype=bool))
    return base64.b64encode(bits.tobytes()).decode("ascii")


def unpack_correct(text, n):
    """The bool tensor ``(n,)`` that :func:`pack_correct` stored as ``text``.

    Raises
    ------
    ValueError
        If ``text`` is not base64 of ``ceil(n / 8)`` bytes.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as e:
        raise ValueError(f"text: not the base64 text of pack_correct ({e})") from None
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"text: holds {len(raw)} bytes, expected {(n + 7) // 8} for n = {n} samples")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:n]
    return torch.from_numpy(bits.astype(bool))


def mcnemar(right_a, right_b):
    r"""McNemar's exact test between two classifiers scored on the same samples.

    Only the discordant samples count: ``b`` that A gets right and B wrong,
    ``c`` the other way round. Under the null hypothesis (both are equally
    accurate) each discordant sample is a fair coin, so the two-sided p-value is

    .. math::

        p = \min\Big(1,\; 2 \sum_{k=0}^{\min(b, c)} \binom{b + c}{k} 2^{-(b + c)}\Big).

    Parameters
    ----------
    right_a, right_b : torch.Tensor
        Per-sample correctness ``(N,)`` (bool) of the two classifiers, the same samples in the same order.

    Returns
    -------
    (int, int, float)
        ``b``, ``c`` and the two-sided p-value (1.0 when ``b = c = 0``).

    Raises
    ------
    ValueError
        If the two do not have the same shape ``(N,)``.

    Examples
    --------
    >>> import torch
    >>> a = torch.tensor([True] * 10 + [False] * 2)
    >>> b = torch.tensor([True] * 4 + [False] * 6 + [True] * 2)
    >>> b_, c_, p = mcnemar(a, b)
    >>> b_, c_, round(p, 4)
    (6, 2, 0.2891)
    """
    right_a, right_b = torch.as_tensor(right_a).bool(), torch.as_tensor(right_b).bool()
    if right_a.dim() != 1 or right_a.shape != right_b.shape:
        raise ValueError(f"right_a and right_b must have the same shape (N,); got {tuple(right_a.shape)} and "
                         f"{tuple(right_b.shape)}")
    b = int((right_a & ~right_b).sum())
    c = int((~right_a & right_b).sum())
    n = b + c
    if n == 0:
        return b, c, 1.0
    # the binomial tail in log space: n can be thousands
    log_terms = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
                 for k in range(min(b, c) + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return b, c, min(1.0, 2 * tail)
