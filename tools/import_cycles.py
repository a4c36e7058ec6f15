"""Find import cycles among the modules of a package, statically (from ``ast``, nothing is imported).

Every ``import`` and ``from ... import`` of the package's own modules counts,
at module level or inside a function: an import deferred into a function is
still a dependency, and a cycle through it is still a cycle. ``from pkg import
name`` depends on the module ``pkg.name`` if there is one, else on ``pkg``
(its ``__init__``). The implicit import of a module's parent packages is not
counted (every submodule would otherwise depend on its package, whose
``__init__`` imports it).

    python tools/import_cycles.py            # dgl_capsules next to this folder; exit 1 if there is a cycle
    python tools/import_cycles.py PATH/pkg
"""
import ast
import os
import sys


def modules(package_dir):
    """``{dotted module name: file path}`` of every ``.py`` file under ``package_dir``."""
    package_dir = os.path.abspath(package_dir)
    base = os.path.dirname(package_dir)
    out = {}
    for folder, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                out[dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return out


def _targets(module, node, is_package, known):
    """The package modules that one import statement of ``module`` depends on."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            parts = (module if is_package else module.rpartition(".")[0]).split(".")
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    out = set()
    for name in names:
        while name and name not in known:  # ``import a.b.c`` of a function or class: its module
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def import_graph(package_dir):
    """``{module: set of package modules it imports}``."""
    known = modules(package_dir)
    graph = {}
    for module, path in known.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= _targets(module, node, path.endswith("__init__.py"), known)
        graph[module] = deps - {module}
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (each a sorted list), sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    package = argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dgl_capsules")
    found = cycles(import_graph(package))
    for component in found:
        print("import cycle: " + " <-> ".join(component))
    if not found:
        print(f"{os.path.basename(os.path.abspath(package))}: no import cycle among "
              f"{len(modules(package))} modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
