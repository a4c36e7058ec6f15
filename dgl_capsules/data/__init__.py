"""Data sets: bundled and generated; nothing is downloaded at run time."""
from .affine import MultiPairs, affine_mnist, multi_mnist, multi_splits, pad_to, random_affine, random_shift
from .mnist import MNIST, ImageDataset, Splits, mnist5k, read_idx, stratified_split
from .motifs import MotifSequences, motif_sequences
from .smallnorb import SmallNORB, read_norb_matrix
from .synthetic import PlantedClusters, planted_clusters

__all__ = [
    "ImageDataset", "MNIST", "MultiPairs", "SmallNORB", "Splits", "affine_mnist", "mnist5k", "multi_mnist",
    "multi_splits",
    "pad_to", "random_affine", "random_shift", "read_idx", "read_norb_matrix", "stratified_split",
    "MotifSequences", "motif_sequences", "PlantedClusters", "planted_clusters"]
