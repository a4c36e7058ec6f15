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
    with pytest.raises(ValueError, match="is cut short: its header says"):
        read_norb_matrix(tmp_path / "y.mat")


def test_damaged_matrix_files_are_named_with_what_was_expected(tmp_path):
    import gzip

    write_norb_matrix(tmp_path / "y.mat", np.zeros((4, 3, 3), np.uint8), 0x1E3D4C55)
    data = (tmp_path / "y.mat").read_bytes()
    (tmp_path / "head.mat").write_bytes(data[:14])  # 3 dimensions: 8 + 12 header bytes
    with pytest.raises(ValueError, match=r"head.mat is cut short inside its header: 3 dimensions need 20 header "
                                         r"bytes; the file has 14$"):
        read_norb_matrix(tmp_path / "head.mat")
    (tmp_path / "cut.mat.gz").write_bytes(gzip.compress(data)[:12])
    with pytest.raises(ValueError, match=r"cut.mat.gz: gzip data cut short or damaged .*; expected a smallNORB binary "
                                         r"matrix file, gzip-compressed or not$"):
        read_norb_matrix(tmp_path / "cut.mat.gz")
    (tmp_path / "x.mat").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match=r"x.mat is not a smallNORB matrix file \(magic 0x0, ndim 0\); expected a "
                                         r"magic number among 0x1e3d4c55, "):
        read_norb_matrix(tmp_path / "x.mat")
    (tmp_path / "renamed.mat.gz").write_bytes(data)  # uncompressed under a .gz name: read as it is
    assert read_norb_matrix(tmp_path / "renamed.mat.gz").shape == (4, 3, 3)


# ---------------------------------------------------------------- viewpoints: the -info.mat files and the splits
from dgl_capsules.data.smallnorb import smallnorb_metadata  # noqa: E402
from dgl_capsules.data.viewpoints import FAMILIAR_AZIMUTHS, ViewpointSplits  # noqa: E402
from dgl_capsules.data import Splits  # noqa: E402

STEMS = {"train": "smallnorb-5x46789x9x18x6x2x96x96-training", "test": "smallnorb-5x01235x9x18x6x2x96x96-testing"}


def write_info(root, n_train, n_test, rng_seed=0):
    """Info files for the sets write_smallnorb wrote: every (elevation, azimuth, lighting) drawn at random,
    instances 4, 6, 7, 8, 9 in training and 0, 1, 2, 3, 5 in testing as in smallNORB."""
    rng = np.random.default_rng(rng_seed)
    out = {}
    for part, n, instances in (("train", n_train, [4, 6, 7, 8, 9]), ("test", n_test, [0, 1, 2, 3, 5])):
        info = np.stack([rng.choice(instances, n), np.arange(n) % 9, 2 * (np.arange(n) % 18),
                         rng.integers(0, 6, n)], 1).astype("<i4")
        write_norb_matrix(root / f"{STEMS[part]}-info.mat", info, 0x1E3D4C54)
        out[part] = info
    return out


def test_smallnorb_metadata_units():
    m = smallnorb_metadata(np.array([[4, 0, 0, 5], [9, 8, 34, 0], [0, 3, 18, 2]], dtype="<i4"))
    assert m["azimuth"].tolist() == [0, 340, 180]  # stored as 0, 2, ..., 34: tens of degrees
    assert m["elevation"].tolist() == [30, 70, 45]  # index 0..8: 30 to 70 degrees in steps of 5
    assert m["lighting"].tolist() == [5, 0, 2] and m["instance"].tolist() == [4, 9, 0]
    assert all(v.dtype == np.int64 for v in m.values())


def test_smallnorb_metadata_errors():
    with pytest.raises(ValueError, match=r"info must be an integer array of shape \(N, 4\)"):
        smallnorb_metadata(np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError, match=r"info azimuth column must be in 0, 2, \.\.\., 34; got 3"):
        smallnorb_metadata([[0, 0, 3, 0]])
    with pytest.raises(ValueError, match="info elevation column must be in 0..8; got 9"):
        smallnorb_metadata([[0, 9, 0, 0]])
    with pytest.raises(ValueError, match="info lighting column must be in 0..5; got 6"):
        smallnorb_metadata([[0, 0, 0, 6]])


@pytest.mark.parametrize("split", ["azimuth", "elevation"])
def test_smallnorb_viewpoint_splits(tmp_path, split):
    raw = write_smallnorb(tmp_path, n_train=72, n_test=54, side=8)
    info = write_info(tmp_path, 72, 54)
    s = SmallNORB(str(tmp_path), image_size=8, val_fraction=0.25, split=split, stereo=True)
    assert isinstance(s, ViewpointSplits) and isinstance(s, Splits) and len(tuple(s)) == 3
    assert s.train.images.shape[1:] == (2, 8, 8) and s.novel.images.shape[1:] == (2, 8, 8)
    if split == "azimuth":
        familiar = np.isin(info["train"][:, 2] * 10, FAMILIAR_AZIMUTHS)
        familiar_test = np.isin(info["test"][:, 2] * 10, FAMILIAR_AZIMUTHS)
    else:
        familiar, familiar_test = info["train"][:, 1] < 3, info["test"][:, 1] < 3
    # train + val are exactly the training file's familiar views; test / novel the testing file's
    assert len(s.train) + len(s.val) == familiar.sum() and len(s.test) == familiar_test.sum()
    assert len(s.novel) == (~familiar_test).sum()
    assert abs(len(s.val) - 0.25 * familiar.sum()) <= 2.5  # class-stratified: rounded per class
    # images come from the right file and view: match every test image to the testing file's pixels
    x = torch.from_numpy(raw["test"][0] / 255.0).float().flatten(1)
    for ds, want in ((s.test, familiar_test), (s.novel, ~familiar_test)):
        idx = sorted(int((x == row).all(1).nonzero()) for row in ds.images.flatten(1))
        assert idx == np.flatnonzero(want).tolist()
    # metadata in degrees; train and novel share no viewpoint of the held-out axis
    key = split
    assert not set(s.metadata["novel"][key]) & set(s.metadata["train"][key])
    assert set(s.metadata["test"][key]) <= set(s.metadata["train"][key]) | set(s.metadata["val"][key])
    assert set(s.metadata["test"]["instance"]) <= {0, 1, 2, 3, 5}
    assert set(s.metadata["train"]["instance"]) <= {4, 6, 7, 8, 9}


def test_smallnorb_split_errors(tmp_path):
    write_smallnorb(tmp_path, side=8)
    with pytest.raises(ValueError, match="split must be None, 'azimuth' or 'elevation'; got 'pose'"):
        SmallNORB(str(tmp_path), split="pose")
    with pytest.raises(FileNotFoundError, match="training-info.mat"):
        SmallNORB(str(tmp_path), image_size=8, split="azimuth")
    write_norb_matrix(tmp_path / f"{STEMS['train']}-info.mat", np.zeros((3, 4), "<i4"), 0x1E3D4C54)
    with pytest.raises(ValueError, match=r"smallNORB train info \(3, 4\) must have one row per image \(20\)"):
        SmallNORB(str(tmp_path), image_size=8, split="azimuth")


def test_smallnorb_viewpoint_specs_are_registered(tmp_path):
    from dgl_capsules.data import get_dataset, list_datasets

    assert {"smallnorb-azimuth:PATH", "smallnorb-elevation:PATH"} <= set(dict(list_datasets()))
    write_smallnorb(tmp_path, n_train=72, n_test=54, side=8)
    write_info(tmp_path, 72, 54)
    s = get_dataset(f"smallnorb-elevation:{tmp_path}", image_size=8)
    assert isinstance(s, ViewpointSplits) and s.train.image_shape == (2, 8, 8) and len(s.novel) == 36
    with pytest.raises(ValueError, match="data: 'smallnorb-azimuth:.*nowhere': '.*nowhere' is not a directory"):
        get_dataset(f"smallnorb-azimuth:{tmp_path / 'nowhere'}")
