"""Regenerate the README's generated parts from the committed result JSONs.

- The block between ``<!-- results-summary -->`` and ``<!-- /results-summary -->``
  becomes the summary table, one line per experiment
  (:func:`docgen.summary.summary_markdown`): the headline number ± std, its
  seeds, the width-matched CNN beside it, the paper's and the best public
  reproduction's figures, a link to the experiment's page of the built site.
- The block between ``<!-- routing-necessity -->`` and ``<!-- /routing-necessity -->``
  becomes the routing-necessity table of the shipped networks (``tools/routing_necessity.py``).
- The block between ``<!-- robustness -->`` and ``<!-- /robustness -->`` becomes the
  robustness table of the shipped networks and its picture (``tools/robustness_curves.py``).
- Every block between ``<!-- results:NAME -->`` and ``<!-- /results -->``
  becomes :func:`dgl_capsules.reproduce.render_table` of ``RESULTS/NAME/*.json``.

Nothing outside the markers changes. The same module writes the site's
Results section (``docs/conf.py`` calls ``docgen.build``), so both come from
one source.

    python tools/readme_tables.py            # rewrite README.md in place
    python tools/readme_tables.py --check    # exit 1 if a generated part is stale
"""
import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dgl_capsules.reproduce import render_table  # noqa: E402

import robustness_curves  # noqa: E402
import routing_necessity  # noqa: E402
from docgen.summary import summary_markdown  # noqa: E402

MARKER = re.compile(r"(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)
SUMMARY = re.compile(r"(<!-- results-summary -->\n)(?P<body>.*?)(<!-- /results-summary -->)", re.S)
NECESSITY = re.compile(r"(<!-- routing-necessity -->\n)(?P<body>.*?)(<!-- /routing-necessity -->)", re.S)
ROBUSTNESS = re.compile(r"(<!-- robustness -->\n)(?P<body>.*?)(<!-- /robustness -->)", re.S)
SITE = "docs/_build/html/results"


def page_link(name):
    """The README's link to experiment ``name``'s page of the built site."""
    return f"{SITE}/{name}.html"


def regenerate(text, results="results"):
    """``text`` with every marked block regenerated, and the names of the blocks (``"summary"`` for the
    summary table)."""
    names = []

    def table(m):
        names.append(m["name"])
        return m.group(1) + render_table(m["name"], f"{results}/{m['name']}") + m.group(4)

    def summary(m):
        names.append("summary")
        return m.group(1) + summary_markdown(results, page_link) + m.group(3)

    def necessity(m):
        names.append("routing-necessity")
        return m.group(1) + routing_necessity.render(results) + m.group(3)

    def robust(m):
        names.append("robustness")
        return m.group(1) + robustness_curves.render(results) + m.group(3)

    text = SUMMARY.sub(summary, text)
    text = NECESSITY.sub(necessity, text)
    text = ROBUSTNESS.sub(robust, text)
    return MARKER.sub(table, text), names


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", default="README.md")
    p.add_argument("--results", default="results", help="folder holding one sub-folder of JSONs per experiment")
    p.add_argument("--check", action="store_true", help="only report whether the README is up to date")
    args = p.parse_args(argv)
    with open(args.readme) as f:
        old = f.read()
    new, names = regenerate(old, args.results)
    if not names:
        print(f"{args.readme}: no <!-- results:NAME --> markers and no <!-- results-summary -->", file=sys.stderr)
        return 1
    if args.check:
        stale = new != old
        print(f"{args.readme}: {'stale' if stale else 'up to date'} ({', '.join(names)})")
        return int(stale)
    if new != old:
        with open(args.readme, "w") as f:
            f.write(new)
    print(f"{args.readme}: {', '.join(names)} regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
