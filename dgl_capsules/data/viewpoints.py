"""Novel viewpoints: a smallNORB-style set rendered offline with pybullet, and the splits of Hinton et al. 2018.

smallNORB (LeCun et al. 2004) photographs toys on a turntable from 18
azimuths and 9 elevations under 6 lightings with two cameras; Hinton, Sabour &
Frosst (2018, section 5.1) train on a few viewpoints and test on the others.
Its files are not installable offline, so :func:`viewpoints` renders a set of
the same design from the meshes bundled with ``pybullet`` (``pybullet_data``)
with its CPU renderer, caches it, and splits it the same way;
:func:`viewpoint_split` also splits the real smallNORB
(:func:`~dgl_capsules.data.SmallNORB` with ``split=``).
"""
import hashlib
import importlib.metadata
import json
import math
import os
import tempfile
import warnings
from typing import NamedTuple

import numpy as np
import torch

from .registry import register_dataset
from .viewsplit import FAMILIAR_AZIMUTHS, ViewpointIndices, ViewpointSplits, viewpoint_split, viewpoint_splits

__all__ = ["FAMILIAR_AZIMUTHS", "LIGHTINGS", "CacheWarning", "RenderedViews", "ViewpointIndices", "ViewpointSplits",
           "render_views", "viewpoint_split", "viewpoint_splits", "viewpoints", "viewpoint_objects"]

#: Bump when the rendering code changes what it draws: every cached set is then rendered again.
RENDER_VERSION = 1

#: Default azimuths (0..340 step 20) and elevations (30..70 step 5, smallNORB's) in degrees.
AZIMUTHS = tuple(range(0, 360, 20))
ELEVATIONS = tuple(range(30, 75, 5))

#: Lightings: (light azimuth relative to the camera's, light elevation, both degrees; ambient share).
#: The light turns with the camera, as smallNORB's lamps stay put while its turntable turns, so a
#: lighting looks the same from every azimuth and is no cue to it.
LIGHTINGS = ((-60.0, 45.0, 0.3), (0.0, 20.0, 0.3), (60.0, 45.0, 0.3),
             (-120.0, 60.0, 0.4), (120.0, 60.0, 0.4), (0.0, 80.0, 0.5))

# Named meshes of pybullet_data, each with the rotation (roll, pitch, yaw) that stands it upright;
# after them come the 1,000 procedurally generated objects random_urdfs/NNN/NNN.obj ("blobNNN").
# Not here: multi-link robots (r2d2, racecar: several meshes per body) and near-symmetric shapes
# (sphere, torus, the lego brick), whose views differ too little over azimuth.
_NAMED = (
    ("duck", "duck.obj", (math.pi / 2, 0.0, 0.0)),
    ("teddy", "teddy2_VHACD_CHs.obj", (math.pi / 2, 0.0, 0.0)),
    ("mug", os.path.join("objects", "mug.obj"), (0.0, 0.0, 0.0)),
    ("bunny", "bunny.obj", (math.pi / 2, 0.0, 0.0)),
)
_N_BLOBS = 1000

# Camera: the object fits a sphere of radius 0.5 (bounding-box diagonal 1) at the origin.
_DISTANCE, _FOV, _NEAR, _FAR = 2.2, 30.0, 1.0, 3.5
_GRAY = 0.8  # the one colour of every object: no colour or texture cues


class RenderedViews(NamedTuple):
    """A rendered set: stereo images, labels and the viewpoint of every image.

    Attributes
    ----------
    images : numpy.ndarray
        ``(N, 2, S, S)`` uint8 grayscale stereo pairs (left, right camera); background 0.
    labels : numpy.ndarray
        ``(N,)`` int64 class indices into ``class_names``.
    metadata : dict of str to numpy.ndarray
        ``(N,)`` int64 arrays ``"azimuth"`` and ``"elevation"`` (degrees),
        ``"lighting"`` (index into the lightings) and ``"instance"``.
    class_names : tuple of str
        The object of every class, e.g. ``("duck", "teddy", "mug", "bunny", "blob085", ...)``.
    """

    images: np.ndarray
    labels: np.ndarray
    metadata: dict
    class_names: tuple


# ------------------------------------------------------------------------------------------------- rendering
def _pybullet():
    try:
        import pybullet
        import pybullet_data
    except ImportError as e:
        raise ImportError("viewpoints needs pybullet: pip install 'dgl_capsules[viewpoints]'") from e
    return pybullet, pybullet_data


def _candidates():
    """The fixed list of objects: the named meshes, then blob000 .. blob999."""
    blobs = tuple((f"blob{i:03d}", os.path.join("random_urdfs", f"{i:03d}", f"{i:03d}.obj"), (0.0, 0.0, 0.0))
                  for i in range(_N_BLOBS))
    return _NAMED + blobs


def viewpoint_objects(classes=10, seed=0):
    """Names of the objects :func:`viewpoints` renders as its classes.

    An int ``K`` takes the named meshes (duck, teddy, mug, bunny) in this
    order, then ``K - 4`` of the 1,000 procedurally generated objects of
    ``pybullet_data`` drawn by ``numpy.random.default_rng(seed)``; a sequence
    of names is checked and returned.

    Examples
    --------
    >>> viewpoint_objects(2)
    ('duck', 'teddy')
    >>> len(viewpoint_objects(10))
    10
    """
    names = [c[0] for c in _candidates()]
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if not 2 <= classes <= len(names):
            raise ValueError(f"classes must be an int in [2, {len(names)}] or a sequence of object names; "
                             f"got {classes}")
        named = [c[0] for c in _NAMED][:classes]
        rest = classes - len(named)
        blobs = np.sort(np.random.default_rng(seed).choice(_N_BLOBS, rest, replace=False)) if rest else []
        return tuple(named) + tuple(f"blob{i:03d}" for i in blobs)
    if isinstance(classes, str) or not hasattr(classes, "__iter__"):
        raise ValueError(f"classes must be an int or a sequence of object names; got {classes!r}")
    classes = tuple(classes)
    unknown = [c for c in classes if c not in names]
    if unknown or len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes must name at least 2 distinct objects among duck, teddy, mug, bunny, "
                         f"blob000 .. blob{_N_BLOBS - 1}; got {list(classes)}")
    return classes


def _mesh_vertices(path):
    """``(V, 3)`` vertex positions of an OBJ file."""
    with open(path) as f:
        v = [line.split()[1:4] for line in f if line.startswith("v ")]
    return np.asarray(v, dtype=np.float64)


def _package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source build without metadata
        return "unknown"


def _file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _check_lightings(lightings):
    if isinstance(lightings, (int, np.integer)) and not isinstance(lightings, bool):
        if not 1 <= lightings <= len(LIGHTINGS):
            raise ValueError(f"lightings must be an int in [1, {len(LIGHTINGS)}] or a sequence of "
                             f"(azimuth, elevation, ambient) triples; got {lightings}")
        return [list(map(float, t)) for t in LIGHTINGS[:lightings]]
    try:
        out = [list(map(float, t)) for t in lightings]
    except (TypeError, ValueError):
        out = None
    if not out or any(len(t) != 3 or not 0 <= t[2] <= 1 for t in out):
        raise ValueError(f"lightings must be an int or a non-empty sequence of (azimuth, elevation, ambient) "
                         f"triples with ambient in [0, 1]; got {lightings!r}")
    return out


def _check_angles(name, values, default):
    values = default if values is None else values
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        out = None
    if not out or len(set(out)) != len(out) or any(o != v for o, v in zip(out, values)):
        raise ValueError(f"{name} must be a non-empty sequence of distinct integer degrees; got {values!r}")
    return out


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
    return int(value)


def _settings(classes, size, instances, lightings, azimuths, elevations, baseline, supersample, seed):
    """Every setting that changes a rendered pixel; the cache key is their hash."""
    pybullet, pybullet_data = _pybullet()
    names = viewpoint_objects(classes, seed)
    paths = dict((c[0], c[1]) for c in _candidates())
    root = pybullet_data.getDataPath()
    if not 0 <= baseline <= 0.5:
        raise ValueError(f"baseline must be in [0, 0.5] (object diameters); got {baseline}")
    return dict(
        version=RENDER_VERSION, pybullet=_package_version("pybullet"), pybullet_api=pybullet.getAPIVersion(),
        classes=list(names), meshes=[_file_digest(os.path.join(root, paths[c])) for c in names],
        size=_check_int("size", size, 8), instances=_check_int("instances", instances, 1),
        lightings=_check_lightings(lightings),
        azimuths=_check_angles("azimuths", azimuths, AZIMUTHS),
        elevations=_check_angles("elevations", elevations, ELEVATIONS),
        baseline=float(baseline), supersample=_check_int("supersample", supersample, 1), seed=int(seed),
        camera=[_DISTANCE, _FOV, _NEAR, _FAR], gray=_GRAY,
    )


def _direction(azimuth, elevation):
    a, e = math.radians(azimuth), math.radians(elevation)
    return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


def _stretch(seed, class_index, instance):
    """Per-axis scale factors of an instance: 1 for instance 0, else ``exp(U(-0.25, 0.25))`` each."""
    if instance == 0:
        return np.ones(3)
    return np.exp(np.random.default_rng([seed, class_index, instance]).uniform(-0.25, 0.25, 3))


def _add_object(p, root, path, rpy, stretch):
    """Create one object, centred at the origin, its bounding-box diagonal 1; returns the body id."""
    q = p.getQuaternionFromEuler(rpy)
    rot = np.array(p.getMatrixFromQuaternion(q)).reshape(3, 3)
    world = (_mesh_vertices(os.path.join(root, path)) * stretch) @ rot.T  # (V, 3) upright
    lo, hi = world.min(0), world.max(0)
    scale = 1.0 / np.linalg.norm(hi - lo)
    # NOTE: a world point is position + R (mesh_scale * v) = scale * (R (stretch * v) - centre).
    shape = p.createVisualShape(p.GEOM_MESH, fileName=os.path.join(root, path),
                                meshScale=list(scale * stretch), rgbaColor=[_GRAY, _GRAY, _GRAY, 1],
                                visualFramePosition=list(-scale * (lo + hi) / 2), visualFrameOrientation=q)
    body = p.createMultiBody(baseMass=0, baseVisualShapeIndex=shape)
    p.changeVisualShape(body, -1, textureUniqueId=-1)
    return body


def _render_pair(p, size, k, azimuth, elevation, lighting, baseline):
    """One stereo pair ``(2, size, size)`` uint8: render at ``k * size``, average ``k x k`` blocks."""
    eye = _DISTANCE * _direction(azimuth, elevation)
    right = np.array([-math.sin(math.radians(azimuth)), math.cos(math.radians(azimuth)), 0.0])
    light = _direction(azimuth + lighting[0], lighting[1])
    proj = p.computeProjectionMatrixFOV(fov=_FOV, aspect=1.0, nearVal=_NEAR, farVal=_FAR)
    side = size * k
    out = np.empty((2, size, size), np.uint8)
    for cam, offset in enumerate((-baseline / 2, baseline / 2)):  # left, right: parallel cameras
        shift = offset * right
        view = p.computeViewMatrix(list(eye + shift), list(shift), [0, 0, 1])
        _, _, rgb, _, seg = p.getCameraImage(
            side, side, view, proj, renderer=p.ER_TINY_RENDERER, shadow=0, lightDirection=list(light),
            lightColor=[1, 1, 1], lightAmbientCoeff=lighting[2], lightDiffuseCoeff=1.0 - lighting[2],
            lightSpecularCoeff=0.0)
        gray = np.asarray(rgb, np.uint8).reshape(side, side, 4)[..., 0].astype(np.float64)
        gray[np.asarray(seg).reshape(side, side) < 0] = 0.0  # black background
        out[cam] = np.round(gray.reshape(size, k, size, k).mean((1, 3))).astype(np.uint8)
    return out


def _render(s, progress):
    p, pybullet_data = _pybullet()
    from tqdm.auto import tqdm

    root = pybullet_data.getDataPath()
    entries = {c[0]: (i, c) for i, c in enumerate(_candidates())}
    n_views = len(s["elevations"]) * len(s["azimuths"]) * len(s["lightings"])
    n = len(s["classes"]) * s["instances"] * n_views
    images = np.empty((n, 2, s["size"], s["size"]), np.uint8)
    cols = {k: np.empty(n, np.int64) for k in ("label", "instance", "elevation", "azimuth", "lighting")}
    client = p.connect(p.DIRECT)
    try:
        # NOTE: every pybullet call below goes to this client only (physicsClientId), so renders of
        # other code in the process do not interfere.
        pc = _Client(p, client)
        i = 0
        with tqdm(total=n, desc="rendering viewpoints", unit="pair", disable=not progress) as bar:
            for label, name in enumerate(s["classes"]):
                index, (_, path, rpy) = entries[name]
                for inst in range(s["instances"]):
                    body = _add_object(pc, root, path, rpy, _stretch(s["seed"], index, inst))
                    for el in s["elevations"]:
                        for az in s["azimuths"]:
                            for li, lighting in enumerate(s["lightings"]):
                                images[i] = _render_pair(pc, s["size"], s["supersample"], az, el, lighting,
                                                         s["baseline"])
                                for k, v in zip(cols, (label, inst, el, az, li)):
                                    cols[k][i] = v
                                i += 1
                            bar.update(len(s["lightings"]))
                    pc.removeBody(body)
    finally:
        p.disconnect(client)
    meta = {k: cols[k] for k in ("azimuth", "elevation", "lighting", "instance")}
    return RenderedViews(images, cols["label"], meta, tuple(s["classes"]))


class _Client:
    """pybullet's module functions bound to one physics client."""

    def __init__(self, p, client):
        self._p, self._client = p, client

    def __getattr__(self, name):
        f = getattr(self._p, name)
        if not callable(f) or name in ("getQuaternionFromEuler", "getMatrixFromQuaternion",
                                       "computeViewMatrix", "computeProjectionMatrixFOV"):
            return f
        return lambda *a, **kw: f(*a, physicsClientId=self._client, **kw)


def _cache_folder(path=None):
    """The cache folder: ``path``, else ``$DGL_CAPSULES_CACHE``, else ``~/.cache/dgl_capsules``."""
    return path or os.environ.get("DGL_CAPSULES_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                           "dgl_capsules")


class CacheWarning(UserWarning):
    """A cache file could not be read and is being made again; the message names it and why."""


_META = ("azimuth", "elevation", "lighting", "instance")


def _read_cache(path, text, classes):
    """The :class:`RenderedViews` cached at ``path`` for the settings ``text``; ``None`` (and a
    :class:`CacheWarning` if the file is damaged) when it must be rendered again."""
    try:
        with open(path, "rb") as raw, np.load(raw, allow_pickle=False) as f:  # no pickles: nothing in it runs
            if str(f["settings"]) != text:
                return None  # another setting with the same hash prefix
            images, labels = f["images"], f["labels"]
            meta = {k: f[k] for k in _META}
        n = len(labels)
        if images.ndim != 4 or images.shape[0] != n or any(v.shape != (n,) for v in meta.values()):
            raise ValueError(f"images {images.shape}, labels {labels.shape} and metadata disagree")
    except Exception as e:  # noqa: BLE001 - cut short, not a zip, a member missing or damaged: render again
        why = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        warnings.warn(f"the viewpoints cache {path} is damaged ({why}); rendering it again", CacheWarning,
                      stacklevel=3)
        return None
    return RenderedViews(images, labels, meta, tuple(classes))


def render_views(classes=10, size=32, instances=1, lightings=6, azimuths=None, elevations=None, baseline=0.1,
                 supersample=2, seed=0, cache_dir=None, progress=True):
    """Render (or load from the cache) every view of every object: the raw set behind :func:`viewpoints`.

    ``pybullet``'s software renderer (``ER_TINY_RENDERER``, no window, no
    network) draws each object of :func:`viewpoint_objects` in one gray, its
    bounding box centred and scaled to diagonal 1 so that size is no cue,
    from every ``(elevation, azimuth)`` on a sphere around it, under every
    lighting, with two parallel cameras ``baseline`` apart (a stereo pair).
    Each view is rendered at ``supersample * size`` and block-averaged.
    Instance 0 is the mesh itself; instance ``k > 0`` stretches its three
    axes by seeded factors in [0.78, 1.28] (then rescales it to diagonal 1).

    The result is cached in ``cache_dir`` (default ``$DGL_CAPSULES_CACHE`` or
    ``~/.cache/dgl_capsules``) as ``viewpoints-<hash>.npz``, the hash taken
    over every setting above, pybullet's version, the mesh files and
    :data:`RENDER_VERSION`: a changed setting renders anew, never reads a
    stale file. The file is written atomically (a temporary file renamed).
    The same settings give the same bytes. A cache file that cannot be read
    (cut short, damaged) is rendered again, with a :class:`CacheWarning`
    naming it.

    Parameters
    ----------
    classes : int or sequence of str
        Number of objects (>= 2; see :func:`viewpoint_objects`) or their names.
    size : int
        Side ``S`` of the images.
    instances : int
        Instances per object.
    lightings : int or sequence of (float, float, float)
        The first ``n`` of :data:`LIGHTINGS`, or (light azimuth relative to
        the camera, light elevation, ambient share) triples.
    azimuths, elevations : sequence of int, optional
        Camera angles in degrees (default 0..340 step 20 and 30..70 step 5).
    baseline : float
        Distance between the two cameras, in object diameters.
    supersample : int
        Render at this multiple of ``size``.
    seed : int
        Seed of the object choice and of the instance shapes.
    cache_dir : str, optional
        Cache folder.
    progress : bool
        Show a progress bar while rendering.

    Returns
    -------
    RenderedViews
        Ordered by class, instance, elevation, azimuth, lighting.

    Raises
    ------
    ImportError
        If pybullet is missing (``pip install 'dgl_capsules[viewpoints]'``).
    ValueError
        If a setting is out of range.
    """
    s = _settings(classes, size, instances, lightings, azimuths, elevations, baseline, supersample, seed)
    text = json.dumps(s, sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:20]
    folder = _cache_folder(cache_dir)
    path = os.path.join(folder, f"viewpoints-{key}.npz")
    if os.path.exists(path):
        views = _read_cache(path, text, s["classes"])
        if views is not None:
            return views
    views = _render(s, progress)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".viewpoints-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, images=views.images, labels=views.labels, settings=np.array(text),
                                **views.metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache is readable like any other file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return views


def viewpoints(classes=10, size=32, split="azimuth", lightings=6, instances=1, heldout="lighting",
               azimuths=None, elevations=None, baseline=0.1, supersample=2, val_fraction=0.1, seed=0,
               cache_dir=None, progress=True):
    """A rendered smallNORB-style set split into familiar and novel viewpoints (Hinton et al. 2018).

    Renders (once; then from the cache) :func:`render_views` and splits it
    with :func:`viewpoint_split`. ``heldout="lighting"`` holds out every third
    lighting (indices 2, 5; the last one when there are fewer than 3): the
    familiar test set is the training viewpoints under lightings never
    trained on, the novel set the other viewpoints under the same held-out
    lightings. ``heldout="instance"`` holds out the upper half of the
    instances instead, as smallNORB's testing file holds out 5 of its 10.

    Parameters
    ----------
    classes, size, lightings, instances, azimuths, elevations, baseline, supersample, seed, cache_dir, progress
        As in :func:`render_views`.
    split : {"azimuth", "elevation"}
        Train on azimuths 300..40 (or on the 3 lowest elevations).
    heldout : {"lighting", "instance"}
        What the test sets hold out.
    val_fraction : float
        Share of the training viewpoints kept for validation.

    Returns
    -------
    ViewpointSplits
        ``train``, ``val``, ``test`` (familiar) and ``.novel``: images
        ``(2, S, S)`` float32 in [0, 1]; ``.metadata`` and ``.class_names``.

    Raises
    ------
    ImportError
        If pybullet is missing (``pip install 'dgl_capsules[viewpoints]'``).
    ValueError
        If a setting is out of range, or ``heldout`` has nothing to hold out.

    Examples
    --------
    Two objects from three azimuths (0 and 20 familiar, 100 novel), lighting 1 held out:

    >>> import tempfile
    >>> s = viewpoints(classes=2, size=16, lightings=2, azimuths=[0, 20, 100], elevations=[30],  # needs: pybullet
    ...                cache_dir=tempfile.mkdtemp(), progress=False)
    >>> s.train.images.shape, s.test.images.shape, s.novel.images.shape
    (torch.Size([4, 2, 16, 16]), torch.Size([4, 2, 16, 16]), torch.Size([2, 2, 16, 16]))
    >>> s.metadata["novel"]["azimuth"].tolist(), s.metadata["novel"]["lighting"].tolist()
    ([100, 100], [1, 1])
    """
    if split not in ("azimuth", "elevation"):
        raise ValueError(f"split must be 'azimuth' or 'elevation'; got {split!r}")
    if heldout not in ("lighting", "instance"):
        raise ValueError(f"heldout must be 'lighting' or 'instance'; got {heldout!r}")
    views = render_views(classes=classes, size=size, instances=instances, lightings=lightings, azimuths=azimuths,
                         elevations=elevations, baseline=baseline, supersample=supersample, seed=seed,
                         cache_dir=cache_dir, progress=progress)
    meta = views.metadata
    if heldout == "lighting":
        n = int(meta["lighting"].max()) + 1
        if n < 2:
            raise ValueError("heldout='lighting' needs lightings >= 2 (one to train on, one to hold out); got 1")
        held = [i for i in range(n) if i % 3 == 2] or [n - 1]
        test_mask = np.isin(meta["lighting"], held)
    else:
        n = int(meta["instance"].max()) + 1
        if n < 2:
            raise ValueError("heldout='instance' needs instances >= 2 (one to train on, one to hold out); got 1")
        test_mask = meta["instance"] >= n - n // 2
    images = torch.from_numpy(views.images.astype(np.float32) / 255.0)  # (N, 2, S, S)
    return viewpoint_splits(images, views.labels, meta, split, test_mask, val_fraction, seed,
                            n_classes=len(views.class_names), class_names=views.class_names)


def _load_viewpoints(path, image_size=None):
    """``viewpoints[:SPLIT]`` for :func:`~dgl_capsules.data.get_dataset`: rendered at ``image_size`` (default 32)."""
    split = path or "azimuth"
    if split not in ("azimuth", "elevation"):
        raise ValueError(f"viewpoints takes the split after ':', 'azimuth' or 'elevation'; got {split!r}")
    return viewpoints(size=32 if image_size is None else image_size, split=split)


register_dataset("viewpoints", _load_viewpoints, path="optional", metavar="SPLIT",
                 help="10 objects rendered offline (pybullet), 2x32x32 stereo pairs; SPLIT azimuth (default) or "
                      "elevation: train / val / familiar test, .novel the unseen viewpoints")
