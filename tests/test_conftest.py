"""The test setup itself: markers, skip reasons, threads under xdist."""
import torch

import conftest


def test_markers_are_registered(pytestconfig):
    lines = pytestconfig.getini("markers")
    assert any(line.startswith("slow:") for line in lines)
    assert any(line.startswith("needs(package):") for line in lines)


def test_needs_names_the_pip_extra():
    assert conftest.needs_reason("torch") is None
    assert conftest.extra_of("mlxtend") == "data" and conftest.extra_of("pybullet") == "viewpoints"
    assert conftest.needs_reason("surely_not_a_package_x") == "needs surely_not_a_package_x (pip install surely_not_a_package_x)"


class _Config:
    def __init__(self):
        self.lines = []

    def addinivalue_line(self, name, line):
        self.lines.append((name, line))


def test_one_torch_thread_per_xdist_worker(monkeypatch):
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
        conftest.pytest_configure(_Config())
        assert torch.get_num_threads() == 2  # not a worker: left alone
        monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
        conftest.pytest_configure(_Config())
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(saved)
