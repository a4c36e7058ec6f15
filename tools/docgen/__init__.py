"""Generators of the documentation and the README's generated parts.

Everything here reads the repository (the committed result JSONs in
``results/``, ``bench/results.md``, the README, the package's ``__all__``
lists) and writes reStructuredText, Markdown and PNG files; nothing is
trained or measured. ``docs/conf.py`` calls :func:`build` when Sphinx starts,
``tools/readme_tables.py`` uses :mod:`docgen.summary` for the README.

Only the public functions of :mod:`dgl_capsules.reproduce` are used
(``list_experiments``, ``experiment``, ``load_results``, ``render_table``,
``matched_errors``), so the generators do not depend on how that module is
laid out.
"""
from pathlib import Path

__all__ = ["build"]


def build(docs_dir, repo=None):
    """Write every generated part of the site under ``docs_dir``; return what was written.

    - ``results/``: the Results section, one page per experiment with its plots;
    - ``api/``: the API reference, one page per public module, from the ``__all__`` lists;
    - ``_generated/``: fragments that hand-written pages include (the
      README's installation and command-line sections, the benchmark results).

    All three are git-ignored and rewritten on every build.

    Returns
    -------
    dict
        ``{"results": {page: plot count}, "api": [page, ...], "fragments": [path, ...]}``.
    """
    from . import api, fragments, pages

    docs_dir = Path(docs_dir)
    repo = docs_dir.parent if repo is None else Path(repo)
    return dict(
        results=pages.write_results_section(docs_dir / "results", repo / "results", repo / "docs" / "results_notes"),
        api=api.write_api_pages(docs_dir / "api"),
        fragments=fragments.write_fragments(docs_dir / "_generated", repo),
    )
