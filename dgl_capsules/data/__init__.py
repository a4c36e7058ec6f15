"""Data sets: bundled and generated; nothing is downloaded at run time.

:func:`get_dataset` turns a spec (``"mnist5k"``, ``"mnist"``, ``"multi:mnist"``,
...) into :class:`Splits`; :func:`list_datasets` says which specs exist. A new
data set is one :func:`register_dataset` where its loader is defined; a new
test set derived from a data set's splits (``evaluate --on``) is one
:func:`register_test_set`.
"""
from .datasets import ImageDataset, Splits
from .canvas import fit_images, pad_to
from .augment import (
    efficient_capsnet_augment, get_augmentation, list_augmentations, register_augmentation, unregister_augmentation,
)
from .registry import (
    get_dataset, get_test_set, list_datasets, list_test_sets, register_dataset, register_test_set, unregister_dataset,
    unregister_test_set,
)
from .mnist import MNIST, mnist, mnist5k, read_idx, stratified_split  # registers "mnist5k", "mnist"
from .affine import (  # registers "multi" and the test sets "affine", "multi"
    MultiPairs, affine_mnist, affine_transform, multi_mnist, multi_splits, random_affine, random_shift,
)
from .motifs import MotifSequences, motif_sequences
from .viewsplit import ViewpointSplits, viewpoint_split
from .smallnorb import SmallNORB, read_norb_matrix  # registers "smallnorb", "smallnorb-azimuth", ...
from .synthetic import PlantedClusters, planted_clusters
from .viewpoints import render_views, viewpoints  # registers "viewpoints"

__all__ = [
    "ImageDataset", "MNIST", "efficient_capsnet_augment", "get_augmentation", "list_augmentations",
    "register_augmentation", "unregister_augmentation", "MotifSequences", "MultiPairs", "PlantedClusters", "SmallNORB", "Splits",
    "affine_mnist", "affine_transform", "fit_images", "get_dataset", "get_test_set", "list_datasets", "list_test_sets",
    "mnist",
    "mnist5k", "motif_sequences", "multi_mnist", "multi_splits", "pad_to", "planted_clusters", "random_affine",
    "random_shift", "read_idx", "read_norb_matrix", "register_dataset", "register_test_set", "stratified_split",
    "unregister_dataset", "unregister_test_set", "ViewpointSplits", "render_views", "viewpoint_split", "viewpoints",
]
