"""Sphinx configuration: generated pages, API reference from the docstrings and an executed tutorial gallery.

Build with ``make docs`` (``sphinx-build -W -b html docs docs/_build/html``). Every
``tutorials/**/plot_*.py`` runs on each build; ``tutorials/**/*.py`` without the
``plot_`` prefix is rendered but not run. Before anything is read, ``tools/docgen``
writes the Results section with its plots, the API reference (one page per public
module, from the ``__all__`` lists) and the fragments that hand-written pages include.
"""
import os
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The site documents the checkout it is built from, also where another checkout is the installed one.
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))  # gallery_utils, named by string in sphinx_gallery_conf
sys.path.insert(0, str(HERE.parent / "tools"))  # docgen: the generated pages

import matplotlib  # noqa: E402

import dgl_capsules  # noqa: E402

matplotlib.use("Agg")
import docgen  # noqa: E402
import docgen.api  # noqa: E402

# The Results section (results/), the API reference (api/) and the included fragments
# (_generated/) are written on every build from the result JSONs, the __all__ lists, the
# README and bench/results.md; all three folders are git-ignored.
GENERATED = docgen.build(HERE)
print("conf.py: generated", ", ".join(f"{k}: {len(v)}" for k, v in GENERATED.items()))

project = "dgl_capsules"
author = "the dgl_capsules developers"
copyright = "2026, " + author
release = dgl_capsules.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_title = f"dgl_capsules {release}"
html_static_path = ["_static"]
html_css_files = ["anim_controls.css", "tables.css"]
html_favicon = "_static/favicon.svg"

# ---- API reference -------------------------------------------------------
autosummary_generate = True
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpy docstrings say the types and shapes
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # NamedTuple fields as a field list, not duplicate attribute entries
napoleon_custom_sections = ["Shape"]  # layers document their input/output shapes there

# ---- Maths, offline ------------------------------------------------------
# MathJax would come from a CDN, which a machine without internet cannot
# reach (the page then logs a console error and shows raw TeX). The `docs`
# extra installs django-static-mathjax, a pip package that ships MathJax 3 as
# plain files; we copy the parts a page needs into the build's _static.


def _local_mathjax():
    try:
        import mathjax  # django-static-mathjax
    except ImportError:
        return None
    es5 = Path(mathjax.__path__[0]) / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        return None
    dest = HERE / "_build" / "mathjax_static"
    target = dest / "mathjax"
    if not (target / "tex-chtml.js").is_file():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(es5 / "tex-chtml.js", target)
        # Lazily loaded by tex-chtml.js: TeX extensions, output fonts, menu, a11y.
        for sub in ("input", "output", "ui", "a11y", "adaptors"):
            if (es5 / sub).is_dir():
                shutil.copytree(es5 / sub, target / sub, dirs_exist_ok=True)
    return dest


_mathjax_dir = _local_mathjax()
if _mathjax_dir is not None:
    html_static_path.append(str(_mathjax_dir))
    mathjax_path = "mathjax/tex-chtml.js"  # relative to _static
else:  # pragma: no cover - only without the docs extra
    print("conf.py: django-static-mathjax is not installed; maths will load MathJax from its CDN")

# ---- Tutorial gallery ----------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../tutorials",
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"/plot_",  # only plot_*.py run; train_*.py are rendered
    "subsection_order": ["../tutorials/basics", "../tutorials/routing", "../tutorials/models",
                         "../tutorials/performance", "*"],
    "within_subsection_order": "FileNameSortKey",  # plot_NN_ numbers give the order
    "matplotlib_animations": (True, "jshtml"),  # FuncAnimation -> embedded player
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib", "seaborn", "gallery_utils.reset_seeds"),
    "abort_on_example_error": bool(os.environ.get("CI")),
    "doc_module": ("dgl_capsules",),
    "backreferences_dir": "api/generated/backreferences",
    "show_memory": False,
    "remove_config_comments": True,
    "run_stale_examples": True,  # execute every tutorial on every build, even if unchanged
    "download_all_examples": False,
}


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """NamedTuple fields are described in their class's Attributes section; skip the generated
    "Alias for field number N" entries, which would describe them twice."""
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


# Generated pages that would load files from CDNs, which an offline reader
# cannot reach: matplotlib's animation player links Font Awesome (its buttons
# get glyphs from _static/anim_controls.css instead) and sphinx-gallery's
# timing tables load jQuery and DataTables (the tables stay plain tables).
_CDN_TAG = re.compile(r'<(?:link|script)\b[^>]*?(?:href|src)="https?://[^"]*"[^>]*>(?:\s*</script>)?')
_DATATABLES_INIT = re.compile(r'<script type="text/javascript" class="init">.*?</script>', re.S)


def _offline_generated_pages(app, docname, source):
    if docname.startswith(sphinx_gallery_conf["gallery_dirs"]) or docname.endswith("sg_execution_times"):
        source[0] = _DATATABLES_INIT.sub("", _CDN_TAG.sub("", source[0]))


def _warn_undocumented(app):
    """Every public name needs a docstring (or a ``#:`` comment for a constant): a warning, so -W fails."""
    from sphinx.util import logging

    for name in docgen.api.undocumented():
        logging.getLogger(__name__).warning(f"{name} is exported (in an __all__) but has no docstring")


# sphinx.ext.viewcode links each function of a source page back to its entry with the anchor
# <first module that documented something of this file>.<name>; where a file's names are documented
# under two modules (a package and one of its submodules) some anchors miss. Every API entry has a
# page of its own named after it (api/generated/<full name>.html), and its members' anchors extend
# that name: the right anchor is the page's name plus what follows the object's own name.
_BACKLINK = re.compile(r'(href="[^"]*api/generated/([\w.]+)\.html)#([\w.]+)"')


def _backlink(m):
    link, page, anchor = m.groups()
    if anchor == page or anchor.startswith(page + "."):
        return m.group(0)
    short, parts = page.rsplit(".", 1)[-1], anchor.split(".")
    if short not in parts:
        return m.group(0)
    k = len(parts) - 1 - parts[::-1].index(short)
    return f'{link}#{".".join([page] + parts[k + 1:])}"'


def _fix_source_backlinks(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir, "_modules").rglob("*.html"):
        text = page.read_text()
        fixed = _BACKLINK.sub(_backlink, text)
        if fixed != text:
            page.write_text(fixed)


def setup(app):
    app.connect("build-finished", _fix_source_backlinks)
    app.connect("builder-inited", _warn_undocumented)
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("source-read", _offline_generated_pages)
