import importlib
import os
import sys

import numpy as np
import pytest
import torch

from dgl_capsules.data import Splits, ViewpointSplits
from dgl_capsules.data.viewpoints import FAMILIAR_AZIMUTHS, render_views, viewpoint_objects, viewpoints

pytestmark = pytest.mark.needs("pybullet")  # every test renders (the split logic is in test_data_viewsplit.py)

vp = importlib.import_module("dgl_capsules.data.viewpoints")  # the module (dc.data.viewpoints is the function)

# A tiny variant: 2 objects, 4 azimuths (2 familiar), 4 elevations, 3 lightings, 16x16: 96 pairs.
TINY = dict(classes=2, size=16, lightings=3, azimuths=[0, 20, 100, 200], elevations=[30, 40, 50, 70],
            supersample=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def views(cache):
    return render_views(**TINY, cache_dir=cache, progress=False)


def test_labels_and_metadata(views):
    n = 2 * 4 * 4 * 3
    assert views.images.shape == (n, 2, 16, 16) and views.images.dtype == np.uint8
    assert views.labels.dtype == np.int64 and np.bincount(views.labels).tolist() == [n // 2, n // 2]
    assert views.class_names == ("duck", "teddy")
    m = views.metadata
    assert sorted(m) == ["azimuth", "elevation", "instance", "lighting"]
    # every (class, elevation, azimuth, lighting) exactly once
    combos = set(zip(views.labels, m["elevation"], m["azimuth"], m["lighting"]))
    assert len(combos) == n
    assert set(m["azimuth"]) == {0, 20, 100, 200} and set(m["elevation"]) == {30, 40, 50, 70}
    assert set(m["lighting"]) == {0, 1, 2} and set(m["instance"]) == {0}


def test_images_objects_fit_and_lighting_keeps_silhouette(views):
    x, m = views.images, views.metadata
    assert (x.reshape(len(x), -1) > 0).any(1).all()  # an object in every image
    border = np.concatenate([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)
    assert (border == 0).all()  # normalised to fit the frame: nothing touches the border
    # the same view under two lightings: same silhouette, other shading
    a = np.flatnonzero((m["lighting"] == 0) & (m["azimuth"] == 100) & (m["elevation"] == 40) & (views.labels == 0))
    b = np.flatnonzero((m["lighting"] == 1) & (m["azimuth"] == 100) & (m["elevation"] == 40) & (views.labels == 0))
    assert np.array_equal(x[a] > 0, x[b] > 0) and not np.array_equal(x[a], x[b])
    # stereo: the two cameras see different images; other azimuths other images
    assert not np.array_equal(x[:, 0], x[:, 1])
    c = np.flatnonzero((m["lighting"] == 0) & (m["azimuth"] == 200) & (m["elevation"] == 40) & (views.labels == 0))
    assert not np.array_equal(x[a], x[c])


def test_same_apparent_size(tmp_path):
    """Objects are scaled by their bounding box: meshes whose files differ in size by 50x cover similar areas."""
    v = render_views(classes=["duck", "mug", "bunny", "blob005"], size=32, lightings=1, azimuths=[0, 60, 120],
                     elevations=[30, 60], supersample=1, cache_dir=str(tmp_path), progress=False)
    area = np.array([(v.images[v.labels == c] > 0).mean() for c in range(4)])  # share of object pixels
    assert area.min() > 0.03 and area.max() < 3 * area.min()
    root = __import__("pybullet_data").getDataPath()
    diag = [np.ptp(vp._mesh_vertices(os.path.join(root, p)), 0) for p in
            ("duck.obj", os.path.join("objects", "mug.obj"), os.path.join("random_urdfs", "005", "005.obj"))]
    assert np.linalg.norm(diag[2]) > 50 * np.linalg.norm(diag[1])  # the mesh files differ in size by 50x


def test_zero_baseline_gives_equal_cameras(tmp_path):
    v = render_views(classes=2, size=16, lightings=1, azimuths=[0], elevations=[30], baseline=0.0, supersample=1,
                     cache_dir=str(tmp_path), progress=False)
    assert np.array_equal(v.images[:, 0], v.images[:, 1])


def test_deterministic(tmp_path, views):
    again = render_views(**TINY, cache_dir=str(tmp_path), progress=False)  # a fresh render, no cache
    assert os.listdir(tmp_path) and again.images.tobytes() == views.images.tobytes()
    assert np.array_equal(again.labels, views.labels)
    assert all(np.array_equal(again.metadata[k], views.metadata[k]) for k in views.metadata)


def test_cache_hit_and_versioning(cache, views, monkeypatch):
    files = sorted(os.listdir(cache))
    assert len(files) == 1 and files[0].startswith("viewpoints-") and files[0].endswith(".npz")

    def fail(*a, **kw):
        raise AssertionError("rendered although the cache holds these settings")

    monkeypatch.setattr(vp, "_render", fail)
    hit = render_views(**TINY, cache_dir=cache, progress=False)
    assert hit.images.tobytes() == views.images.tobytes() and hit.class_names == views.class_names
    calls = []
    monkeypatch.setattr(vp, "_render", lambda s, progress: calls.append(s) or views)
    for change in (dict(baseline=0.2), dict(lightings=2), dict(seed=1, classes=5), dict(supersample=2),
                   dict(size=17), dict(instances=2), dict(azimuths=[0, 20, 100]), dict(elevations=[30, 40, 50])):
        render_views(**dict(TINY, **change), cache_dir=cache, progress=False)
    assert len(calls) == 8  # every changed setting renders anew ...
    assert len(set(os.listdir(cache))) == 9  # ... into its own file
    monkeypatch.setattr(vp, "RENDER_VERSION", vp.RENDER_VERSION + 1)
    render_views(**TINY, cache_dir=cache, progress=False)
    assert len(calls) == 9  # and so does a new version of the rendering code,
    monkeypatch.setattr(vp, "_package_version", lambda name: "0.0-other")
    render_views(**TINY, cache_dir=cache, progress=False)
    assert len(calls) == 10  # another pybullet
    monkeypatch.setattr(vp, "_file_digest", lambda path: "changed-mesh")
    render_views(**TINY, cache_dir=cache, progress=False)
    assert len(calls) == 11  # or other mesh files
    assert not [f for f in os.listdir(cache) if f.endswith(".tmp")]  # atomic writes leave no temporary files


def test_cache_dir_from_environment(tmp_path, monkeypatch, views):
    monkeypatch.setenv("DGL_CAPSULES_CACHE", str(tmp_path))
    monkeypatch.setattr(vp, "_render", lambda s, progress: views)
    render_views(**TINY, progress=False)
    assert [f.startswith("viewpoints-") for f in os.listdir(tmp_path)] == [True]


def test_stale_cache_file_is_rendered_again(tmp_path, views, monkeypatch):
    monkeypatch.setattr(vp, "_render", lambda s, progress: views)
    render_views(**TINY, cache_dir=str(tmp_path), progress=False)
    (path,) = tmp_path.iterdir()
    with np.load(path) as f:
        data = dict(f)
    data["settings"] = np.array("{}")  # a file whose recorded settings are not these
    data["images"] = np.zeros_like(data["images"])
    np.savez(path, **data)
    got = render_views(**TINY, cache_dir=str(tmp_path), progress=False)
    assert got.images.tobytes() == views.images.tobytes()


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("damage", ["cut short", "not a zip", "a member missing", "pickled objects"])
def test_a_damaged_cache_file_is_rendered_again_with_one_warning_naming_it(tmp_path, views, monkeypatch, damage):
    monkeypatch.setattr(vp, "_render", lambda s, progress: views)
    render_views(**TINY, cache_dir=str(tmp_path), progress=False)
    (path,) = tmp_path.iterdir()
    marker = tmp_path.parent / f"ran-{tmp_path.name}"
    with np.load(path) as f:
        data = dict(f)
    if damage == "cut short":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "not a zip":
        path.write_bytes(b"\x00" * 64)
    elif damage == "a member missing":
        del data["labels"]
        with open(path, "wb") as f:
            np.savez(f, **data)
    else:  # an object array: loading it with pickles allowed would run the payload
        data["images"] = np.array([_Payload(marker)], dtype=object)
        with open(path, "wb") as f:
            np.savez(f, **data)
    with pytest.warns(vp.CacheWarning, match=rf"^the viewpoints cache {path} is damaged \(.+\); rendering it "
                                             rf"again$") as caught:
        got = render_views(**TINY, cache_dir=str(tmp_path), progress=False)
    assert len([w for w in caught if w.category is vp.CacheWarning]) == 1
    assert got.images.tobytes() == views.images.tobytes() and not marker.exists()
    with np.load(path) as f:  # rewritten whole
        assert f["images"].tobytes() == views.images.tobytes()


def test_instances_stretch_the_object(tmp_path):
    v = render_views(classes=2, size=16, lightings=1, instances=2, azimuths=[0], elevations=[30], supersample=1,
                     cache_dir=str(tmp_path), progress=False)
    assert v.metadata["instance"].tolist() == [0, 1, 0, 1]
    assert not np.array_equal(v.images[0] > 0, v.images[1] > 0)


@pytest.mark.parametrize("split", ["azimuth", "elevation"])
def test_splits_share_no_viewpoint_they_should_not(cache, views, split):
    s = viewpoints(**TINY, split=split, val_fraction=0.25, cache_dir=cache, progress=False)
    assert isinstance(s, ViewpointSplits) and isinstance(s, Splits)
    train, val, test = s  # unpacks like Splits
    assert s.train.images.shape[1:] == (2, 16, 16) and s.train.images.dtype == torch.float32
    assert s.train.n_classes == 2 and s.class_names == ("duck", "teddy")
    md = s.metadata
    if split == "azimuth":
        familiar = set(FAMILIAR_AZIMUTHS) & {0, 20, 100, 200}
        assert familiar == {0, 20}
    else:
        familiar = {30, 40, 50}
    for part in ("train", "val", "test"):
        assert set(md[part][split]) <= familiar
    assert set(md["novel"][split]) == ({0, 20, 100, 200} if split == "azimuth" else {30, 40, 50, 70}) - familiar
    # held-out lighting (index 2 of 3): never trained on, the only one tested on
    for part in ("train", "val"):
        assert set(md[part]["lighting"]) == {0, 1}
    assert set(md["test"]["lighting"]) == set(md["novel"]["lighting"]) == {2}
    # familiar test and novel test see the same objects under the same lighting, only the viewpoint differs
    other = "elevation" if split == "azimuth" else "azimuth"
    assert set(md["test"][other]) == set(md["novel"][other])
    # the parts are disjoint and cover the training lightings at familiar views and the held-out lighting
    per_lighting_familiar = 2 * len(familiar) * 4  # classes x familiar values x the 4 values of the other axis
    per_lighting_novel = 2 * (4 - len(familiar)) * 4
    assert len(s.train) + len(s.val) == 2 * per_lighting_familiar  # lightings 0 and 1
    assert len(s.test) == per_lighting_familiar and len(s.novel) == per_lighting_novel  # lighting 2
    # the images are the rendered pixels of those views
    i = 0
    m = views.metadata
    j = np.flatnonzero((views.labels == int(s.novel.labels[i])) & (m["azimuth"] == md["novel"]["azimuth"][i])
                       & (m["elevation"] == md["novel"]["elevation"][i])
                       & (m["lighting"] == md["novel"]["lighting"][i]))
    assert torch.equal(s.novel.images[i], torch.from_numpy(views.images[j[0]] / np.float32(255)))


def test_heldout_instance(tmp_path):
    s = viewpoints(classes=2, size=16, lightings=1, instances=2, heldout="instance", azimuths=[0, 20, 100],
                   elevations=[30], cache_dir=str(tmp_path), progress=False, val_fraction=0.0)
    assert set(s.metadata["train"]["instance"]) == {0} and set(s.metadata["test"]["instance"]) == {1}
    assert set(s.metadata["novel"]["instance"]) == {1} and set(s.metadata["novel"]["azimuth"]) == {100}
    assert [len(p) for p in (*s, s.novel)] == [4, 0, 4, 2]


def test_viewpoints_errors(tmp_path):
    d = dict(cache_dir=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="split must be 'azimuth' or 'elevation'; got 'x'"):
        viewpoints(split="x", **d)
    with pytest.raises(ValueError, match="heldout must be 'lighting' or 'instance'; got 'camera'"):
        viewpoints(heldout="camera", **d)
    with pytest.raises(ValueError, match=r"classes must be an int in \[2, 1004\]"):
        render_views(classes=1, **d)
    with pytest.raises(ValueError, match="classes must name at least 2 distinct objects .*got \\['duck', 'cat'\\]"):
        render_views(classes=["duck", "cat"], **d)
    with pytest.raises(ValueError, match="size must be an int >= 8; got 4"):
        render_views(size=4, **d)
    with pytest.raises(ValueError, match=r"lightings must be an int in \[1, 6\]"):
        render_views(lightings=7, **d)
    with pytest.raises(ValueError, match=r"lightings must be an int or a non-empty sequence of \(azimuth, elevation, "
                                         r"ambient\) triples"):
        render_views(lightings=[(0, 45)], **d)
    with pytest.raises(ValueError, match="azimuths must be a non-empty sequence of distinct integer degrees"):
        render_views(azimuths=[0, 0], **d)
    with pytest.raises(ValueError, match=r"baseline must be in \[0, 0.5\]"):
        render_views(baseline=1.0, **d)
    with pytest.raises(ValueError, match="instances must be an int >= 1; got 0"):
        render_views(instances=0, **d)
    with pytest.raises(ValueError, match="heldout='lighting' needs lightings >= 2"):
        viewpoints(classes=2, size=8, lightings=1, azimuths=[0, 100], elevations=[30], **d)
    with pytest.raises(ValueError, match="heldout='instance' needs instances >= 2"):
        viewpoints(classes=2, size=8, lightings=1, heldout="instance", azimuths=[0, 100], elevations=[30], **d)


def test_viewpoint_objects():
    assert viewpoint_objects(4) == ("duck", "teddy", "mug", "bunny")
    ten = viewpoint_objects(10)
    assert ten[:4] == ("duck", "teddy", "mug", "bunny") and len(set(ten)) == 10
    assert ten == viewpoint_objects(10, seed=0) and ten != viewpoint_objects(10, seed=1)
    assert viewpoint_objects(["blob005", "duck"]) == ("blob005", "duck")


def test_missing_pybullet_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pybullet", None)
    with pytest.raises(ImportError, match=r"pip install 'dgl_capsules\[viewpoints\]'"):
        viewpoints(classes=2, cache_dir=str(tmp_path), progress=False)


def test_registered_as_a_data_set(monkeypatch):
    from dgl_capsules.data import ImageDataset, get_dataset, list_datasets

    assert "viewpoints[:SPLIT]" in dict(list_datasets())
    calls = []

    def fake(**kw):
        calls.append(kw)
        ds = ImageDataset(torch.zeros(2, 2, kw["size"], kw["size"]), torch.tensor([0, 1]))
        return ViewpointSplits(ds, ds, ds, ds)

    monkeypatch.setattr(vp, "viewpoints", fake)
    get_dataset("viewpoints")
    get_dataset("viewpoints:elevation")
    assert calls == [dict(size=32, split="azimuth"), dict(size=32, split="elevation")]
    with pytest.raises(ValueError, match="data: 'viewpoints:roll': viewpoints takes the split after ':', 'azimuth' "
                                         "or 'elevation'; got 'roll'"):
        get_dataset("viewpoints:roll")


def test_get_dataset_renders_at_image_size(monkeypatch, tmp_path):
    from dgl_capsules.data import get_dataset

    real = vp.viewpoints
    monkeypatch.setattr(vp, "viewpoints", lambda **kw: real(**dict(TINY, **kw, cache_dir=str(tmp_path),
                                                                   progress=False)))
    s = get_dataset("viewpoints", image_size=20)  # rendered at 20, not padded: the novel set stays
    assert isinstance(s, ViewpointSplits) and s.train.image_shape == (2, 20, 20) and s.novel.image_shape == (2, 20, 20)
