"""Vector routing and inverted dot-product routing on capsule graphs vs their own dense formulations: time and memory.

Cases (float32, one process, ``torch`` threads as set by ``OMP_NUM_THREADS``):

- ``inverted``: the capsule head of Tsai et al.'s CIFAR-10 network, 800 class
  votes per class (32 types x 5 x 5) -> 10 classes, 4x4 poses (``D = 16``),
  2 iterations, batch 64. Graph: :func:`dgl_capsules.routing.inverted_routing`
  on ``capsule_graph(800, 10)``, votes ``(|E|, B, 16)``. Dense: Procedure 1
  with votes ``(B, I, J, D)`` and ``einsum`` / ``softmax`` over ``J``.
- ``vector``: :func:`dgl_capsules.routing.vector_routing` (Heinsen 2022) from
  1,000 / 10,000 / 100,000 inputs to 10 and 1,000 outputs, ``d_inp = d_out =
  64``, one sequence, 2 iterations, per-pair betas and ``W_S, B_S`` as in the
  published class with a fixed ``n_inp``, on ``capsule_graph(n, m).int()``.
  Two dense formulations of the same algorithm: ``dense lazy`` (the published
  ``memory_efficient=True``: every ``(n, m)`` quantity a scalar, votes never
  formed) and ``dense votes`` (the votes ``V`` ``(n, m, d_out)`` formed, as with
  ``memory_efficient=False``). A formulation whose estimated peak would pass
  ``--budget-gb`` is not run: the row says how much it needs.
- ``ragged``: the largest ragged batch :class:`dgl_capsules.nn.EfficientVectorRouting`
  (``n_inp=-1``, 100 outputs, ``d = 64``) routes forward in float32 within the
  budget, through ``forward_ragged`` (a :func:`dgl.batch` of per-sequence graphs,
  routed part by part). Sequences of 1,000 to 10,000 inputs; the bytes per edge
  are measured on a probe batch, the largest batch is extrapolated from them
  (for the budget, or what the machine has free less 4 GB if that is less) and
  then run once to check that it fits.

Time: the minimum over the repeats (1 for the largest sizes), forward under
``no_grad`` and forward + ``sum()`` + backward (gradients for every input).
Peak memory: the growth of the process's peak resident set (``VmHWM``, reset
through ``/proc/self/clear_refs`` just before the first measured call) over
its resident set at that moment (inputs, parameters and the graph already
built): everything the call allocates. ``B/edge`` is that growth per edge.

``OMP_NUM_THREADS=1 python bench/bench_families.py [--quick] [--budget-gb 16]``;
``run(quick)`` returns the rows for ``bench/run_all.py``.
"""
import argparse
import gc
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dgl_capsules as dc  # noqa: E402  (before torch: its allocation settings)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

GB = 1 << 30
D_VEC = 64


# --------------------------------------------------------------------------- measuring
def _status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _available():
    """Bytes the machine has available now (``MemAvailable``)."""
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) * 1024


def _call(fn, leaves, backward):
    if not backward:
        with torch.no_grad():
            fn()
        return
    out = fn()
    out.sum().backward()
    for t in leaves:
        t.grad = None


def measure(fn, leaves, backward, repeats):
    """(best ms, peak growth in bytes of the first call) of ``fn`` forward or forward + backward."""
    times, peak = [], None
    for k in range(repeats):
        gc.collect()
        if k == 0:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # the peak (VmHWM) restarts from the current resident set
            base = _status_kb("VmRSS")
        t0 = time.perf_counter()
        _call(fn, leaves, backward)
        times.append(time.perf_counter() - t0)
        if k == 0:
            peak = max(0, _status_kb("VmHWM") - base) * 1024
    return 1e3 * min(times), peak


# --------------------------------------------------------------------------- inverted
def inverted_case(batch=64, n_in=800, n_out=10, d=16, n_iters=2):
    """Graph and dense routing of the CIFAR-10 class-capsule head on the same votes."""
    gen = torch.Generator().manual_seed(0)
    g = dc.capsule_graph(n_in, n_out)
    src, dst = (e.long() for e in g.edges())
    dense_votes = torch.randn(batch, n_in, n_out, d, generator=gen).requires_grad_(True)  # (B, I, J, D)
    votes = dense_votes.detach()[:, src, dst].transpose(0, 1).contiguous().requires_grad_(True)  # (E, B, D)
    ln = torch.nn.LayerNorm(d)

    def graph():
        return dc.routing.inverted_routing(g, votes, ln.weight, ln.bias, n_iters=n_iters).poses

    def dense():
        r = torch.full((batch, n_in, n_out), 1.0 / n_out)
        for t in range(n_iters):
            if t:
                r = torch.softmax(torch.einsum("bijd,bjd->bij", dense_votes, p) / math.sqrt(d), dim=-1)
            p = ln(torch.einsum("bij,bijd->bjd", r, dense_votes))
        return p

    with torch.no_grad():
        torch.testing.assert_close(graph().transpose(0, 1), dense(), rtol=1e-4, atol=1e-4)
    return g.num_edges(), {"graph": (graph, [votes]), "dense": (dense, [dense_votes])}


# --------------------------------------------------------------------------- vector
def vector_inputs(n_in, n_out, d=D_VEC, seed=0):
    """Inputs of one sequence: vectors, logits, per-pair (n_in, n_out) and per-output parameters."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, std=1.0):
        return (std * torch.randn(*shape, generator=gen)).requires_grad_(True)

    return dict(x=randn(n_in, d), a=randn(n_in), beta_use=randn(n_in, n_out), beta_ign=randn(n_in, n_out),
                w_f1=randn(n_out, d), w_f2=randn(d, d, std=2 / math.sqrt(d)), b_f2=randn(n_out, d, std=0.1),
                w_g1=randn(d, d, std=1 / math.sqrt(d)), w_g2=randn(n_out, d), b_g2=randn(n_out, d, std=0.1),
                w_s=randn(n_in, n_out, std=1 / math.sqrt(d)), b_s=randn(n_in, n_out, std=0.1))


def _norm(y):
    return F.layer_norm(y, y.shape[-1:], eps=1e-5)


def dense_vector(v, n_iters=2, form_votes=False):
    """Heinsen 2022 with the published class's A, F, G, S, densely over (n_in, n_out); float32."""
    n_in, n_out = v["beta_use"].shape
    x, x_tilde = v["x"], v["x"] / math.sqrt(n_in)
    f_a = torch.sigmoid(v["a"])[:, None]  # (I, 1)
    votes = None
    if form_votes:  # (J, I, H): V_ij = (x~_i * w_f1_j) W_f2 + b_f2_j, one matrix product
        votes = (v["w_f1"][:, None, :] * x_tilde[None]) @ v["w_f2"] + v["b_f2"][:, None, :]
    for t in range(n_iters):
        if t == 0:
            r = torch.tensor(1.0 / n_out)  # uniform, broadcast
        else:
            pred = (_norm(x_out) @ v["w_g1"]) * v["w_g2"] + v["b_g2"]  # (J, d)
            r = torch.softmax(F.logsigmoid((x @ pred.T) * v["w_s"] + v["b_s"]), dim=-1)  # (I, J)
        d_use = f_a * r
        phi = v["beta_use"] * d_use - v["beta_ign"] * (f_a - d_use)
        if votes is None:
            x_out = ((phi.T @ x_tilde) * v["w_f1"]) @ v["w_f2"] + phi.sum(0)[:, None] * v["b_f2"]
        else:
            x_out = torch.bmm(phi.T[:, None, :], votes)[:, 0]  # (J, H)
    return _norm(x_out)


def graph_vector(g, v, layout_rows, n_iters=2):
    """The same on the graph; per-pair parameters are edge tensors (views in capsule_graph's order)."""
    def edge(t):
        t = t.reshape(-1)
        return t if layout_rows is None else t[layout_rows]

    return dc.routing.vector_routing(
        g, v["x"][:, None], v["a"][:, None], edge(v["beta_use"]), edge(v["beta_ign"]), v["w_f1"], v["w_f2"],
        v["b_f2"], v["w_g1"], v["w_g2"], v["b_g2"], edge(v["w_s"]), edge(v["b_s"]), n_iters=n_iters).poses[:, 0]


def vector_case(n_in, n_out):
    g = dc.capsule_graph(n_in, n_out).int()
    dc.graph._cache.clear()  # keep only the int32 copy
    layout = dc.routing.vector.complete_layout(g)
    v = vector_inputs(n_in, n_out)
    leaves = list(v.values())
    if n_in * n_out <= 10 ** 6:  # the three formulations agree
        with torch.no_grad():
            want = dense_vector(v)
            for got in (graph_vector(g, v, layout.rows), dense_vector(v, form_votes=True)):
                torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    return g, {"graph": (lambda: graph_vector(g, v, layout.rows), leaves),
               "dense lazy": (lambda: dense_vector(v), leaves),
               "dense votes": (lambda: dense_vector(v, form_votes=True), leaves)}


def votes_estimate(n_edges, backward):
    """Bytes the dense formulation with formed votes needs: the votes and one product of that size; twice that
    again with backward (their gradients)."""
    return (4 if backward else 2) * n_edges * D_VEC * 4


# --------------------------------------------------------------------------- rows
def _rows_for(case, n_edges, paths, repeats, budget, skip=None):
    rows = []
    for backward in (False, True):
        for name, (fn, leaves) in paths.items():
            row = {"case": case, "path": name, "edges": n_edges, "pass": "fwd+bwd" if backward else "fwd"}
            reason = skip(name, backward, budget) if skip else None
            if reason:
                row["note"] = f"not run: {reason}"
            else:
                ms, peak = measure(fn, leaves, backward, repeats)
                row.update(ms=ms, peak_MB=peak / 2 ** 20, B_per_edge=peak / n_edges)
            rows.append(row)
    return rows


def _ratios(rows):
    for row in rows:
        ref = next((r for r in rows if r["case"] == row["case"] and r["pass"] == row["pass"]
                    and r["path"] in ("dense", "dense lazy") and "ms" in r), None)
        if ref and "ms" in row:
            row["vs_dense"] = row["ms"] / ref["ms"]
    return rows


def ragged_probe(budget, n_seq_probe, n_out=100, d=D_VEC, lo=1000, hi=10000, verify=True):
    """Rows: a probe batch, and the largest batch that fits ``budget`` (extrapolated, then run once)."""
    layer = dc.nn.EfficientVectorRouting(-1, n_out, d, d)
    gen = torch.Generator().manual_seed(1)
    rows = []
    n_seq = n_seq_probe
    for what in ("probe", "largest"):
        lengths = torch.randint(lo, hi + 1, (n_seq,), generator=gen).tolist()
        xs = [torch.randn(n, d, generator=gen) for n in lengths]
        n_edges = sum(lengths) * n_out
        ms, peak = measure(lambda: layer.forward_ragged(xs), [], False, 1)
        note = f"{n_seq} sequences, {sum(lengths)} inputs -> {n_out} outputs, d = {d}"
        if what == "largest":
            note += f"; aimed at {0.9 * target / GB:.1f} GB ({budget / GB:.0f} GB budget, {_available() / GB:.0f} GB free)"
        rows.append({"case": f"ragged {what}", "path": "graph (per part)", "edges": n_edges, "pass": "fwd",
                     "ms": ms, "peak_MB": peak / 2 ** 20, "B_per_edge": peak / n_edges, "note": note})
        del xs
        if what == "largest" or not verify:
            break
        per_seq = peak / n_seq
        target = min(budget, _available() - 4 * GB)  # never crowd out the machine's other processes
        n_seq = max(n_seq, int(0.9 * target / per_seq))  # 10 % margin for the spread of lengths
    return rows


def run(quick=False, budget_gb=16.0):
    """Rows for the table (see the module docstring); ``quick``: the small sizes only."""
    budget = budget_gb * GB
    rows = []
    n_edges, paths = inverted_case(batch=8 if quick else 64)
    rows += _rows_for(f"inverted 800->10 D=16 B={8 if quick else 64}", n_edges, paths, 3, budget)
    sizes = [(1000, 10), (1000, 1000)] if quick else [(n, m) for n in (1000, 10000, 100000) for m in (10, 1000)]
    for n_in, n_out in sizes:
        e = n_in * n_out
        g, paths = vector_case(n_in, n_out)
        repeats = 1 if e >= 10 ** 7 else (2 if e >= 10 ** 6 else 3)

        def skip(name, backward, budget, e=e):
            if name != "dense votes":
                return None
            need = votes_estimate(e, backward)
            if need > budget:
                return f"needs about {need / GB:.1f} GB (> {budget / GB:.0f} GB budget)"
            if e >= 10 ** 7:
                return (f"needs about {need / GB:.1f} GB ({need / e:.0f} B/edge, as at 10^6 edges); left out to keep "
                        "the run short")
            return None

        rows += _rows_for(f"vector {n_in}->{n_out} d={D_VEC}", e, paths, repeats, budget, skip)
        del g, paths
        gc.collect()
    rows += ragged_probe(budget, n_seq_probe=4 if quick else 16, verify=not quick)
    return _ratios(rows)


def table(rows):
    keys = ["case", "path", "pass", "edges", "ms", "vs_dense", "peak_MB", "B_per_edge", "note"]
    head = f"{'case':<28} {'path':<24} {'pass':<8} {'edges':>11} {'ms':>10} {'ratio':>6} {'peak MB':>9} {'B/edge':>7}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = [r.get(k, "") for k in keys]
        fmt = [f"{cells[0]:<28}", f"{cells[1]:<24}", f"{cells[2]:<8}", f"{cells[3]:>11}",
               f"{cells[4]:>10.1f}" if cells[4] != "" else f"{'':>10}",
               f"{cells[5]:>6.2f}" if cells[5] != "" else f"{'':>6}",
               f"{cells[6]:>9.0f}" if cells[6] != "" else f"{'':>9}",
               f"{cells[7]:>7.1f}" if cells[7] != "" else f"{'':>7}", f" {cells[8]}"]
        lines.append(" ".join(fmt))
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--budget-gb", type=float, default=16.0, help="largest peak growth to allow (GB)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(f"torch threads: {torch.get_num_threads()}; ratio = time / dense (lazy) time of the same case and pass")
    print(table(run(quick=args.quick, budget_gb=args.budget_gb)))
    print(f"({time.perf_counter() - t0:.0f} s)")
