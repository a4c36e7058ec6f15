"""Scoring trained models (evaluation.py): per-sample correctness, its compact storage, McNemar's test, the derived
test sets and the data that fits a model."""
from math import comb

import pytest
import torch

from dgl_capsules.data import ImageDataset, Splits, register_dataset, unregister_dataset
from dgl_capsules.evaluation import (
    accuracy, correct, data_for_model, eval_set, mcnemar, pack_correct, unpack_correct,
)


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


SHAPE = dict(in_channels=1, image_size=28, n_classes=10)


def digits(n=20, side=28, channels=1, classes=10):
    ds = ImageDataset(torch.rand(n, channels, side, side), torch.arange(n) % classes, classes)
    return Splits(ds, ds, ds)


@pytest.fixture
def registered():
    """Toy data sets: ``digits20`` (20x20 digits), ``digits36`` (36x36), ``stereo`` (2 channels)."""
    names = {"digits20": digits(side=20), "digits36": digits(side=36), "stereo": digits(channels=2)}
    for name, splits in names.items():
        register_dataset(name, lambda path, s=splits: s, help="a toy data set for the evaluation tests")
    yield
    for name in names:
        unregister_dataset(name)


def test_eval_set_derives_pads_and_names_what_does_not_fit():
    splits = digits()
    assert eval_set("test", splits) is splits.test
    assert eval_set("test", splits, image_size=40).images.shape == (20, 1, 40, 40)
    assert eval_set("affine", splits, image_size=40).images.shape == (20, 1, 40, 40)
    assert eval_set("multi", splits, image_size=40).labels.shape == (20, 10)
    with pytest.raises(ValueError, match=r"^on: the images of the 'affine' test set are 40x40, larger than the "
                                         r"model's input \(28x28\); train it with image_size=40$"):
        eval_set("affine", splits, image_size=28)
    with pytest.raises(ValueError, match=r"^on: unknown evaluation set 'rotated'; expected one of affine, multi, "
                                         r"test"):
        eval_set("rotated", splits)
    pairs = Splits(*[eval_set("multi", splits)] * 3)
    assert eval_set("multi", pairs) is pairs.test  # a model trained on pairs: its own test pairs
    with pytest.raises(ValueError, match="^on: 'affine': the model was trained on MultiMNIST pairs; use test or "
                                         "multi$"):
        eval_set("affine", pairs)


def test_data_for_a_model_is_padded_to_its_input_or_refused_naming_data_and_model(registered):
    sized, native = data_for_model("digits20", SHAPE, model="the capsnet model in run/model.pt")
    assert sized.test.images.shape == (20, 1, 28, 28) and native.test.images.shape == (20, 1, 20, 20)
    with pytest.raises(ValueError, match=r"^data: the images of 'digits36' are 36x36, larger than the input of the "
                                         r"capsnet model in run/model.pt \(28x28\); train it with image_size=36$"):
        data_for_model("digits36", SHAPE, model="the capsnet model in run/model.pt")
    with pytest.raises(ValueError, match=r"^data: 'stereo' has 2-channel images but the cnn model in m.pt takes "
                                         r"1-channel images; give the data it was trained on$"):
        data_for_model("stereo", SHAPE, model="the cnn model in m.pt")
    with pytest.raises(ValueError, match=r"^data: 'digits20' has 10 classes but the model tells 5 apart"):
        data_for_model("digits20", dict(SHAPE, n_classes=5))
