"""dgl_capsules._checks: the one validation module."""
import numpy as np
import pytest
import torch

from dgl_capsules import _checks as C
from dgl_capsules.graph import capsule_graph


def test_check_positive_int():
    assert C.check_positive_int("n", 3) == 3 and C.check_positive_int("n", np.int64(2)) == 2
    for bad in (0, -1, 2.5, True, "3", None):
        with pytest.raises(ValueError, match=r"n must be a positive integer; got"):
            C.check_positive_int("n", bad)


def test_n_iters_and_eps():
    assert C.check_n_iters(2) == 2 and C.check_eps(1e-3) == 1e-3
    with pytest.raises(ValueError, match=r"n_iters must be an integer >= 1; got 0"):
        C.check_n_iters(0)
    for bad in (0, -1.0, float("nan"), float("inf"), "1e-5", True):
        with pytest.raises(ValueError, match=r"eps must be a positive number"):
            C.check_eps(bad)


def test_float_tensor_dtype_rule():
    x = torch.zeros(3, dtype=torch.float64)
    assert C.check_float_tensor("votes", x, "(E,)") is x
    assert C.check_float_tensor("a_in", torch.zeros(3, dtype=torch.float16), "(N,)", dtype=torch.float32).dtype \
        == torch.float32
    for dt in (torch.float16, torch.bfloat16):
        with pytest.raises(TypeError, match=rf"votes must be float32 or float64 .*; got {dt}"):
            C.check_float_tensor("votes", torch.zeros(3, dtype=dt), "(E,)")
    with pytest.raises(TypeError, match=r"a_in must be a floating-point tensor of shape \(N,\); got dtype torch.int64"):
        C.check_float_tensor("a_in", torch.zeros(3, dtype=torch.long), "(N,)", dtype=torch.float32)
    with pytest.raises(TypeError, match=r"votes must be a torch.Tensor of shape \(E,\); got numpy.ndarray "
                                        r"\(convert it with torch.from_numpy\)"):
        C.check_float_tensor("votes", np.zeros(3), "(E,)")
    with pytest.raises(TypeError, match=r"votes must be a torch.Tensor of shape \(E,\); got list"):
        C.check_float_tensor("votes", [0.0], "(E,)")


def test_edge_and_node_tensors():
    g = capsule_graph(3, 2)
    with pytest.raises(ValueError, match=r"votes must have shape \(\|E\|, D\) with \|E\| = 6 edges of the graph; got \(5, 2\)"):
        C.check_edge_tensor("votes", torch.zeros(5, 2), g, 2, "(|E|, D)")
    out = C.check_node_tensor("a_in", torch.zeros(3, 4, dtype=torch.float64), 3, (4,), "(N_src, *)", dtype=torch.float32)
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"a_in must have shape \(N_src, \*\) = \(3, 4\); got \(3, 5\)"):
        C.check_node_tensor("a_in", torch.zeros(3, 5), 3, (4,), "(N_src, *)")


def test_check_images():
    x = torch.zeros(2, 1, 28, 28)
    assert C.check_images("x", x, channels=1, size=28) is x
    assert C.check_images("x", torch.zeros(2, 3, 8, 6), size=(8, 6)) is not None
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) = \(B, 1, 28, 28\); got \(2, 1, 27, 28\)"):
        C.check_images("x", torch.zeros(2, 1, 27, 28), channels=1, size=28)
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\); got \(3, 28, 28\)"):
        C.check_images("images", torch.zeros(3, 28, 28), batch="N")
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\) = \(B, 3, H, W\); got \(2, 1, 5, 5\)"):
        C.check_images("x", torch.zeros(2, 1, 5, 5), channels=3)
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor of shape \(B, C, H, W\); got dtype torch.uint8"):
        C.check_images("x", torch.zeros(2, 1, 5, 5, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor of shape \(B, C, H, W\); got numpy.ndarray"):
        C.check_images("x", np.zeros((2, 1, 5, 5)))


def test_check_floating_accepts_any_float_dtype():
    for dt in (torch.float16, torch.bfloat16, torch.float32):
        x = torch.zeros(2, dtype=dt)
        assert C.check_floating("c", x, "(E,)") is x
    with pytest.raises(TypeError, match=r"c must be a floating-point tensor of shape \(E,\); got dtype torch.bool"):
        C.check_floating("c", torch.zeros(2, dtype=torch.bool), "(E,)")
