"""Run every benchmark in bench/, print one table each and write bench/results.md.

Every ``bench/bench_*.py`` is imported by path and its ``run(quick=False)``
called; it returns a list of dict rows. A benchmark that is expected but
missing, or that raises, is reported loudly in the output and in
results.md, and the exit status is 1.

Usage: ``python bench/run_all.py [--quick] [--only NAME ...] [--out PATH]``
(``make bench`` runs it with no arguments).
"""
import argparse
import glob
import importlib.util
import os
import platform
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

# Benchmarks the Performance page (docs/performance.rst) relies on: missing ones are errors.
EXPECTED = ("dynamic", "em_conv", "heinsen_ragged", "capsnet_step", "em_step", "viz", "self_attention", "epoch",
            "families")


def machine():
    """Machine details as (label, value) pairs."""
    import dgl
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return [
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("torch threads", str(torch.get_num_threads())),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("dgl", dgl.__version__),
        ("load average (1, 5, 15 min) at start", load),
        ("date (UTC)", time.strftime("%Y-%m-%d %H:%M", time.gmtime())),
    ]


def load(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(rows):
    """Rows of dicts -> (header, lines) with the union of keys in first-seen order."""
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    return keys, [[cell(row.get(k, "")) for k in keys] for row in rows]


def cell(value):
    """A table cell: floats to 3 significant digits (at least one decimal), the rest as they are."""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def text_table(rows):
    keys, lines = table(rows)
    widths = [max(len(k), *(len(line[i]) for line in lines)) for i, k in enumerate(keys)]
    out = ["  ".join(k.ljust(w) for k, w in zip(keys, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def markdown_table(rows):
    keys, lines = table(rows)
    out = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the benchmarks' quick settings")
    parser.add_argument("--only", nargs="*", default=None, help="names such as dynamic em_conv")
    parser.add_argument("--out", default=os.path.join(HERE, "results.md"))
    args = parser.parse_args(argv)

    found = {
        os.path.basename(p)[len("bench_"):-len(".py")]: p
        for p in sorted(glob.glob(os.path.join(HERE, "bench_*.py")))
    }
    names = list(args.only) if args.only else list(dict.fromkeys(list(EXPECTED) + list(found)))
    details = machine()
    print("Machine:")
    for k, v in details:
        print(f"  {k}: {v}")
    md = ["# Benchmark results", "", f"Command: `python bench/run_all.py{' --quick' if args.quick else ''}`", ""]
    md += [f"- {k}: {v}" for k, v in details] + [""]
    failures = []
    for name in names:
        print(f"\n== bench_{name}.py ==", flush=True)
        md += [f"## bench_{name}.py", ""]
        if name not in found:
            msg = f"MISSING: bench/bench_{name}.py does not exist"
            print("!" * 72 + f"\n{msg}\n" + "!" * 72, file=sys.stderr)
            failures.append(msg)
            md += [f"**{msg}**", ""]
            continue
        t0 = time.perf_counter()
        try:
            module = load(found[name])
            doc = (module.__doc__ or "").strip().splitlines()
            rows = module.run(quick=args.quick)
            if not rows:
                raise RuntimeError("run() returned no rows")
        except Exception:  # report every failure, keep running the others
            tb = traceback.format_exc()
            msg = f"FAILED: bench/bench_{name}.py"
            print("!" * 72 + f"\n{msg}\n{tb}" + "!" * 72, file=sys.stderr)
            failures.append(msg)
            md += [f"**{msg}**", "", "```", tb.rstrip(), "```", ""]
            continue
        seconds = time.perf_counter() - t0
        if doc:
            print(doc[0])
            md += [doc[0], ""]
        print(text_table(rows))
        print(f"({seconds:.0f} s)")
        md += [markdown_table(rows), "", f"({seconds:.0f} s)", ""]
    if failures:
        md += ["## Failures", ""] + [f"- {f}" for f in failures] + [""]
    with open(args.out, "w") as f:
        f.write("\n".join(md))
    print(f"\nwrote {args.out}")
    if failures:
        print("\n" + "\n".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
