"""The generated documentation: the API reference covers every public name, the README and the Results
section come from the result JSONs, the site check finds broken links."""
import importlib
import inspect
import json
import pkgutil
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import readme_tables  # noqa: E402
from docgen import markdown, pages, plots, summary  # noqa: E402
from dgl_capsules.reproduce import experiment  # noqa: E402

needs_sphinx = pytest.mark.needs("sphinx")


# ---------------------------------------------------------------------------- the API reference


def public_names(package):
    """``[(module, name, object)]`` of every ``__all__`` of the package and its modules without a ``_`` part."""
    root = importlib.import_module(package)
    modules = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    out = []
    for modname in modules:
        if any(part.startswith("_") for part in modname.split(".")[1:]):
            continue
        module = importlib.import_module(modname)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if not isinstance(obj, types.ModuleType):
                out.append((modname, name, obj))
    return out


def documented_entries(api_dir):
    """``{(module, name)}`` of every autosummary entry of the generated pages."""
    entries = set()
    for page in Path(api_dir).glob("*.rst"):
        module = None
        in_summary = False
        for line in page.read_text().splitlines():
            if line.startswith(".. currentmodule:: "):
                module = line.split("::")[1].strip()
            elif line.startswith(".. autosummary::"):
                in_summary = True
            elif in_summary and line.startswith("   ") and not line.strip().startswith(":"):
                entries.add((module, line.strip()))
            elif in_summary and line and not line.startswith(" "):
                in_summary = False
    return entries


def api_problems(package, api_dir):
    """What the API reference in ``api_dir`` lacks: names without an entry, entries without a docstring."""
    from sphinx.pycode import ModuleAnalyzer

    entries = documented_entries(api_dir)
    by_object = {}
    for modname, name in entries:
        obj = getattr(importlib.import_module(modname), name)
        by_object.setdefault(id(obj), []).append((modname, name))
    problems = []
    for modname, name, obj in public_names(package):
        homes = [e for e in by_object.get(id(obj), []) if inspect.isclass(obj) or inspect.isroutine(obj)
                 or e[1] == name]
        if not homes:
            problems.append(f"{modname}.{name}: no API entry")
            continue
        home_module, home_name = homes[0]
        if inspect.isclass(obj) or inspect.isroutine(obj):
            doc = (obj.__doc__ or "").strip()
            if not doc or doc.startswith(f"{obj.__name__}("):  # the dataclass / namedtuple placeholder
                problems.append(f"{modname}.{name}: no docstring")
        elif ("", home_name) not in ModuleAnalyzer.for_module(home_module).find_attr_docs():
            problems.append(f"{modname}.{name}: no #: comment in {home_module}")
    return problems


@needs_sphinx
def test_every_public_name_has_an_api_entry_and_a_docstring(tmp_path):
    from docgen import api

    api.write_api_pages(tmp_path)
    assert api_problems("dgl_capsules", tmp_path) == []
    assert api.undocumented() == []  # what docs/conf.py turns into a warning (-W: an error)
    index = (tmp_path / "index.rst").read_text()
    for page in ("graph", "routing", "nn", "models", "data", "train", "evaluation", "analysis", "viz", "testing",
                 "contract", "reproduce", "cli"):
        assert f"   {page}\n" in index
    entries = documented_entries(tmp_path)
    assert ("dgl_capsules.models", "check_model") in entries
    # constants re-exported by dgl_capsules.testing are documented where their #: comment is
    assert ("dgl_capsules.contract.routing", "ROUTING_CHECKS") in entries
    assert ("dgl_capsules.routing.registry", "KINDS") in entries
    assert not any(module == "dgl_capsules.testing" and name in ("ROUTING_CHECKS", "LAYER_CHECKS", "KINDS")
                   for module, name in entries)


def fake_package(root):
    """A package with a documented function, an undocumented one and an undocumented constant."""
    pkg = root / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A fake package."""\nfrom .sub import good, bad\n__all__ = ["good", "bad"]\n')
    (pkg / "sub" / "__init__.py").write_text(
        '"""Its subpackage."""\n__all__ = ["good", "bad", "LIMIT", "NOTED"]\nLIMIT = 3\n#: A documented constant.\n'
        'NOTED = 4\n\n\ndef good():\n    """Documented."""\n\n\ndef bad():\n    pass\n')
    return pkg


@pytest.fixture
def fakepkg(tmp_path, monkeypatch):
    fake_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for mod in [m for m in sys.modules if m.startswith("fakepkg")]:
        del sys.modules[mod]


@needs_sphinx
def test_the_api_check_fails_on_a_missing_docstring_or_a_missing_entry(tmp_path, fakepkg):
    from docgen import api

    pages_dir = tmp_path / "api"
    assert api.write_api_pages(pages_dir, package="fakepkg") == ["package", "sub"]
    assert sorted(api_problems("fakepkg", pages_dir)) == ["fakepkg.bad: no docstring",
                                                           "fakepkg.sub.LIMIT: no #: comment in fakepkg.sub",
                                                           "fakepkg.sub.bad: no docstring"]
    assert sorted(api.undocumented("fakepkg")) == ["fakepkg.sub.LIMIT", "fakepkg.sub.bad"]
    sub = pages_dir / "sub.rst"  # a page that forgets a name
    sub.write_text(sub.read_text().replace("   NOTED\n", ""))
    assert "fakepkg.sub.NOTED: no API entry" in api_problems("fakepkg", pages_dir)


# ---------------------------------------------------------------------------- results: README and pages


def write_run(root, experiment, row, seed, accuracy, epochs=3, cpu=True, **extra):
    from dgl_capsules.reproduce import experiment as get

    slug = get(experiment).row(row).slug
    folder = Path(root) / experiment
    folder.mkdir(parents=True, exist_ok=True)
    curve = [dict(epoch=e, train_accuracy=accuracy - 0.01 / e, val_accuracy=accuracy - 0.02 / e, seconds=60.0 * e)
             for e in range(1, epochs + 1)]
    rec = dict(experiment=experiment, row=row, seed=seed, test_accuracy=accuracy, curve=curve, best_epoch=epochs,
               seconds=3600.0, threads=1, parameters=1000, machine="test machine", commit="abc", **extra)
    if cpu:
        rec["cpu_seconds"] = 7200.0
    (folder / f"{slug}-seed{seed}.json").write_text(json.dumps(rec))


def test_summary_line_is_the_headline_row_over_its_seeds_beside_the_cnn(tmp_path):
    for seed, acc in enumerate((0.990, 0.992, 0.994)):
        write_run(tmp_path, "sabour-table1", "3 iterations + reconstruction", seed, acc)
    write_run(tmp_path, "sabour-table1", "CNN (width-matched)", 0, 0.98)
    s = summary.summary("sabour-table1", tmp_path)
    assert s["ours"] == "99.20 ± 0.20 %" and s["seeds"] == "3 of 3"
    assert s["cnn"] == "98.00 % (1 seed)"
    assert s["paper"].startswith("99.75 %") and "99.66 % mean / 99.71 % best" in s["public"]
    assert (s["finished"], s["planned"]) == (4, 9)
    missing = summary.summary("sabour-official", tmp_path)  # no JSON: planned, with the estimate
    hours = experiment("sabour-official").hours
    assert missing["ours"] == f"not run yet (estimated {hours:g} h)" and missing["seeds"] == "0 of 3"
    table = summary.summary_markdown(tmp_path, lambda name: f"site/{name}.html")
    lines = table.splitlines()
    assert len(lines) == 2 + len(summary.documented_experiments())
    assert "| [`sabour-table1`](site/sabour-table1.html) |" in lines[2]
    assert "| 99.20 ± 0.20 % | 3 of 3 | 98.00 % (1 seed) |" in lines[2]


def test_summary_line_without_headline_results_names_the_other_capsule_rows_that_have_them(tmp_path):
    write_run(tmp_path, "efficient-capsnet", "Efficient-CapsNet, 30 epochs", 0, 0.9961)
    write_run(tmp_path, "efficient-capsnet", "CNN (same parameters, same decoder)", 0, 0.9950)
    s = summary.summary("efficient-capsnet", tmp_path)
    hours = experiment("efficient-capsnet").hours
    assert s["ours"] == f"not run yet (estimated {hours:g} h); Efficient-CapsNet, 30 epochs: 99.61 % (1 seed)"
    assert s["seeds"] == "0 of 3" and s["cnn"] == "99.50 % (1 seed)"


def test_experiments_without_a_headline_entry_still_get_a_line(monkeypatch, tmp_path):
    from dgl_capsules import reproduce

    exp = reproduce.experiment("tiny")
    assert summary.headline_row(exp).label == "1 iteration"  # the first trained row that is not a CNN
    monkeypatch.setattr(summary, "is_smoke_test", lambda name: False)
    assert "tiny" in summary.documented_experiments()
    assert summary.summary("tiny", tmp_path)["ours"] == "not run yet (estimated 0 h)"


def test_novel_error_headline_is_read_at_matched_familiar_error(tmp_path):
    for row, familiar, novel in [("CapsNet `small` (dynamic routing)", [0.5, 0.1, 0.05], [0.9, 0.6, 0.5]),
                                 ("CNN (width-matched)", [0.5, 0.2, 0.1], [0.9, 0.7, 0.4])]:
        write_run(tmp_path, "viewpoints", row, 0, 1 - familiar[-1])
        path = next((tmp_path / "viewpoints").glob(f"{row.split()[0].lower()}-*-seed0.json"))
        rec = json.loads(path.read_text())
        rec["curve"] = [dict(epoch=e, train_accuracy=0.9, val_accuracy=0.9, test_accuracy=1 - f,
                             novel_accuracy=1 - n, seconds=10.0 * e) for e, (f, n) in enumerate(zip(familiar, novel), 1)]
        path.write_text(json.dumps(rec))
    s = summary.summary("viewpoints", tmp_path)
    assert s["ours"] == "60.00 % novel error"  # T = 10 %: CapsNet read at epoch 2, the CNN at epoch 3
    assert s["cnn"] == "40.00 % (1 seed)"


def test_readme_is_a_short_users_page_whose_generated_parts_are_up_to_date(capsys):
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "make demo   # set up .venv, train a small CapsNet on 5,000 real MNIST digits, draw its routing" in text
    assert "make test   # set up .venv and run the tests" in text
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):  # every picture is there, with its command
        assert (ROOT / image).is_file()
        assert "python tools/readme_figure.py" in text
    assert readme_tables.main(["--readme", str(ROOT / "README.md"), "--results", str(ROOT / "results"),
                               "--check"]) == 0, "run python tools/readme_tables.py"
    assert "up to date (summary, routing-necessity, robustness)" in capsys.readouterr().out


def test_readme_tables_writes_the_summary_between_its_markers(tmp_path):
    write_run(tmp_path / "results", "em-mnist", "MatrixCapsNet `small`", 0, 0.9882)
    readme = tmp_path / "README.md"
    readme.write_text("# T\n\nkept\n<!-- results-summary -->\nold\n<!-- /results-summary -->\nafter\n")
    args = ["--readme", str(readme), "--results", str(tmp_path / "results")]
    assert readme_tables.main(args + ["--check"]) == 1
    assert readme_tables.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# T\n\nkept\n<!-- results-summary -->\n| experiment |")
    assert text.endswith("<!-- /results-summary -->\nafter\n") and "old" not in text
    assert "[`em-mnist`](docs/_build/html/results/em-mnist.html)" in text and "| 98.82 % | 1 of 1 |" in text
    assert readme_tables.main(args + ["--check"]) == 0


def test_results_section_has_a_page_per_experiment_with_plots_or_a_plan(tmp_path):
    results, out = tmp_path / "results", tmp_path / "site"
    for seed, acc in enumerate((0.990, 0.994)):
        write_run(results, "sabour-table1", "3 iterations + reconstruction", seed, acc)
        write_run(results, "sabour-table1", "CNN (width-matched)", seed, acc - 0.001, cpu=False)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "sabour-table1.txt").write_text("What it shows\n-------------\n\nA made-up note.\n")
    written = pages.write_results_section(out, results, notes)
    names = summary.documented_experiments()
    assert sorted(written) == sorted(names + ["index"])
    assert written["sabour-table1"] == 2 and written["index"] == 1  # curves and cost; the cost of all
    assert all(written[n] == 0 for n in names if n != "sabour-table1")
    page = (out / "sabour-table1.rst").read_text()
    assert "dgl-capsules reproduce sabour-table1" in page and "A made-up note." in page
    assert "4 of 9 planned runs finished." in page and "99.20 ± 0.28 % (2 seeds)" in page
    figures = re.findall(r"^\.\. figure:: (\S+)$", page, re.M)
    assert figures == ["plots/sabour-table1-curves.png", "plots/sabour-table1-cost.png"]
    from PIL import Image

    for fig in figures:
        with Image.open(out / fig) as im:
            assert im.format == "PNG" and im.size[0] >= 400
    for name in names:  # every experiment without a JSON says so, with its command and no figure
        if name != "sabour-table1":
            text = (out / f"{name}.rst").read_text()
            assert "**Planned: no run has finished yet.**" in text and "**not run yet" in text, name
            assert f"dgl-capsules reproduce {name}" in text and ".. figure::" not in text, name
    planned = (out / "sabour-official.rst").read_text()
    assert "**Planned: no run has finished yet.**" in planned
    hours = experiment("sabour-official").hours
    assert "dgl-capsules reproduce sabour-official" in planned and f"Estimated time: {hours:g} h" in planned
    assert ".. figure::" not in planned and "official schedule" in planned
    index = (out / "index.rst").read_text()
    assert ".. toctree::" in index and all(f"   {n}\n" in index for n in names)
    assert ":doc:`sabour-table1 <sabour-table1>`" in index and "plots/all-cost.png" in index


def test_a_longer_schedule_is_drawn_beside_the_row_it_questions(tmp_path):
    results, out = tmp_path / "results", tmp_path / "site"
    write_run(results, "sabour-table1", "3 iterations + reconstruction", 0, 0.995, epochs=4)
    write_run(results, "sabour-table1", "CNN (width-matched)", 0, 0.994, epochs=4)
    write_run(results, "sabour-official", "3 iterations + reconstruction, official schedule", 0, 0.996, epochs=9)
    written = pages.write_results_section(out, results, tmp_path / "no-notes")
    page = (out / "sabour-official.rst").read_text()
    figures = re.findall(r"^\.\. figure:: (\S+)$", page, re.M)
    assert "plots/sabour-official-beside-sabour-table1.png" in figures and written["sabour-official"] == 3
    assert "of sabour-table1's row \"3 iterations + reconstruction\" on one axes" in page
    lines = plots.beside_figure([("a", {0: dict(curve=[])})], tmp_path / "none.png", "t")
    assert lines is None and not (tmp_path / "none.png").exists()  # no curve, no figure
    fig_path = out / "plots/sabour-official-beside-sabour-table1.png"
    from PIL import Image

    with Image.open(fig_path) as im:
        assert im.format == "PNG" and im.size[0] >= 600


def test_plots_tell_cpu_hours_from_training_hours():
    from docgen import plots

    assert plots.run_hours(dict(cpu_seconds=7200.0, seconds=3600.0)) == (2.0, True)
    assert plots.run_hours(dict(seconds=5400.0)) == (1.5, False)
    rec = dict(best_epoch=2, curve=[dict(novel_accuracy=0.1), dict(novel_accuracy=0.3)])
    assert plots.run_metric(rec, "novel_error") == 0.3 and plots.run_metric(dict(affine_accuracy=0.9),
                                                                          "affine_accuracy") == 0.9


# ---------------------------------------------------------------------------- Markdown, fragments, site check


def test_markdown_becomes_restructuredtext():
    md = ("## Title\n\nA `code` word, **bold**, a [link](a/b.html) and |E|.\n\n| a | b |\n| --- | --- |\n"
          "| `x` | 1 \\| 2 |\n\n```bash\nmake docs\n```\n\n- one\n  more\n- two\n")
    rst = markdown.to_rst(md)
    assert "Title\n-----\n" in rst
    assert "A ``code`` word, **bold**, a `link <a/b.html>`__ and \\|E\\|." in rst
    assert ".. list-table::\n   :header-rows: 1" in rst and "   * - ``x``\n     - 1 \\| 2" in rst
    assert ".. code-block:: bash\n\n   make docs\n" in rst
    assert "- one more\n- two\n" in rst
    assert markdown.inline("`a`s") == "``a``\\ s"
    assert markdown.section("# A\n## B\ntext\n## C\nother\n", "B") == "text\n"
    with pytest.raises(ValueError, match="title: no section 'D' in the Markdown"):
        markdown.section("# A\n", "D")


def test_fragments_come_from_their_sources(tmp_path):
    from docgen import fragments

    written = {p.name for p in fragments.write_fragments(tmp_path, ROOT)}
    assert written == {"readme_installation.inc", "readme_command_line.inc", "datasets.inc", "bench_scripts.inc",
                       "bench_results.inc", "routings.inc"}
    from dgl_capsules.routing import list_routings

    routings = (tmp_path / "routings.inc").read_text()
    assert all(f"   * - ``{name}``\n" in routings for name in list_routings())
    assert ":func:`~dgl_capsules.routing.self_attention_routing`" in routings
    assert "**Why torch is pinned to 2.2.1:**" in (tmp_path / "readme_installation.inc").read_text()
    datasets = (tmp_path / "datasets.inc").read_text()
    assert "$ dgl-capsules data --list" in datasets and "mnist5k" in datasets
    scripts = (tmp_path / "bench_scripts.inc").read_text()
    assert all(f"``python bench/{p.name}``" in scripts for p in (ROOT / "bench").glob("bench_*.py"))


def test_site_check_finds_missing_pages_and_anchors(tmp_path):
    import check_site

    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#here">ok</a><a href="sub/page.html#gone">anchor</a><a href="nothing.html">file</a>'
        '<a href="https://example.org/x">other site</a><img src="sub/missing.png"><a href="#top">self</a>'
        '<h1 id="top">t</h1>')
    (tmp_path / "sub" / "page.html").write_text('<p id="here">x</p><a href="../index.html">back</a>')
    assert check_site.broken_links(tmp_path) == {"index.html": [
        "link to a missing anchor: sub/page.html#gone", "link to a missing file: nothing.html",
        "image to a missing file: sub/missing.png"]}
