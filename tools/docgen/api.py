"""The API reference, generated from the ``__all__`` lists of the package and its public modules.

Every name in the ``__all__`` of ``dgl_capsules`` or of any module under it
whose dotted path has no ``_private`` part gets one entry, on the page of the
top-level module or subpackage it belongs to: a class or function under the
shallowest public module that lists it within the subpackage that defines it
(``dgl_capsules.data.ImageDataset``, defined in ``data/datasets.py``), a
constant under the shallowest module whose source documents it with a ``#:``
comment. Other lists that export the same object link to that entry. A new
module with an ``__all__`` appears on the next build without an edit.
"""
import importlib
import inspect
import pkgutil
import shutil
import types
from pathlib import Path

__all__ = ["public_modules", "exported", "entries", "undocumented", "write_api_pages", "ORDER"]

#: Pages in this order first (names relative to the package), then any others alphabetically.
ORDER = ("", "graph", "routing", "functional", "nn", "models", "data", "train", "evaluation", "analysis", "viz", "testing", "contract",
         "reproduce", "files", "cli")


def public_modules(package="dgl_capsules"):
    """Names of the package and of every module under it without a ``_private`` part, that have ``__all__``."""
    root = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    out = []
    for name in names:
        if any(part.startswith("_") for part in name.split(".")[1:]):
            continue
        if hasattr(importlib.import_module(name), "__all__"):
            out.append(name)
    return out


def exported(package="dgl_capsules"):
    """``[(module, name, object)]`` for every name of every public ``__all__``; submodules themselves left out."""
    out = []
    for modname in public_modules(package):
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if not isinstance(obj, types.ModuleType):
                out.append((modname, name, obj))
    return out


def _is_data(obj):
    return not (inspect.isclass(obj) or inspect.isroutine(obj))


def _attr_docs(modname):
    from sphinx.pycode import ModuleAnalyzer

    try:
        return ModuleAnalyzer.for_module(modname).find_attr_docs()
    except Exception:  # no source (a compiled module): nothing documented there
        return {}


def _page_of(package, modname):
    """The page a module belongs to: its first component under the package (``""`` for the package)."""
    rest = modname[len(package) + 1:] if modname != package else ""
    return rest.split(".")[0]


def _depth_key(package, modname):
    page = _page_of(package, modname)
    rank = ORDER.index(page) if page in ORDER else len(ORDER)
    return modname.count("."), rank, modname


def entries(package="dgl_capsules"):
    """``({page: {home module: [name, ...]}}, {(module, name): (home module, name)})`` of every exported name."""
    listing = {}
    for modname, name, obj in exported(package):
        key = ("data", name, id(obj)) if _is_data(obj) else ("object", id(obj))
        listing.setdefault(key, []).append((modname, name, obj))
    pages, home_of = {}, {}
    for key, places in listing.items():
        obj = places[0][2]
        if key[0] == "data":
            documented = [p for p in places if ("", p[1]) in _attr_docs(p[0])]
            candidates = documented or places
        else:
            defined = _page_of(package, getattr(obj, "__module__", "") or "") \
                if (getattr(obj, "__module__", "") or "").startswith(package) else None
            candidates = [p for p in places if _page_of(package, p[0]) == defined] or places
        home = min(candidates, key=lambda p: _depth_key(package, p[0]))
        pages.setdefault(_page_of(package, home[0]), {}).setdefault(home[0], [])
        if home[1] not in pages[_page_of(package, home[0])][home[0]]:
            pages[_page_of(package, home[0])][home[0]].append(home[1])
        for modname, name, _ in places:
            home_of[modname, name] = (home[0], home[1])
    return pages, home_of


def undocumented(package="dgl_capsules"):
    """``["module.name", ...]``: exported classes and functions without a docstring of their own, and
    constants without a ``#:`` comment in the module that documents them."""
    pages, _ = entries(package)
    missing = []
    for modules in pages.values():
        for modname, names in modules.items():
            module = importlib.import_module(modname)
            for name in names:
                obj = getattr(module, name)
                if _is_data(obj):
                    ok = ("", name) in _attr_docs(modname)
                else:  # dataclasses and named tuples without a docstring get "Name(field, ...)"
                    doc = (obj.__doc__ or "").strip()
                    ok = bool(doc) and not doc.startswith(f"{getattr(obj, '__name__', name)}(")
                if not ok:
                    missing.append(f"{modname}.{name}")
    return missing


def _heading(text, char):
    return [text, char * len(text), ""]


def _autosummary(modname, names):
    return [f".. currentmodule:: {modname}", "", ".. autosummary::", "   :toctree: generated", "   :nosignatures:",
            ""] + [f"   {n}" for n in names] + [""]


def _page(package, page, modules, also):
    top = package if not page else f"{package}.{page}"
    out = _heading(f"``{top}``", "=") + [f".. automodule:: {top}", "   :no-members:", ""]
    for modname in sorted(modules, key=lambda m: _depth_key(package, m)):
        if modname != top:
            out += _heading(f"``{modname}``", "-")
        out += _autosummary(modname, modules[modname])
    if also:
        out += _heading("Documented elsewhere", "-")
        out += ["Also exported here, documented under the module that owns it:", ""]
        out += [f"- ``{modname}.{name}``: :obj:`{home[0]}.{home[1]}`" for modname, name, home in also] + [""]
    return "\n".join(out).rstrip() + "\n"


def write_api_pages(out_dir, package="dgl_capsules"):
    """Write ``out_dir/index.rst`` and one page per top-level module; return the page names (``out_dir``
    is emptied first, autosummary writes ``out_dir/generated/`` during the build)."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    pages, home_of = entries(package)
    also = {}
    for (modname, name), home in sorted(home_of.items()):
        # a package re-exporting its own submodules' names is not news; another page's entry is
        if (modname, name) != home and _page_of(package, modname) != _page_of(package, home[0]):
            also.setdefault(_page_of(package, modname), []).append((modname, name, home))
    names = sorted(set(pages) | set(also), key=lambda p: (ORDER.index(p) if p in ORDER else len(ORDER), p))
    files = []
    for page in names:
        stem = page or "package"
        (out_dir / f"{stem}.rst").write_text(_page(package, page, pages.get(page, {}), also.get(page, [])))
        files.append(stem)
    index = _heading("API reference", "=") + [
        "One page per module, generated on every build from the ``__all__`` lists of ``dgl_capsules`` and of "
        "its public modules (``tools/docgen/api.py``); the examples in the docstrings run under ``pytest "
        "--doctest-modules`` (``make test``).", "", ".. toctree::", "   :maxdepth: 1", ""]
    (out_dir / "index.rst").write_text("\n".join(index + [f"   {f}" for f in files]) + "\n")
    return files
