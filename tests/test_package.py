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


# ---------------------------------------------------------------------------- the package's shape

import ast  # noqa: E402
import os  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import import_cycles  # noqa: E402

PACKAGE = os.path.dirname(os.path.abspath(dc.__file__))


def test_the_import_graph_of_the_package_has_no_cycle():
    graph = import_cycles.import_graph(PACKAGE)
    assert "dgl_capsules.data.registry" in graph and "dgl_capsules.train" in graph
    assert "dgl_capsules.data.canvas" in graph["dgl_capsules.data.registry"]  # imports are read
    assert import_cycles.cycles(graph) == []


def test_the_cycle_finder_sees_cycles_through_deferred_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from .sub.b import f\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g  # deferred, still a dependency\n")
    (pkg / "c.py").write_text("import pkg.sub.b\n")
    assert import_cycles.cycles(import_cycles.import_graph(str(pkg))) == [["pkg.a", "pkg.sub.b"]]
    assert import_cycles.main([str(pkg)]) == 1


#: Functions with more than 80 lines of code, each with the reason it stays (none stays).
LONG_FUNCTIONS = set()

#: Modules with more than 600 lines, each with the reason it stays (none stays).
LONG_MODULES = set()


def _code_lines(lines, node):
    """Lines of code of a function: not blank, not a comment, not its docstring."""
    skip = set()
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        skip = set(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(1 for i in range(node.lineno, node.end_lineno + 1)
               if i not in skip and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def _sizes():
    functions, modules = {}, {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, PACKAGE).replace(os.sep, "/")
            with open(path, encoding="utf-8") as f:
                text = f.read()
            lines = text.splitlines()
            modules[rel] = len(lines)
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions[rel, node.name] = max(functions.get((rel, node.name), 0), _code_lines(lines, node))
    return functions, modules


def test_functions_hold_at_most_80_lines_of_code_and_modules_600_lines():
    functions, modules = _sizes()
    assert functions[("train.py", "train")] > 10 and modules["train.py"] > 100  # the package was read
    long = {key for key, n in functions.items() if n > 80}
    assert long - LONG_FUNCTIONS == set(), {key: functions[key] for key in long - LONG_FUNCTIONS}
    big = {rel for rel, n in modules.items() if n > 600}
    assert big - LONG_MODULES == set(), {rel: modules[rel] for rel in big - LONG_MODULES}


def test_the_allow_lists_name_only_what_is_long():
    """An entry that was split leaves the list, so the list never hides a new long function."""
    functions, modules = _sizes()
    assert {key for key in LONG_FUNCTIONS if functions.get(key, 0) <= 80} == set()
    assert {rel for rel in LONG_MODULES if modules.get(rel, 0) <= 600} == set()
