"""Helpers for the tests. They are public in :mod:`dgl_capsules.testing`; re-exported here for old imports."""
from dgl_capsules.testing import dense_mask, dense_to_edge, edge_to_dense, permuted  # noqa: F401
