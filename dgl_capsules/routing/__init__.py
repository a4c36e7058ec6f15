"""Routing algorithms as message passing over capsule graphs."""
from ._common import RoutingResult
from .dynamic import dynamic_routing
from .heinsen import heinsen_routing
from .em import em_routing

__all__ = ["RoutingResult", "dynamic_routing", "heinsen_routing", "em_routing"]
