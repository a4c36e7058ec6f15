import numpy as np
import pytest
import torch

from dgl_capsules.data import SmallNORB, read_norb_matrix
from data_files import write_norb_matrix, write_smallnorb


def test_read_norb_matrix_uint8_and_int32(tmp_path):
    a = np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3)
    write_norb_matrix(tmp_path / "a.mat", a, 0x1E3D4C55)
    assert np.array_equal(read_norb_matrix(tmp_path / "a.mat"), a)
    b = np.array([4, 0, 2], dtype="<i4")  # one dimension: three size slots are still written
    write_norb_matrix(tmp_path / "b.mat", b, 0x1E3D4C54)
    got = read_norb_matrix(tmp_path / "b.mat")
    assert got.shape == (3,) and got.tolist() == [4, 0, 2]


def test_smallnorb_splits(tmp_path):
    raw = write_smallnorb(tmp_path, n_train=20, n_test=10, side=8)
    s = SmallNORB(str(tmp_path), image_size=8, val_fraction=0.25)
    assert [len(p) for p in s] == [15, 5, 10]
    assert s.train.images.shape[1:] == (1, 8, 8) and s.train.images.dtype == torch.float32
    assert s.train.labels.dtype == torch.int64 and s.train.n_classes == 5
    assert torch.allclose(s.test.images[:, 0], torch.from_numpy(raw["test"][0][:, 0] / 255.0).float())
    assert torch.equal(s.test.labels, torch.from_numpy(raw["test"][1].astype(np.int64)))
    # train and val are disjoint and together the training file
    x = torch.from_numpy(raw["train"][0][:, 0] / 255.0).float().flatten(1)
    both = torch.cat([s.train.images.flatten(1), s.val.images.flatten(1)])
    idx = [int((x == row).all(1).nonzero()) for row in both]
    assert sorted(idx) == list(range(20))


def test_smallnorb_resizes(tmp_path):
    write_smallnorb(tmp_path, side=8)
    assert SmallNORB(str(tmp_path), image_size=4).test.images.shape == (10, 1, 4, 4)


def test_smallnorb_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        SmallNORB(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="training-dat.mat"):
        SmallNORB(str(tmp_path))
    (tmp_path / "x.mat").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="is not a smallNORB matrix file"):
        read_norb_matrix(tmp_path / "x.mat")
    write_norb_matrix(tmp_path / "y.mat", np.zeros((4, 3, 3), np.uint8), 0x1E3D4C55)
    (tmp_path / "y.mat").write_bytes((tmp_path / "y.mat").read_bytes()[:-4])
    with pytest.raises(ValueError, match="is truncated"):
        read_norb_matrix(tmp_path / "y.mat")
