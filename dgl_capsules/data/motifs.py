"""Variable-length sequences of embeddings labelled by the motifs planted in them."""
from typing import List, NamedTuple

import torch

from .._checks import check_positive_int

__all__ = ["MotifSequences", "motif_sequences"]


class MotifSequences(NamedTuple):
    """A generated sequence-classification task; see :func:`motif_sequences`."""

    sequences: List[torch.Tensor]  # K tensors (n_k, dim), n_k varies
    labels: torch.Tensor  # (K,) int64 in [0, 2**n_motifs)
    present: torch.Tensor  # (K, n_motifs) bool: which motifs sequence k contains
    motifs: torch.Tensor  # (n_motifs, motif_len) word ids of each motif
    vocab: torch.Tensor  # (vocab_size, dim) the clean word embeddings

    @property
    def n_classes(self):
        return 2 ** self.motifs.shape[0]

    def batches(self, batch_size, generator=None):
        """Yield ``(list of sequences, labels)`` mini-batches in a random order, forever."""
        k = len(self.sequences)
        while True:
            order = torch.randperm(k, generator=generator)
            for start in range(0, k - batch_size + 1, batch_size):
                idx = order[start:start + batch_size].tolist()
                yield [self.sequences[i] for i in idx], self.labels[idx]


def motif_sequences(n=512, n_motifs=2, motif_len=3, vocab_size=40, dim=16, min_len=8, max_len=48,
                    noise=0.1, decoys=1, seed=0, task_seed=0, dtype=torch.float32):
    """Sequences of word embeddings whose label says which planted motifs they contain.

    A vocabulary of ``vocab_size`` random unit "word" vectors is drawn; each of
    ``n_motifs`` motifs is a fixed run of ``motif_len`` distinct words used by
    no other motif. Sequence ``k`` has a length drawn uniformly from
    ``[min_len, max_len]`` and is filled with background words (words of no
    motif); each motif is then planted, as a contiguous run at a random place,
    with probability 1/2, independently. So that no single word gives the
    answer away, ``decoys`` words taken from the motifs are also scattered in
    every sequence (a lone word never completes a motif). Every token is its
    word's vector plus Gaussian noise of scale ``noise``. The label is

    .. math::

        y_k = \\sum_m [\\text{motif } m \\in \\text{sequence } k]\\, 2^m,

    so there are ``2 ** n_motifs`` balanced classes and chance accuracy is
    ``2 ** -n_motifs``.

    Parameters
    ----------
    n : int
        Number of sequences.
    n_motifs, motif_len : int
        Motifs and words per motif.
    vocab_size, dim : int
        Words in the vocabulary and embedding size.
    min_len, max_len : int
        Range of sequence lengths, ``max_len >= min_len >= n_motifs * motif_len + decoys``.
    noise : float
        Scale of the noise added to every token.
    decoys : int
        Motif words placed at random in every sequence.
    seed : int
        Seed of the sequences: a train and a test set of one task differ only in ``seed``.
    task_seed : int
        Seed of the task: the vocabulary and the motifs.

    Returns
    -------
    MotifSequences
        ``sequences`` (a list of ``(n_k, dim)`` tensors), ``labels``,
        ``present``, ``motifs`` and ``vocab``.

    Raises
    ------
    ValueError
        If a size is not a positive integer, the vocabulary is too small for
        the motifs, or ``min_len`` cannot hold all motifs and decoys.

    Examples
    --------
    >>> data = motif_sequences(n=6, n_motifs=2, dim=8, min_len=10, max_len=30)
    >>> len(data.sequences), data.sequences[0].shape[-1], data.n_classes
    (6, 8, 4)
    >>> sorted({s.shape[0] for s in data.sequences}) == sorted({len(s) for s in data.sequences})
    True
    """
    for name, value in [("n", n), ("n_motifs", n_motifs), ("motif_len", motif_len), ("vocab_size", vocab_size),
                        ("dim", dim), ("min_len", min_len), ("max_len", max_len)]:
        check_positive_int(name, value)
    if isinstance(decoys, bool) or not isinstance(decoys, int) or decoys < 0:
        raise ValueError(f"decoys must be a non-negative integer; got {decoys!r}")
    used = n_motifs * motif_len
    if vocab_size <= used:
        raise ValueError(
            f"vocab_size must exceed n_motifs * motif_len = {used} so that background words exist; got {vocab_size}"
        )
    if not used + decoys <= min_len <= max_len:
        raise ValueError(
            f"need n_motifs * motif_len + decoys = {used + decoys} <= min_len <= max_len; "
            f"got min_len={min_len}, max_len={max_len}"
        )
    task = torch.Generator().manual_seed(task_seed)
    vocab = torch.randn(vocab_size, dim, generator=task, dtype=dtype)
    vocab = vocab / vocab.norm(dim=-1, keepdim=True)  # (V, dim)
    words = torch.randperm(vocab_size, generator=task)
    motifs = words[:used].view(n_motifs, motif_len)  # (M, L)
    background = words[used:]
    motif_words = motifs.reshape(-1)

    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=gen)
    present = torch.rand(n, n_motifs, generator=gen) < 0.5  # (K, M)
    sequences = []
    for k in range(n):
        length = int(lengths[k])
        toks = background[torch.randint(len(background), (length,), generator=gen)]  # (n_k,)
        # Non-overlapping places: the motifs and decoys go in a random order into random gaps.
        pieces = [motifs[m] for m in range(n_motifs) if present[k, m]]
        pieces += [motif_words[torch.randint(used, (1,), generator=gen)] for _ in range(decoys)]
        pieces = [pieces[i] for i in torch.randperm(len(pieces), generator=gen).tolist()]
        free = length - sum(len(p) for p in pieces)
        # Choose gap sizes: len(pieces) + 1 non-negative integers summing to free.
        cuts = torch.sort(torch.randint(free + 1, (len(pieces),), generator=gen)).values.tolist()
        pos, prev = 0, 0
        for piece, cut in zip(pieces, cuts):
            pos += cut - prev
            prev = cut
            toks[pos:pos + len(piece)] = piece
            pos += len(piece)
        emb = vocab[toks] + noise * torch.randn(length, dim, generator=gen, dtype=dtype)  # (n_k, dim)
        sequences.append(emb)
    labels = (present.long() * (2 ** torch.arange(n_motifs))).sum(-1)  # (K,)
    return MotifSequences(sequences, labels, present, motifs, vocab)
