"""Capsule layers, one per file."""
from .dynamic import DynamicCaps
from .heinsen import HeinsenRouting
from .primary import PrimaryCaps

__all__ = ["DynamicCaps", "HeinsenRouting", "PrimaryCaps"]
