"""Input validation shared by the whole library: one place, one message shape.

Every check raises at the boundary with the Python argument's name, what was
expected and what came, e.g. ``ValueError("votes must have shape (|E|, *, D)
with |E| = 11520 edges of the graph; got (11519, 16)")``.

The dtype rule of the library: the votes tensor decides the dtype and must be
float32 or float64 (:func:`check_float_tensor` without ``dtype``); every other
floating tensor given with it is cast to the votes' dtype (``dtype=votes.dtype``).
Integer tensors and numpy arrays where a float tensor is expected are a
``TypeError`` naming the argument.
"""
from numbers import Integral, Real

import torch

__all__ = [
    "FLOAT_DTYPES",
    "check_positive_int",
    "check_n_iters",
    "check_eps",
    "check_tensor",
    "check_floating",
    "check_float_tensor",
    "check_edge_tensor",
    "check_node_tensor",
    "check_images",
]

#: The dtypes that routing runs in (float16 / bfloat16 are refused on purpose:
#: the routing sums over thousands of edges and the softmax saturate in them).
FLOAT_DTYPES = (torch.float32, torch.float64)


def check_positive_int(name, value):
    """``value`` as an ``int`` if it is an integer >= 1 (not a bool), else ``ValueError`` naming ``name``.

    Examples
    --------
    >>> check_positive_int("n_in", 3)
    3
    """
    if type(value) is int and value >= 1:  # the common case, fast (layers check on every call)
        return value
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value}")
    return int(value)


def check_n_iters(n_iters, name="n_iters"):
    """Routing iterations: an integer >= 1."""
    if isinstance(n_iters, bool) or not isinstance(n_iters, Integral) or n_iters < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {n_iters!r}")
    return int(n_iters)


def check_eps(eps, name="eps"):
    """A positive finite number (NaN and infinity refused)."""
    if isinstance(eps, bool) or not isinstance(eps, Real) or not 0 < eps < float("inf"):
        raise ValueError(f"{name} must be a positive number; got {eps!r}")
    return float(eps)


def _type_name(x):
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__.split('.')[0]}.{t.__name__}"


def check_tensor(name, x, layout):
    """Raise ``TypeError`` unless ``x`` is a ``torch.Tensor`` (a numpy array is told how to convert)."""
    if not isinstance(x, torch.Tensor):
        hint = " (convert it with torch.from_numpy)" if type(x).__module__ == "numpy" else ""
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}; got {_type_name(x)}{hint}")
    return x


def check_floating(name, x, layout):
    """``x`` if it is a floating-point tensor of any dtype, else ``TypeError`` naming ``name`` (losses, diagnostics)."""
    check_tensor(name, x, layout)
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor of shape {layout}; got dtype {x.dtype}")
    return x


def check_float_tensor(name, x, layout, dtype=None):
    """A floating-point tensor, following the library's dtype rule.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    x : object
        What the caller passed.
    layout : str
        The expected shape in words, e.g. ``"(|E|, *, D)"``.
    dtype : torch.dtype, optional
        Without it, ``x`` decides the dtype and must be float32 or float64
        (the votes). With it, any floating tensor is cast to ``dtype`` (the
        tensors that come with the votes).

    Returns
    -------
    torch.Tensor
        ``x``, cast to ``dtype`` if given.

    Raises
    ------
    TypeError
        If ``x`` is not a tensor, not floating point, or (without ``dtype``)
        not float32 / float64.

    Examples
    --------
    >>> import torch
    >>> check_float_tensor("a_in", torch.zeros(3), "(N_src, *)", dtype=torch.float64).dtype
    torch.float64
    """
    check_tensor(name, x, layout)
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor of shape {layout}; got dtype {x.dtype}")
    if dtype is None:
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} must be float32 or float64 (it decides the dtype of the computation; "
                f"cast it with .float()); got {x.dtype}"
            )
        return x
    return x if x.dtype == dtype else x.to(dtype)


def check_edge_tensor(name, x, g, min_dim, layout, dtype=None):
    """A per-edge float tensor with ``|E|`` rows and at least ``min_dim`` dims (see :func:`check_float_tensor`)."""
    x = check_float_tensor(name, x, layout, dtype)
    if x.dim() < min_dim or x.shape[0] != g.num_edges():
        raise ValueError(
            f"{name} must have shape {layout} with |E| = {g.num_edges()} edges of the graph; "
            f"got {tuple(x.shape)}"
        )
    return x


def check_node_tensor(name, x, n, batch_shape, layout, dtype=None):
    """A per-node float tensor of shape ``(n, *batch_shape)`` (see :func:`check_float_tensor`)."""
    x = check_float_tensor(name, x, layout, dtype)
    expected = (n,) + tuple(batch_shape)
    if tuple(x.shape) != expected:
        raise ValueError(f"{name} must have shape {layout} = {expected}; got {tuple(x.shape)}")
    return x


def check_images(name, x, channels=None, size=None, *, batch="B"):
    """A floating-point batch of images ``(B, C, H, W)``.

    Parameters
    ----------
    name : str
        The argument's name.
    x : object
        What the caller passed.
    channels : int, optional
        Required ``C``.
    size : int or (int, int), optional
        Required ``H = W = size``, or ``(H, W)``.
    batch : str
        The letter for the batch axis in the message (``"N"`` for data sets).

    Returns
    -------
    torch.Tensor
        ``x``.

    Raises
    ------
    TypeError
        If ``x`` is not a floating-point tensor.
    ValueError
        If it is not 4-d or its channels / size differ.

    Examples
    --------
    >>> import torch
    >>> check_images("x", torch.zeros(2, 1, 28, 28), channels=1, size=28).shape
    torch.Size([2, 1, 28, 28])
    """
    layout = f"({batch}, C, H, W)"
    check_tensor(name, x, layout)
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor of shape {layout}; got dtype {x.dtype}")
    if size is not None and not isinstance(size, (tuple, list)):
        size = (size, size)
    expected = (
        "C" if channels is None else int(channels),
        "H" if size is None else int(size[0]),
        "W" if size is None else int(size[1]),
    )
    ok = x.dim() == 4 and all(e == n for e, n in zip(expected, x.shape[1:]) if not isinstance(e, str))
    if not ok:
        want = layout if channels is None and size is None else \
            f"{layout} = ({batch}, {', '.join(map(str, expected))})"
        raise ValueError(f"{name} must have shape {want}; got {tuple(x.shape)}")
    return x
