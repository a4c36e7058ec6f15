import pytest
import torch

from dgl_capsules.data import motif_sequences


def test_sequences_hold_exactly_the_planted_motifs():
    data = motif_sequences(n=64, n_motifs=3, motif_len=3, min_len=12, max_len=40, noise=0.0, decoys=1, seed=4)
    assert data.n_classes == 8 and data.labels.shape == (64,)
    lengths = {s.shape[0] for s in data.sequences}
    assert min(lengths) >= 12 and max(lengths) <= 40 and len(lengths) > 5
    words = [torch.cdist(s, data.vocab).argmin(-1).tolist() for s in data.sequences]  # noise 0: exact words
    for k, w in enumerate(words):
        text = ",".join(map(str, w)) + ","
        for m in range(3):
            run = ",".join(map(str, data.motifs[m].tolist())) + ","
            assert (run in text) == bool(data.present[k, m])
        motif_count = sum(x in set(data.motifs.reshape(-1).tolist()) for x in w)
        assert motif_count == 3 * int(data.present[k].sum()) + 1  # the planted motifs and one decoy
    assert torch.equal(data.labels, (data.present.long() * torch.tensor([1, 2, 4])).sum(-1))


def test_seeds_split_task_and_samples():
    a = motif_sequences(n=8, seed=0)
    b = motif_sequences(n=8, seed=1)
    c = motif_sequences(n=8, seed=0)
    assert torch.equal(a.vocab, b.vocab) and torch.equal(a.motifs, b.motifs)
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a.sequences, b.sequences))
    assert all(torch.equal(x, y) for x, y in zip(a.sequences, c.sequences))
    assert not torch.equal(motif_sequences(n=8, task_seed=1).motifs, a.motifs)


def test_classes_are_roughly_balanced_and_batches_cover_the_data():
    data = motif_sequences(n=400, seed=2)
    counts = torch.bincount(data.labels, minlength=4)
    assert (counts > 60).all()
    batches = data.batches(32, generator=torch.Generator().manual_seed(0))
    seqs, labels = next(batches)
    assert len(seqs) == 32 and labels.shape == (32,)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="vocab_size must exceed n_motifs \\* motif_len = 6 .*got 6"):
        motif_sequences(vocab_size=6)
    with pytest.raises(ValueError, match="need n_motifs \\* motif_len \\+ decoys = 7 <= min_len <= max_len; got min_len=5"):
        motif_sequences(min_len=5)
    with pytest.raises(ValueError, match="decoys must be a non-negative integer; got -1"):
        motif_sequences(decoys=-1)
    with pytest.raises(ValueError, match="dim must be a positive integer; got 0"):
        motif_sequences(dim=0)
