"""The routing and layer contracts: named checks that return what they measured.

:mod:`dgl_capsules.testing` is the public face of this package (it also holds
the dense references the routing contract compares with).
"""
from ._measure import ContractError, Deviation, passed
from .layer import LAYER_CHECKS, LayerSubject, check_layer_contract, measure_layer_contract
from .routing import (
    ROUTING_CHECKS, RoutingSubject, check_routing_contract, measure_routing_contract, routing_subject,
)

__all__ = [
    "ContractError", "Deviation", "passed", "LAYER_CHECKS", "LayerSubject", "check_layer_contract",
    "measure_layer_contract", "ROUTING_CHECKS", "RoutingSubject", "check_routing_contract",
    "measure_routing_contract", "routing_subject",
]
