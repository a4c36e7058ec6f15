"""Robustness curves against hand-computed accuracies, and the pictures of an analysis."""
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from dgl_capsules.analysis import (
    TRANSFORMS, analyze, plot_dead, plot_entropy, plot_robustness, plot_swap, robustness, routing_swap,
)
from dgl_capsules.analysis.curves import DEFAULT_VALUES, transform_images
from dgl_capsules.data import ImageDataset
from dgl_capsules.evaluation import evaluate
from dgl_capsules.models import get_model


class LeftRight(torch.nn.Module):
    """Class 0 if the ink is in the left half of the image, class 1 if in the right half."""

    def __init__(self, image_size=None):
        super().__init__()
        if image_size:
            self.image_size = image_size
        self.seen = []

    def forward(self, x, y=None):
        self.seen.append(tuple(x.shape))
        half = x.shape[-1] // 2
        return torch.stack([x[..., :half].sum((1, 2, 3)), x[..., half + 1:].sum((1, 2, 3))], 1)

    def scores(self, out):
        return out


def _dots():
    """Four 9x9 images with one dot: column 2 (class 0) or column 6 (class 1)."""
    x = torch.zeros(4, 1, 9, 9)
    x[0, 0, 4, 2] = x[1, 0, 3, 2] = x[2, 0, 4, 6] = x[3, 0, 5, 6] = 1
    return ImageDataset(x, torch.tensor([0, 0, 1, 1]))


def test_translation_curve_by_hand_and_models_on_larger_canvases():
    data, small, big = _dots(), LeftRight(), LeftRight(image_size=13)
    out = robustness({"small": small, "big": big}, data, "translation", [0, 1, 4], batch_size=3, progress=False)
    # 1 pixel right keeps every dot on its side; 4 pixels take the left dots right and the right dots off the image
    assert out["models"] == {"small": [1.0, 1.0, 0.0], "big": [1.0, 1.0, 0.0]}
    assert out["values"] == [0.0, 1.0, 4.0] and out["samples"] == 4 and out["unit"] == TRANSFORMS["translation"]
    assert set(big.seen) == {(3, 1, 13, 13), (1, 1, 13, 13)} and set(small.seen) == {(3, 1, 9, 9), (1, 1, 9, 9)}


def test_a_curve_is_the_accuracy_on_each_transformed_set():
    net = get_model("capsnet", "tiny")
    data = ImageDataset(torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(6))
    out = robustness({"caps": net}, data, "shear", [0.0, 0.4], max_samples=5, progress=False)
    for v, acc in zip(out["values"], out["models"]["caps"]):
        moved = ImageDataset(transform_images(data.images[:5], "shear", v), data.labels[:5], n_classes=10)
        assert acc == pytest.approx(evaluate(net, moved))
    assert robustness({"caps": net}, data, "scale", max_samples=2, progress=False)["values"] == \
        [float(v) for v in DEFAULT_VALUES["scale"]]
    assert net.training  # left as it was


def test_bad_robustness_input_fails_naming_the_argument():
    data, net = _dots(), LeftRight()
    cases = [
        (dict(models={}), "models must be a non-empty dict of name -> model; got dict"),
        (dict(data=[1]), "data must be an image data set with .images and .labels"),
        (dict(transform="spin"), "transform must be one of rotation, shear, scale, translation; got 'spin'"),
        (dict(values=[]), "values must hold at least one size"),
        (dict(values=[float("nan")]), "values must be finite numbers; got nan"),
        (dict(transform="scale", values=[0]), "values: a scale must be > 0; got 0"),
        (dict(batch_size=0), "batch_size must be a positive integer; got 0"),
        (dict(max_samples=0), "max_samples must be None or an integer >= 1; got 0"),
        (dict(models={"m": LeftRight(image_size=5)}), "data: the images are 9x9 but the model LeftRight takes 5x5"),
    ]
    for change, message in cases:
        args = {**dict(models={"m": net}, data=data, transform="rotation", values=[0.0], progress=False), **change}
        with pytest.raises(ValueError, match=message):
            robustness(args.pop("models"), args.pop("data"), args.pop("transform"), args.pop("values"), **args)


def test_pictures_of_an_analysis_are_saved_and_bad_input_is_named(tmp_path):
    net = get_model("capsnet", "tiny")
    data = ImageDataset(torch.rand(4, 1, 28, 28), torch.arange(4))
    result = analyze(net, data, batch_size=2, progress=False)
    swap = routing_swap(net, data, iterations=(1, 3), progress=False)
    curves = {t: robustness({"a": LeftRight(), "b": LeftRight()}, _dots(), t, [1.0, 0.5] if t == "scale" else [0, 1],
                            progress=False) for t in ("scale", "rotation")}
    plt.close("all")
    for draw, arg, name, panels in ((plot_entropy, result, "e.png", 1), (plot_dead, result, "d.png", 1),
                                    (plot_swap, swap, "s.svg", 1), (plot_robustness, curves, "r.png", 2)):
        fig = draw(arg, str(tmp_path / "sub" / name))
        assert isinstance(fig, Figure) and len(fig.axes) == panels and (tmp_path / "sub" / name).stat().st_size > 0
    assert plt.get_fignums() == []  # saved to a path: no pyplot state
    before = set(plt.get_fignums())
    shown = plot_swap(swap)  # no path: a pyplot figure, for plt.show() or a notebook
    assert set(plt.get_fignums()) - before == {shown.number}
    plt.close(shown)
    (ax,) = plot_swap(swap).axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["trained", "uniform", "random", "1 iter.",
                                                            "3 iter. (trained)"]
    line = plot_robustness(curves["scale"]).axes[0].lines[0]
    assert list(line.get_xdata()) == [0.5, 1.0]  # drawn in order of size
    assert len(plot_dead(result).axes[0].lines) == 2  # the children and parents of the one layer
    for draw, what in ((plot_entropy, "analyze"), (plot_dead, "analyze"), (plot_swap, "routing_swap")):
        with pytest.raises(ValueError, match=f"result must be the dict of {what}"):
            draw({"nothing": 1})
    with pytest.raises(ValueError, match="curves must be the dict of robustness"):
        plot_robustness([1, 2])
    plt.close("all")


def test_write_analysis_writes_the_json_and_pictures_and_checks_before_the_work(tmp_path):
    import json

    from dgl_capsules.analysis import write_analysis

    net = get_model("capsnet", "tiny")
    data = ImageDataset(torch.rand(5, 1, 28, 28), torch.arange(5))
    paths = write_analysis(net, data, str(tmp_path / "an"), label="caps", source="here", data_name="rand",
                           iterations=(1,), transforms=("translation",), compare={"other": LeftRight()},
                           max_samples=4, progress=False)
    assert sorted(paths) == ["analysis", "dead", "entropy", "robustness", "swap"]
    result = json.loads(open(paths["analysis"]).read())
    assert (result["source"], result["data"], result["analysis"]["samples"]) == ("here", "rand", 4)
    assert sorted(result["robustness"]["translation"]["models"]) == ["caps", "other"]
    for bad, message in ((dict(transforms=("spin",)), "transform must be one of rotation, shear, scale"),
                         (dict(compare={"other": LeftRight()}), "compare: other models are drawn on the robustness"),
                         (dict(iterations=(0, 2)), r"iterations must be integers >= 1; got \[0, 2\]")):
        with pytest.raises(ValueError, match=message):
            write_analysis(net, data, str(tmp_path / "bad"), progress=False, **bad)
    assert not (tmp_path / "bad").exists()
