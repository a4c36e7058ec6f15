"""Capsule layers, one per file."""
from .routed import RoutedCaps
from .conv import ImageConv2d
from .dynamic import DynamicCaps
from .em import ClassCaps, ConvCaps, PrimaryMatrixCaps
from .heinsen import HeinsenRouting
from .inverted import InvertedCaps, InvertedConvCaps
from .primary import PrimaryCaps
from .self_attention import SelfAttentionCaps
from .vector import EfficientVectorRouting

__all__ = ["ClassCaps", "ConvCaps", "DynamicCaps", "EfficientVectorRouting", "HeinsenRouting", "ImageConv2d",
           "InvertedCaps", "InvertedConvCaps", "PrimaryCaps", "PrimaryMatrixCaps", "RoutedCaps", "SelfAttentionCaps"]
