"""Which node of a bipartite picture every child and parent is, and the values drawn on them."""
from numbers import Integral

import numpy as np
import torch

from ._trace import n_samples, pick

__all__ = ["node_values", "cols", "rows"]


def node_values(value, name, what, n, trace_shape, sample):
    """``(n,)`` or ``(n, *batch)`` non-negative values -> numpy ``(n,)`` for ``sample``, or None."""
    if value is None:
        return None
    t = torch.as_tensor(value).detach().cpu().double()
    n_trace = n_samples(trace_shape)
    n_here = n_samples(t.shape) if t.dim() else 0
    if t.dim() == 0 or t.shape[0] != n or n_here not in (1, n_trace):
        raise ValueError(
            f"{name} must have shape ({what},) = ({n},) or ({what}, *batch) with the "
            f"trace's batch dimensions {tuple(trace_shape[1:])}; got {tuple(t.shape)}"
        )
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError(
            f"{name} must be finite and non-negative (capsule lengths or activations; "
            "for Heinsen routing's logits pass torch.sigmoid(a_out))"
        )
    return pick(t, None if n_here == 1 else sample)


def cols(g, group_parents, parent_types):
    """Column of every parent: ``(col_of (N_dst,), names, kind, parent type of every parent or None)``."""
    n_dst = g.num_dst_nodes()
    ids = np.arange(n_dst)
    types = None
    if parent_types is not None:
        if isinstance(parent_types, bool) or not isinstance(parent_types, Integral) or parent_types < 1 \
                or n_dst % parent_types:
            raise ValueError(
                f"parent_types must be a positive integer dividing N_dst = {n_dst}; got {parent_types!r}"
            )
        types = ids % int(parent_types)
    elif "parent_type" in g.edata:
        _, dst = g.edges()
        types = np.zeros(n_dst, dtype=np.int64)
        types[dst.cpu().numpy()] = g.edata["parent_type"].cpu().numpy()
    if group_parents is None:
        return ids, [str(j) for j in ids], "parent", types
    if group_parents != "type":
        raise ValueError(f"group_parents must be 'type' or None; got {group_parents!r}")
    if types is None:
        raise ValueError(
            "group_parents='type' needs the parent types per grid position: pass parent_types=C "
            "or use a graph whose edges carry 'parent_type'"
        )
    n_types = int(types.max()) + 1 if n_dst else 0
    return types, [f"type {c}" for c in range(n_types)], "type", None


def rows(g, group_by, child_types):
    """Row of every child in the left column: ``(row_of (N_src,), names, kind)``."""
    n_src = g.num_src_nodes()
    ids = np.arange(n_src)
    if group_by is None:
        return ids, [str(i) for i in ids], "child"
    if isinstance(group_by, str):
        if group_by not in ("type", "position"):
            raise ValueError(f"group_by must be 'type', 'position', a (N_src,) tensor or None; got {group_by!r}")
        if child_types is not None:
            if isinstance(child_types, bool) or not isinstance(child_types, Integral) or child_types < 1 \
                    or n_src % child_types:
                raise ValueError(
                    f"child_types must be a positive integer dividing N_src = {n_src}; got {child_types!r}"
                )
            types = ids % child_types
            n_types = int(child_types)
        elif "child_type" in g.edata:
            src, _ = g.edges()
            types = np.zeros(n_src, dtype=np.int64)
            types[src.cpu().numpy()] = g.edata["child_type"].cpu().numpy()
            n_types = int(types.max()) + 1
        else:
            raise ValueError(
                f"group_by={group_by!r} needs the capsule types per grid position: pass child_types=A "
                "(32 for CapsNet's primary capsules) or use a graph from conv_capsule_graph"
            )
        if group_by == "type":
            return types, [f"type {a}" for a in range(n_types)], "type"
        n_pos = -(-n_src // n_types)
        return ids // n_types, [f"pos {p}" for p in range(n_pos)], "position"
    labels = torch.as_tensor(group_by)
    if labels.shape != (n_src,) or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"group_by as a tensor must hold one integer label per child, shape (N_src,) = ({n_src},); "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    names, row_of = np.unique(labels.cpu().numpy(), return_inverse=True)
    return row_of.reshape(-1), [f"group {n}" for n in names], "group"
