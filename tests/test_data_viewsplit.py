"""The viewpoint splits (data/viewsplit.py): pure index logic, no renderer needed."""
import pickle

import numpy as np
import pytest
import torch

from dgl_capsules.data import Splits
from dgl_capsules.data.viewsplit import FAMILIAR_AZIMUTHS, ViewpointSplits, viewpoint_split


def test_viewpoint_splits_object():
    from dgl_capsules.data import ImageDataset

    ds = [ImageDataset(torch.zeros(k, 1, 2, 2), torch.zeros(k, dtype=torch.long), 2) for k in (3, 1, 2, 4)]
    s = ViewpointSplits(*ds, metadata={"novel": {"azimuth": np.arange(4)}}, class_names=("a", "b"))
    assert len(tuple(s)) == 3 and s.test is ds[2] and s.novel is ds[3]
    assert repr(s) == "ViewpointSplits(train=3, val=1, test=2, novel=4)"
    back = pickle.loads(pickle.dumps(s))
    assert len(back.novel) == 4 and back.class_names == ("a", "b") and len(back.train) == 3
    r = s._replace(val=ds[0])
    assert r.val is ds[0] and r.novel is ds[3]
    assert Splits(*s).test is ds[2]  # rebuilding Splits from it takes the first three


def test_viewpoint_split_on_arrays():
    az = np.tile(np.arange(0, 360, 20), 4)  # 18 azimuths x 4 lightings
    light = np.repeat(np.arange(4), 18)
    y = np.arange(72) % 2
    idx = viewpoint_split(y, {"azimuth": az}, "azimuth", test_mask=light == 3, val_fraction=1 / 3, seed=0)
    assert sorted(np.concatenate(idx).tolist()) == sorted(set(np.concatenate(idx).tolist()))  # disjoint
    assert len(idx.train) == 12 and len(idx.val) == 6 and len(idx.test) == 6 and len(idx.novel) == 12
    assert set(az[idx.novel]).isdisjoint(FAMILIAR_AZIMUTHS) and set(az[idx.test]) == set(FAMILIAR_AZIMUTHS)
    assert np.bincount(y[idx.val]).tolist() == [3, 3]  # class-stratified validation
    # azimuths are read modulo 360
    assert len(viewpoint_split(y[:2], {"azimuth": np.array([360, -20])}, test_mask=None).train) == 2
    # no test mask: only training images
    none = viewpoint_split(y, {"azimuth": az}, val_fraction=0.0)
    assert len(none.train) == 24 and len(none.test) == len(none.novel) == 0


def test_viewpoint_split_elevation_takes_the_three_lowest():
    el = np.repeat([0, 1, 2, 3, 4, 5, 6, 7, 8], 2)  # smallNORB's indices work as well as degrees
    mask = np.tile([False, True], 9)
    idx = viewpoint_split(np.zeros(18, int), {"elevation": el}, "elevation", mask, val_fraction=0.0)
    assert el[idx.train].tolist() == [0, 1, 2] and el[idx.test].tolist() == [0, 1, 2]
    assert el[idx.novel].tolist() == [3, 4, 5, 6, 7, 8]


def test_viewpoint_split_errors():
    y, az = np.zeros(4, int), np.array([0, 20, 100, 120])
    with pytest.raises(ValueError, match="split must be 'azimuth' or 'elevation'; got 'roll'"):
        viewpoint_split(y, {"azimuth": az}, "roll")
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\)"):
        viewpoint_split(y[:, None], {"azimuth": az})
    with pytest.raises(ValueError, match=r"metadata must be a dict with an 'elevation' array .*; got \['azimuth'\]"):
        viewpoint_split(y, {"azimuth": az}, "elevation")
    with pytest.raises(ValueError, match=r"metadata\['azimuth'\] must have shape \(4,\) like labels; got \(3,\)"):
        viewpoint_split(y, {"azimuth": az[:3]})
    with pytest.raises(ValueError, match=r"test_mask must be a bool array of shape \(4,\); got int64"):
        viewpoint_split(y, {"azimuth": az}, test_mask=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\); got 1"):
        viewpoint_split(y, {"azimuth": az}, val_fraction=1)
    with pytest.raises(ValueError, match="must hold at least 4 elevations"):
        viewpoint_split(y, {"elevation": np.array([30, 35, 40, 40])}, "elevation")
    with pytest.raises(ValueError, match="no training images: none at the familiar azimuths outside test_mask"):
        viewpoint_split(y, {"azimuth": az}, test_mask=np.array([True, True, False, False]))
    with pytest.raises(ValueError, match="test_mask holds no images at the novel azimuths"):
        viewpoint_split(y, {"azimuth": az}, test_mask=np.array([False, True, False, False]))
