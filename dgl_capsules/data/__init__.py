"""Data sets: bundled and generated; nothing is downloaded at run time.

:func:`get_dataset` turns a spec (``"mnist5k"``, ``"mnist"``, ``"multi:mnist"``,
...) into :class:`Splits`; :func:`list_datasets` says which specs exist. A new
data set is one :func:`register_dataset` where its loader is defined.
"""
from .datasets import ImageDataset, Splits
from .augment import (
    efficient_capsnet_augment, get_augmentation, list_augmentations, register_augmentation, unregister_augmentation,
)
from .registry import get_dataset, list_datasets, register_dataset, unregister_dataset
from .mnist import MNIST, mnist, mnist5k, read_idx, stratified_split  # registers "mnist5k", "mnist"
from .affine import (  # registers "multi"
    MultiPairs, affine_mnist, affine_transform, multi_mnist, multi_splits, pad_to, random_affine, random_shift,
)
from .motifs import MotifSequences, motif_sequences
from .smallnorb import SmallNORB, read_norb_matrix
from .synthetic import PlantedClusters, planted_clusters
from .viewpoints import ViewpointSplits, render_views, viewpoint_split, viewpoints  # registers "viewpoints"

__all__ = [
    "ImageDataset", "MNIST", "efficient_capsnet_augment", "get_augmentation", "list_augmentations",
    "register_augmentation", "unregister_augmentation", "MotifSequences", "MultiPairs", "PlantedClusters", "SmallNORB", "Splits",
    "affine_mnist", "affine_transform", "get_dataset", "list_datasets", "mnist", "mnist5k", "motif_sequences", "multi_mnist",
    "multi_splits", "pad_to", "planted_clusters", "random_affine", "random_shift", "read_idx", "read_norb_matrix",
    "register_dataset", "stratified_split", "unregister_dataset",
    "ViewpointSplits", "render_views", "viewpoint_split", "viewpoints",
]
