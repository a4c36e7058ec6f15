"""Routing algorithms as message passing over capsule graphs, and the registry of routing families."""
from ._common import RoutingResult, first_coupling
from .registry import RoutingSpec, get_routing, list_routings, register_routing, unregister_routing
from .dynamic import dynamic_routing
from .heinsen import heinsen_routing
from .em import em_routing
from .self_attention import self_attention_routing
from .vector import vector_routing
from .inverted import inverted_routing

__all__ = ["RoutingResult", "RoutingSpec", "dynamic_routing", "heinsen_routing", "em_routing", "self_attention_routing",
           "vector_routing", "inverted_routing", "register_routing", "unregister_routing", "get_routing",
           "list_routings", "first_coupling"]
