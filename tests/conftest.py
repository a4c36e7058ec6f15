import pytest
import torch


@pytest.fixture(autouse=True)
def seed():
    """Every test starts from the same random state."""
    torch.manual_seed(0)
    return 0


def tol(dtype):
    """(rtol, atol) for comparing two formulations of the same maths in ``dtype``."""
    return {
        torch.float64: (1e-10, 1e-12),
        torch.float32: (1e-4, 1e-5),
    }[dtype]
