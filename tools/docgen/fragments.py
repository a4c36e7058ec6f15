"""Fragments that hand-written pages include, so that the site never repeats a source by hand.

- ``readme_installation.inc``, ``readme_command_line.inc``: those README
  sections, converted from Markdown;
- ``datasets.inc``: what ``dgl-capsules data --list`` prints;
- ``bench_scripts.inc``: every ``bench/bench_*.py`` with its command and the
  first line of its docstring;
- ``bench_results.inc``: ``bench/results.md``, the last ``make bench`` run;
- ``routings.inc``: every routing family of
  :func:`dgl_capsules.routing.list_routings` with its paper and function.
"""
import ast
import contextlib
import io
import shutil
from pathlib import Path

from . import markdown

__all__ = ["write_fragments", "README_SECTIONS", "bench_scripts", "data_list", "routings_rst"]

#: README sections included in the site's home page: ``{title: fragment name}``.
README_SECTIONS = {"Installation": "readme_installation", "Command line": "readme_command_line"}


def _readme_link(url):
    """README links in the site: the README's own links to the built site become links within it."""
    prefix = "docs/_build/html/"
    return url[len(prefix):] if url.startswith(prefix) else url


def data_list():
    """The output of ``dgl-capsules data --list``."""
    from dgl_capsules import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(["data", "--list"])
    if status != 0:
        raise RuntimeError(f"dgl-capsules data --list exited with {status}")
    return out.getvalue()


def bench_scripts(bench_dir):
    """``[(script, first docstring line), ...]`` of ``bench_dir/bench_*.py`` and ``run_all.py``, sorted."""
    out = []
    for path in sorted(Path(bench_dir).glob("*.py")):
        if path.name.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        out.append((path.name, doc.strip().splitlines()[0] if doc.strip() else ""))
    return out


def _bench_scripts_rst(bench_dir):
    rows = [["command", "what it measures"]]
    for name, line in bench_scripts(bench_dir):
        rows.append([f"`python bench/{name}`", line.replace("``", "`")])
    return "\n".join(markdown.list_table(rows, widths=(35, 65)))


def routings_rst():
    """A table of every registered routing family: its name, what it is, its paper, its function."""
    from dgl_capsules import routing

    rows = [["name", "what", "paper", "function", "iterations"]]
    for name in routing.list_routings():
        spec = routing.get_routing(name)
        fn = spec.fn.__name__
        # a function exported by dgl_capsules.routing links to its API entry; any other is named
        ref = f"\x02~dgl_capsules.routing.{fn}\x03" if getattr(routing, fn, None) is spec.fn else f"`{fn}`"
        rows.append([f"`{name}`", spec.label, spec.citation or "", ref, "yes" if spec.iterative else "one pass"])
    lines = markdown.list_table(rows, widths=(15, 30, 25, 20, 10))
    return "\n".join(line.replace("\x02", ":func:`").replace("\x03", "`") for line in lines)


def write_fragments(out_dir, repo):
    """Write every fragment into ``out_dir`` (emptied first); return their paths."""
    out_dir, repo = Path(out_dir), Path(repo)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    readme = (repo / "README.md").read_text()
    texts = {stem: markdown.to_rst(markdown.section(readme, title), link=_readme_link, top=2)
             for title, stem in README_SECTIONS.items()}
    listing = data_list()
    texts["datasets"] = "\n".join([".. code-block:: text", "", "   $ dgl-capsules data --list"]
                                  + [f"   {line}".rstrip() for line in listing.splitlines()]) + "\n"
    texts["bench_scripts"] = _bench_scripts_rst(repo / "bench")
    texts["routings"] = routings_rst()
    texts["bench_results"] = markdown.to_rst((repo / "bench" / "results.md").read_text(), top=3)
    paths = []
    for stem, text in texts.items():
        path = out_dir / f"{stem}.inc"
        path.write_text(text)
        paths.append(path)
    return paths
