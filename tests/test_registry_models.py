import pytest
import torch
from torch import nn

from dgl_capsules.models import (
    BaselineCNN, CapsNet, ImageModel, check_model, MatrixCapsNet, RoutedLayer, get_model, list_models, model_presets,
    model_settings, n_parameters, register_model, unregister_model,
)
from dgl_capsules.models import capsnet as capsnet_module, matrix as matrix_module
from dgl_capsules.routing import list_routings


def test_the_registered_models_and_their_presets():
    assert list_models() == ["capsnet", "cnn", "efficient-capsnet", "heinsen", "matrixcaps"]
    for name in ("capsnet", "matrixcaps"):
        assert model_presets(name) == ["paper", "small", "tiny"]
    assert model_presets("cnn") == ["efficient-capsnet", "efficient-capsnet-tiny", "paper", "small", "tiny"]
    assert model_settings("capsnet")[:3] == ["in_channels", "image_size", "n_classes"]
    assert "stem_stride" in model_settings("matrixcaps") and "self" not in model_settings("matrixcaps")


@pytest.mark.parametrize("name, cls, presets", [("capsnet", CapsNet, capsnet_module.PRESETS),
                                                 ("matrixcaps", MatrixCapsNet, matrix_module.PRESETS)])
def test_a_preset_is_its_settings_and_settings_replace_them(name, cls, presets):
    torch.manual_seed(0)
    a = get_model(name, "tiny", image_size=28)
    torch.manual_seed(0)
    b = cls(**presets["tiny"])
    assert type(a) is cls and repr(a) == repr(b)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert repr(cls.from_preset("tiny")) == repr(a)  # the old spelling is an alias
    without = get_model(name, "tiny", decoder=(), n_classes=4)
    assert without.decoder is None and without.n_classes == 4
    assert n_parameters(get_model(name)) == n_parameters(cls())  # no preset: the class defaults


def test_cnn_presets_match_the_capsnet_of_the_same_preset_and_width_overrides():
    for shape in (dict(), dict(in_channels=2, image_size=40, n_classes=5)):
        target = n_parameters(get_model("capsnet", "tiny", **shape))
        net = get_model("cnn", "tiny", **shape)
        assert isinstance(net, BaselineCNN) and abs(n_parameters(net) - target) / target < 0.02
        assert net.classifier[-1].out_features == shape.get("n_classes", 10)
    assert get_model("cnn", "tiny", width=0.25).width == 0.25
    assert get_model("cnn").width == 1.0  # no preset: the paper's widths
    assert get_model("cnn", "tiny", dropout=0.1).dropout == 0.1


def test_every_registered_model_follows_the_protocol_and_routing_names_its_layers():
    x = torch.rand(2, 1, 28, 28)
    for name in list_models():
        net = get_model(name, "tiny")
        assert isinstance(net, ImageModel)
        out = net(x)
        assert net.scores(out).shape == (2, 10) and net.loss(out, torch.tensor([1, 2]), 0).dim() == 0
        routed = net.routing(x)
        assert all(isinstance(layer, RoutedLayer) for layer in routed)
        for layer in routed:
            assert layer.parent_strength.shape == (layer.graph.num_dst_nodes(), 2)
            assert layer.child_strength.shape == (layer.graph.num_src_nodes(), 2) and layer.routing in list_routings()
            assert layer.result.coupling.shape[0] == layer.graph.num_edges()
    assert [layer.name for layer in get_model("capsnet", "tiny").routing(x)] == ["digitcaps"]


def test_unknown_model_preset_or_setting_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match="model: unknown model 'foo'; expected one of capsnet, cnn, efficient-capsnet, heinsen, "
                                         "matrixcaps"):
        get_model("foo")
    with pytest.raises(ValueError, match="model: unknown model 'foo'"):
        model_presets("foo")
    with pytest.raises(ValueError, match="preset: unknown matrixcaps preset 'huge'; expected one of paper, small"):
        get_model("matrixcaps", "huge")
    with pytest.raises(ValueError, match="settings: matrixcaps has no setting 'widht'; settings are in_channels"):
        get_model("matrixcaps", "tiny", widht=2)
    with pytest.raises(ValueError, match="settings: cnn has no setting 'conv_channels'; settings are "
                                         "in_channels, image_size, n_classes, width, dropout, match_capsnet, "
                                         "match_efficient, fc, decoder, code_dim, recon_weight"):
        get_model("cnn", "small", conv_channels=3)
    with pytest.raises(ValueError, match="image_size=12 is too small"):  # the model's own check of a value
        get_model("capsnet", "tiny", image_size=12)
    # check_model: the same name / preset / setting errors, nothing built
    check_model("capsnet", "tiny", image_size=12)
    for args, kw, match in ((("foo",), {}, "model: unknown model 'foo'"),
                            (("cnn", "huge"), {}, "preset: unknown cnn preset 'huge'"),
                            (("capsnet",), dict(widht=1), "settings: capsnet has no setting 'widht'")):
        with pytest.raises(ValueError, match=match):
            check_model(*args, **kw)


def test_a_new_model_is_one_registration():
    @register_model("toy", presets={"wide": dict(hidden=32)})
    class Toy(nn.Module):
        def __init__(self, in_channels=1, image_size=28, n_classes=10, hidden=4):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, hidden),
                                     nn.Linear(hidden, n_classes))

        def forward(self, x, y=None):
            return self.net(x)

    try:
        assert "toy" in list_models() and model_presets("toy") == ["wide"]
        assert get_model("toy", "wide", image_size=8).net[1].out_features == 32
        with pytest.raises(ValueError, match="name: a model 'toy' is already registered"):
            register_model("toy")(Toy)
    finally:
        unregister_model("toy")
    assert "toy" not in list_models()


def test_bad_registrations():
    class NoPresets(nn.Module):
        def __init__(self, width=1):
            super().__init__()

    with pytest.raises(ValueError, match="presets: preset 'big' of NoPresets names unknown setting 'depth'"):
        register_model("bad", presets={"big": dict(depth=3)})(NoPresets)
    assert "bad" not in list_models()
    register_model("plain")(NoPresets)
    try:
        with pytest.raises(ValueError, match="preset: plain has no presets; got 'small'"):
            get_model("plain", "small")
        assert isinstance(get_model("plain", width=2), NoPresets)
    finally:
        unregister_model("plain")
    with pytest.raises(ValueError, match="name must be a non-empty string; got ''"):
        register_model("")


def test_models_are_reachable_from_the_top_level_without_importing_train():
    import subprocess
    import sys

    code = ("import sys, dgl_capsules as dc; net = dc.models.get_model('matrixcaps', 'tiny'); "
            "assert isinstance(net, dc.models.MatrixCapsNet) and dc.models.RoutedLayer; "
            "assert 'dgl_capsules.train' not in sys.modules; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
