"""Regenerate the README's result tables from the committed result JSONs.

Every block between ``<!-- results:NAME -->`` and ``<!-- /results -->`` in the
README is replaced by :func:`dgl_capsules.reproduce.render_table` of
``RESULTS/NAME/*.json``; nothing outside the markers changes.

    python tools/readme_tables.py            # rewrite README.md in place
    python tools/readme_tables.py --check    # exit 1 if a table is stale
"""
import argparse
import re
import sys

from dgl_capsules.reproduce import render_table

MARKER = re.compile(r"(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def regenerate(text, results="results"):
    """``text`` with every marked block replaced by its experiment's table; and the names replaced."""
    names = []

    def sub(m):
        names.append(m["name"])
        return m.group(1) + render_table(m["name"], f"{results}/{m['name']}") + m.group(4)

    return MARKER.sub(sub, text), names


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
        print(f"{args.readme}: no <!-- results:NAME --> markers", file=sys.stderr)
        return 1
    if args.check:
        stale = new != old
        print(f"{args.readme}: {'stale' if stale else 'up to date'} ({', '.join(names)})")
        return int(stale)
    if new != old:
        with open(args.readme, "w") as f:
            f.write(new)
    print(f"{args.readme}: tables {', '.join(names)} regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
