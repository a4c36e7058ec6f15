"""Capsule layers, one per file."""
from .routed import RoutedCaps
from .dynamic import DynamicCaps
from .em import ClassCaps, ConvCaps, PrimaryMatrixCaps
from .heinsen import HeinsenRouting
from .primary import PrimaryCaps
from .self_attention import SelfAttentionCaps

__all__ = ["ClassCaps", "ConvCaps", "DynamicCaps", "HeinsenRouting", "PrimaryCaps", "PrimaryMatrixCaps", "RoutedCaps",
           "SelfAttentionCaps"]
