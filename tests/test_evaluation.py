"""Scoring trained models (evaluation.py): the derived test sets and the data that fits a model."""
import pytest
import torch

from dgl_capsules.data import ImageDataset, Splits, register_dataset, unregister_dataset
from dgl_capsules.evaluation import data_for_model, eval_set

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
