"""Named reproduction experiments: tables of training runs over seeds, resumable, one JSON per run.

Three parts, one module each:

- :mod:`~dgl_capsules.reproduce.catalogue`: the experiments as data
  (:class:`Experiment`, :class:`Row`, :func:`list_experiments`, :func:`experiment`);
- :mod:`~dgl_capsules.reproduce.runner`: :func:`reproduce` trains every
  (row, seed) that has no result yet, resumes runs that were stopped, and
  writes ``OUT/<row>-seed<k>.json`` per finished run
  (:mod:`~dgl_capsules.reproduce.results`);
- :mod:`~dgl_capsules.reproduce.tables`: ``OUT/table.md`` (:func:`write_table`,
  :func:`render_table`): mean ± std over seeds and every seed's number; for
  the novel-viewpoint experiments, familiar and novel error at matched
  familiar error (:func:`matched_errors`); McNemar's test between rows
  (:func:`paired_tests`).

>>> sorted(list_experiments())[:3]
['affnist-style', 'efficient-capsnet', 'efficient-capsnet-tiny']
>>> [row.label for row in experiment("tiny").rows]
['1 iteration', '3 iterations', 'uniform coupling']
"""
from .catalogue import _EXPERIMENTS, Experiment, Row, experiment, list_experiments, register_experiment
from .results import CorruptResultError, read_result
from .runner import reproduce
from .tables import DEFAULT_ROOT, load_results, matched_errors, paired_tests, render_table, write_table

__all__ = ["Row", "Experiment", "list_experiments", "experiment", "register_experiment", "reproduce",
           "load_results", "render_table", "write_table", "matched_errors", "paired_tests", "read_result", "CorruptResultError",
           "DEFAULT_ROOT"]
