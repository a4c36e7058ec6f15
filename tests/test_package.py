"""The top-level package: the outer subpackages are reachable from ``import dgl_capsules``, imported lazily."""
import subprocess
import sys

import pytest

import dgl_capsules as dc


def test_subpackages_are_attributes_of_the_package():
    import dgl_capsules.testing

    assert dc.testing is dgl_capsules.testing
    assert dc.models.__name__ == "dgl_capsules.models"
    assert {"models", "data", "train", "viz", "testing"} <= set(dir(dc))
    with pytest.raises(AttributeError, match="module 'dgl_capsules' has no attribute 'nothing_here'"):
        dc.nothing_here


def test_import_stays_light_and_reaches_models_lazily():
    code = (
        "import sys, dgl_capsules as dc\n"
        "heavy = [m for m in ('dgl_capsules.models', 'dgl_capsules.data', 'dgl_capsules.viz', 'dgl_capsules.train',"
        " 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(dc.models.MatrixCapsNet.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "MatrixCapsNet"


@pytest.mark.parametrize("before, imported_first, expected", [
    (None, "dgl_capsules", "1"),  # the package's default: large tensors in huge pages
    ("0", "dgl_capsules", "0"),  # the user's setting wins
    (None, "torch", "None"),  # torch already imported: too late to matter, so left alone
])
def test_huge_pages_are_asked_for_only_before_torch_and_never_over_the_users_setting(before, imported_first,
                                                                                      expected):
    import os

    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if before is not None:
        env["THP_MEM_ALLOC_ENABLE"] = before
    code = f"import os, {imported_first}, dgl_capsules; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
