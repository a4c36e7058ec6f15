"""The Results section: an index with the summary table and one page per experiment, with plots.

Every page is generated from the catalogue (:func:`dgl_capsules.reproduce.experiment`)
and the committed JSONs in ``results/NAME/``; the hand-written part of a page,
what the experiment shows and what it does not, is ``docs/results_notes/NAME.txt``
(reStructuredText, optional). An experiment without a finished run gets a
page with its plan, its command and its estimate; the page fills itself in
when the JSONs land.
"""
import re
import shutil
from pathlib import Path

from dgl_capsules.reproduce import experiment, load_results, render_table

from . import markdown, plots
from .summary import SUMMARY_COLUMNS, documented_experiments, progress, summary

__all__ = ["write_results_section", "experiment_page", "index_page", "EXTRA_PAGES", "CURVES_BESIDE"]

#: Experiments whose curves are drawn beside another experiment's row: ``{name: (other experiment, row label)}``.
CURVES_BESIDE = {"sabour-official": ("sabour-table1", "3 iterations + reconstruction")}

#: Hand-written pages of ``docs/`` listed in the Results section after the experiments.
EXTRA_PAGES = ("mnist5k_notebook",)


def _title(text, char="="):
    text = markdown.inline(text)
    return [text, char * len(text), ""]


def _notes(notes_dir, name):
    path = Path(notes_dir) / f"{name}.txt"
    return path.read_text().rstrip() + "\n" if path.is_file() else ""


def _settings(config):
    return ", ".join(f"{k}={v!r}" for k, v in config.items())


def _rows_table(exp, results):
    rows = [["row", "seeds: finished of planned", "settings (TrainConfig fields)", "paper"]]
    for r in exp.rows:
        if r.same_as is not None:
            rows.append([r.label, f"not trained: equals {r.same_as}", "", r.paper])
            continue
        done = sorted(set(results.get(r.label, {})))
        rows.append([r.label, f"{sum(s in done for s in r.seeds)} of {len(r.seeds)} (planned: "
                     f"{', '.join(map(str, r.seeds))})", f"`{_settings(r.config)}`", r.paper])
    return markdown.list_table(rows, widths=(20, 15, 45, 20))


def _table_rst(name, results_dir):
    """:func:`render_table` without its own title and command line, as reStructuredText."""
    text = render_table(name, str(results_dir))
    lines = [line for line in text.splitlines() if not line.startswith("### ")
             and line.strip() != f"`dgl-capsules reproduce {name}`"]
    return markdown.to_rst("\n".join(lines))


def _figure(path, alt, caption):
    return [f".. figure:: plots/{path.name}", f"   :alt: {alt}", "   :width: 100%", "", f"   {caption}", ""]


def _beside_figure(exp, results, results_root, plot_dir):
    """The :data:`CURVES_BESIDE` figure of ``exp`` (None if it has none or no run has a curve)."""
    if exp.name not in CURVES_BESIDE:
        return None
    other, row = CURVES_BESIDE[exp.name]
    runs = [(f"{exp.name}: {r.label}", results[r.label]) for r in exp.rows if r.label in results]
    runs.append((f"{other}: {row}", load_results(other, str(Path(results_root) / other)).get(row, {})))
    return plots.beside_figure(runs, plot_dir / f"{exp.name}-beside-{other}.png",
                               f"{exp.name} beside {other}: training (dashed) and validation (solid) error")


def experiment_page(name, results_root, notes_dir, plot_dir):
    """The reStructuredText of experiment ``name``'s page and the plots it drew (paths)."""
    exp = experiment(name)
    results_dir = Path(results_root) / name
    results = load_results(name, str(results_dir))
    finished, planned = progress(exp, results)
    hours = f"{exp.hours:g} h" if exp.hours is not None else "not estimated"
    out = [f".. _results-{name}:", ""] + _title(exp.title)
    status = (f"{finished} of {planned} planned runs finished." if finished else
              f"**Planned: no run has finished yet.** This page fills itself in when the first result JSON "
              f"lands in ``results/{name}/``.")
    line = summary(name, results_root)
    out += [status, "", f":Headline: {markdown.inline(line['what'])}: **{line['ours']}** (row "
            f"{markdown.inline(line['row'])}, {line['seeds']} seeds)"]
    out += [f":Width-matched CNN: {line['cnn']}"] if line["cnn"] else []
    out += [f":Paper: {markdown.inline(line['paper'])}",
            f":Best public reproduction: {markdown.inline(line['public'])}",
            "", ".. code-block:: bash", "", f"   dgl-capsules reproduce {name}", "",
            f"trains every planned run that has no result yet, resumes stopped ones (stop it any time) and "
            f"writes ``results/{name}/<row>-seed<k>.json`` and ``results/{name}/table.md``. Estimated time: "
            f"{hours}" + (f" ({markdown.inline(exp.estimate)})." if exp.estimate else "."), ""]
    drawn = []
    if results:
        out += _title("Results", "-") + [_table_rst(name, results_dir)]
    notes = _notes(notes_dir, name)
    if notes:
        out += [notes]
    if results:
        out += _title("Plots", "-")
        curves = plots.curves_figure(exp, results, plot_dir / f"{name}-curves.png")
        if curves:
            drawn.append(curves)
            out += _figure(curves, f"training and validation error per epoch of every run of {name}",
                           "Training (dashed) and validation (solid) error per epoch of every run, one panel per "
                           "row, one colour per seed; error = 100 - accuracy, log scale.")
        beside = _beside_figure(exp, results, results_root, plot_dir)
        if beside:
            drawn.append(beside)
            out += _figure(beside, f"curves of {name} beside {CURVES_BESIDE[name][0]}",
                           f"Training (dashed) and validation (solid) error per epoch of this experiment's runs "
                           f"and of {CURVES_BESIDE[name][0]}'s row \"{CURVES_BESIDE[name][1]}\" on one axes.")
        if exp.table == "matched":
            view = plots.viewpoints_figure(exp, results, plot_dir / f"{name}-viewpoints.png")
            if view:
                drawn.append(view)
                out += _figure(view, f"familiar and novel viewpoint error of {name}",
                               "Left: familiar (solid) and novel (dashed) test error after every epoch. Right: "
                               "the same as novel against familiar error; the dotted line is the matched "
                               "familiar error T at which the table reads every row (stars).")
        cost, _ = plots.cost_figure([name], lambda n: results, plot_dir / f"{name}-cost.png",
                                    title=f"{name}: accuracy against the hours each run took")
        if cost:
            drawn.append(cost)
            out += _figure(cost, f"accuracy against hours per run of {name}",
                           "Each run's number against the hours it took: filled markers are CPU-hours (all "
                           "threads), hollow ones training wall-clock hours for runs made before CPU time was "
                           "recorded. Capsule networks blue, CNNs orange.")
    out += _title("Rows and settings", "-") + _rows_table(exp, results)
    if exp.paper and not results:
        out += [f"Published figures: {markdown.inline(exp.paper)}.", ""]
    return "\n".join(out).rstrip() + "\n", drawn


def _summary_table(results_root):
    rows = [list(SUMMARY_COLUMNS)]
    for name in documented_experiments():
        s = summary(name, results_root)
        rows.append([f"\x02{name} <{name}>\x03", s["what"], s["ours"], s["seeds"], s["cnn"] or "none", s["paper"],
                     s["public"]])
    lines = markdown.list_table(rows, widths=(12, 24, 12, 6, 12, 16, 18))
    return [line.replace("\x02", ":doc:`").replace("\x03", "`") for line in lines]


def index_page(names, results_root, notes_dir, plot_dir):
    """The Results index: the notes' introduction, the summary table, the cost plot of every experiment."""
    notes = _notes(notes_dir, "index")
    first = re.search(r"^.+\n-{3,}$", notes, re.M)  # the introduction, then the table, then the sections
    intro, sections = (notes[:first.start()], notes[first.start():]) if first else (notes, "")
    out = [".. _results:", ""] + _title("Results") + [intro.rstrip(), ""]
    out += _title("One line per experiment", "-")
    out += ["Generated from the committed result JSONs (``results/NAME/*.json``) by ``tools/docgen``, the "
            "same tool as the README's table (``python tools/readme_tables.py``). \"ours\" is the mean ± "
            "sample standard deviation over the finished seeds of the row named in \"what\".", ""]
    out += _summary_table(results_root)
    loaded = {}

    def load(name):
        if name not in loaded:
            loaded[name] = load_results(name, str(Path(results_root) / name))
        return loaded[name]

    cost, panels = plots.cost_figure(names, load, plot_dir / "all-cost.png",
                                     title="Every finished run: its number against the hours it took")
    drawn = []
    if cost:
        drawn.append(cost)
        out += _title("Accuracy against CPU-hours", "-")
        out += _figure(cost, "accuracy against hours per run, capsule networks and CNNs, every experiment",
                       f"{panels} experiments, one panel each. Filled markers: CPU-hours (all threads and "
                       "processes of the run); hollow markers: training wall-clock hours, for runs made before "
                       "CPU time was recorded (several of those ran on one thread beside another run). Capsule "
                       "networks blue, width-matched CNNs orange; the y axis is each experiment's headline "
                       "measure (for the viewpoint experiments: the novel-viewpoint accuracy of the "
                       "validation-selected model).")
    out += [sections.rstrip(), ""] if sections else []
    out += [".. toctree::", "   :maxdepth: 1", "   :caption: Experiments", ""]
    out += [f"   {name}" for name in names] + [f"   /{p}" for p in EXTRA_PAGES] + [""]
    return "\n".join(out).rstrip() + "\n", drawn


def write_results_section(out_dir, results_root, notes_dir):
    """Write ``out_dir/index.rst``, ``out_dir/NAME.rst`` and ``out_dir/plots/*.png``; return
    ``{page: number of plots}`` (``out_dir`` is emptied first)."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True)
    names = documented_experiments()
    written = {}
    for name in names:
        text, drawn = experiment_page(name, results_root, notes_dir, plot_dir)
        (out_dir / f"{name}.rst").write_text(text)
        written[name] = len(drawn)
    text, drawn = index_page(names, results_root, notes_dir, plot_dir)
    (out_dir / "index.rst").write_text(text)
    written["index"] = len(drawn)
    return written
