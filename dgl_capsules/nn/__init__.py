"""Capsule layers, one per file."""
from .dynamic import DynamicCaps
from .primary import PrimaryCaps

__all__ = ["DynamicCaps", "PrimaryCaps"]
