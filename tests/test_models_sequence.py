import pytest
import torch

from dgl_capsules.data import motif_sequences
from dgl_capsules.models import SequenceCapsClassifier


def test_ragged_batch_equals_each_sequence_alone():
    model = SequenceCapsClassifier(d_emb=6, n_classes=3, d_inp=5, d_cap=4, n_parts=7).double()
    with torch.no_grad():  # non-zero scores and betas, so that every part of the model matters
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    seqs = [torch.randn(n, 6, dtype=torch.float64) for n in (1, 9, 33, 4)]
    out = model(seqs)
    assert out.scores.shape == (4, 3) and out.poses.shape == out.sigma2.shape == (4, 3, 1, 4)
    for k, s in enumerate(seqs):
        alone = model([s])
        torch.testing.assert_close(out.scores[k], alone.scores[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.poses[k], alone.poses[0], rtol=1e-12, atol=1e-12)
    # Shuffling the tokens of a sequence changes nothing: routing sees a set of tokens.
    perm = torch.randperm(33)
    torch.testing.assert_close(model([seqs[2][perm]]).scores[0], out.scores[2], rtol=1e-12, atol=1e-12)


@pytest.fixture
def one_thread():
    """Tiny ops: threads cost more than they give, and the machine is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_a_few_hundred_steps_lift_accuracy_well_above_chance(one_thread):
    train = motif_sequences(n=1024, seed=0)
    test = motif_sequences(n=256, seed=1)
    model = SequenceCapsClassifier(d_emb=train.vocab.shape[1], n_classes=train.n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = train.batches(32, generator=torch.Generator().manual_seed(0))

    def accuracy():
        with torch.no_grad():
            return (model.scores(model(test.sequences)).argmax(-1) == test.labels).float().mean().item()

    before = accuracy()
    losses = []
    for _ in range(200):
        x, y = next(batches)
        loss = model.loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = accuracy()
    chance = 1 / train.n_classes
    assert before < chance + 0.1
    assert after > chance + 0.45, (before, after)
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])


def test_bad_inputs_are_named():
    model = SequenceCapsClassifier(d_emb=6, n_classes=2)
    with pytest.raises(ValueError, match=r"embs\[1\] must have shape \(n_k, d_emb\) = \(n_k, 6\) with n_k >= 1; got \(4, 5\)"):
        model([torch.randn(3, 6), torch.randn(4, 5)])
    with pytest.raises(ValueError, match=r"embs\[0\] must have shape .*got \(0, 6\)"):
        model([torch.randn(0, 6)])
    with pytest.raises(TypeError, match="embs must be a list of \\(n_k, d_emb\\) tensors"):
        model(torch.randn(3, 6))
    with pytest.raises(ValueError, match="embs must hold at least one sequence"):
        model([])
    with pytest.raises(ValueError, match="n_parts must be a positive integer; got 0"):
        SequenceCapsClassifier(d_emb=6, n_classes=2, n_parts=0)
    assert "d_emb=6, n_classes=2, d_inp=32, d_cap=8, n_parts=16" in repr(model)


def test_routing_returns_both_layers_as_forward_routes_them():
    from dgl_capsules.models import RoutedLayer

    model = SequenceCapsClassifier(d_emb=6, n_classes=3, d_inp=5, d_cap=4, n_parts=7).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    seqs = [torch.randn(n, 6, dtype=torch.float64) for n in (1, 9, 4)]
    parts, classes = model.routing(seqs)
    assert isinstance(parts, RoutedLayer) and [parts.name, classes.name] == ["parts", "classes"]
    assert parts.graph.batch_size == 3 and parts.graph.num_src_nodes() == 14 and parts.graph.num_dst_nodes() == 21
    assert parts.parent_strength.shape == (21, 1) and classes.parent_strength.shape == (3, 3)
    assert parts.child_strength.shape == (14, 1) and classes.child_strength.shape == (7, 3)
    assert parts.routing == classes.routing == "heinsen"
    assert len(parts.result.trace) == model.parts.n_iters and len(classes.result.trace) == model.classes.n_iters
    out = model(seqs)
    torch.testing.assert_close(classes.result.activations.T, out.scores, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(classes.parent_strength, torch.sigmoid(out.scores).T, rtol=1e-12, atol=1e-12)
    for layer in (parts, classes):  # every child's couplings sum to one over its parents
        src, _ = layer.graph.edges()
        coupling = layer.result.coupling
        sums = torch.zeros(layer.graph.num_src_nodes(), *coupling.shape[1:], dtype=coupling.dtype)
        torch.testing.assert_close(sums.index_add(0, src, coupling), torch.ones_like(sums))
