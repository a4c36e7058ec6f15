"""Per-sample correctness, its compact storage, and McNemar's test."""
from math import comb

import pytest
import torch

from dgl_capsules.evaluation import accuracy, correct, mcnemar, pack_correct, unpack_correct


def test_correct_single_and_multi_label():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.2, 0.0], [0.2, 0.3, 0.5]])
    assert correct(scores, torch.tensor([1, 1, 2])).tolist() == [True, False, True]
    both = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])  # two digits per image
    assert correct(scores, both).tolist() == [True, False, True]
    assert accuracy(scores, torch.tensor([1, 1, 2])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 10000])
def test_pack_correct_round_trips(n):
    right = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.7
    text = pack_correct(right)
    assert len(text) == 4 * (((n + 7) // 8 + 2) // 3)  # base64 of one bit per sample
    assert torch.equal(unpack_correct(text, n), right)


def test_unpack_correct_names_bad_text():
    with pytest.raises(ValueError, match="text: not the base64 text of pack_correct"):
        unpack_correct("not base64!", 8)
    with pytest.raises(ValueError, match=r"text: holds 1 bytes, expected 2 for n = 9 samples"):
        unpack_correct(pack_correct(torch.ones(8, dtype=torch.bool)), 9)


def test_mcnemar_by_hand():
    # 3 discordant one way, 0 the other: p = 2 * (1/2)^3 = 0.25
    a = torch.tensor([True, True, True, True, False])
    b = torch.tensor([False, False, False, True, False])
    assert mcnemar(a, b) == (3, 0, pytest.approx(0.25, rel=1e-12))
    assert mcnemar(b, a) == (0, 3, pytest.approx(0.25, rel=1e-12))
    assert mcnemar(a, a) == (0, 0, 1.0)
    # balanced discordance: p = 1
    assert mcnemar(torch.tensor([True, False]), torch.tensor([False, True]))[2] == 1.0


def test_mcnemar_matches_the_exact_binomial_sum_for_large_counts():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(10000, generator=g) < 0.995, torch.rand(10000, generator=g) < 0.993
    nb, nc, p = mcnemar(a, b)
    n = nb + nc
    want = min(1.0, 2 * sum(comb(n, k) for k in range(min(nb, nc) + 1)) / 2 ** n)
    assert p == pytest.approx(want, rel=1e-9)


def test_mcnemar_refuses_unpaired_inputs():
    with pytest.raises(ValueError, match=r"right_a and right_b must have the same shape \(N,\); got \(3,\) and \(4,\)"):
        mcnemar(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
