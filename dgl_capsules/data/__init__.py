"""Data sets: bundled and generated; nothing is downloaded at run time."""
from .synthetic import PlantedClusters, planted_clusters

__all__ = ["PlantedClusters", "planted_clusters"]
