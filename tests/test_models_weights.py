"""Shipped trained weights: the manifest, the hash check, and loading through get_model."""
import hashlib
import json

import pytest
import torch

from dgl_capsules.files import save_atomic
from dgl_capsules.models import get_model, get_weights, list_weights, n_parameters
from dgl_capsules.models import weights as weights_module

SHAPE = dict(in_channels=1, image_size=28, n_classes=10)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A weights folder with one tiny CapsNet (2 iterations) stored in float16, as tools/make_weights.py writes it."""
    monkeypatch.setattr(weights_module, "_DIR", str(tmp_path))
    net = get_model("capsnet", "tiny", n_iters=2, **SHAPE)
    save_atomic({k: v.half() if torch.is_floating_point(v) else v for k, v in net.state_dict().items()},
                tmp_path / "capsnet-tiny-toy.pt")
    entry = dict(model="capsnet", preset="tiny", name="toy", file="capsnet-tiny-toy.pt",
                 sha256=hashlib.sha256((tmp_path / "capsnet-tiny-toy.pt").read_bytes()).hexdigest(),
                 settings=dict(n_iters=2), shape=SHAPE, data="mnist5k", parameters=n_parameters(net), accuracy=0.1,
                 experiment=dict(name="tiny", row="3 iterations", seed=0, mean=0.1, std=None, seeds=[0]),
                 command="a command", commit="abc", routing=dict(family="dynamic", n_iters=2), dtype="float16")
    (tmp_path / "manifest.json").write_text(json.dumps([entry]))
    return net, tmp_path


def test_get_model_loads_the_shipped_weights_with_their_settings(shipped):
    net, _ = shipped
    (entry,) = list_weights()
    assert get_weights("capsnet", None, "toy") == entry and entry.path.endswith("capsnet-tiny-toy.pt")
    loaded = get_model("capsnet", weights="toy")
    assert not loaded.training and loaded.digits.n_iters == 2
    for k, v in net.state_dict().items():  # float16 storage: the values rounded to half precision
        want = v.half().to(v.dtype) if torch.is_floating_point(v) else v
        assert torch.equal(loaded.state_dict()[k], want), k
    assert get_model("capsnet", "tiny", weights="toy", n_iters=2).digits.n_iters == 2  # the same setting is fine


def test_weights_errors_name_what_is_wrong(shipped):
    _, folder = shipped
    with pytest.raises(ValueError, match=r"weights: no shipped weights 'mnist' for capsnet small; shipped: "
                                         r"capsnet tiny 'toy'"):
        get_model("capsnet", "small", weights="mnist")
    with pytest.raises(ValueError, match=r"settings: the 'toy' weights of capsnet tiny were trained with n_iters=2; "
                                         r"got n_iters=3"):
        get_model("capsnet", weights="toy", n_iters=3)
    with pytest.raises(ValueError, match="weights must be the name of shipped weights such as 'mnist'; got 3"):
        get_model("capsnet", weights=3)
    data = bytearray((folder / "capsnet-tiny-toy.pt").read_bytes())
    data[-40] ^= 0xFF
    (folder / "capsnet-tiny-toy.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"weights: .*capsnet-tiny-toy.pt has SHA-256 \w+\.\.\., the manifest says "
                                         r"\w+\.\.\.: the file was altered or damaged; reinstall dgl_capsules"):
        get_model("capsnet", weights="toy")
    (folder / "capsnet-tiny-toy.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"weights: the file of capsnet tiny 'toy' is missing"):
        get_model("capsnet", weights="toy")


def test_a_weights_file_that_would_run_code_is_refused_even_with_a_matching_hash(shipped):
    _, folder = shipped
    marker = folder / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"conv.weight": Payload()}, folder / "capsnet-tiny-toy.pt")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest[0]["sha256"] = hashlib.sha256((folder / "capsnet-tiny-toy.pt").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"weights '.*capsnet-tiny-toy.pt': not loaded: it holds Python objects"):
        get_model("capsnet", weights="toy")
    assert not marker.exists()


@pytest.mark.needs("mlxtend")
def test_evaluate_and_visualize_take_shipped_weights(shipped, tmp_path, capsys):
    from dgl_capsules.cli import main

    assert main(["evaluate", "--model", "capsnet", "--weights", "toy", "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "test     accuracy" in out and "of mnist5k" in out
    assert json.loads((tmp_path / "e.json").read_text())["checkpoint"] == "capsnet weights toy"
    assert main(["visualize", "--model", "capsnet", "--weights", "toy", "--out", str(tmp_path / "v")]) == 0
    assert "summary:" in capsys.readouterr().out
    assert main(["evaluate", "--weights", "toy"]) == 2
    assert "error: --model: --weights needs --model" in capsys.readouterr().err
    assert main(["evaluate"]) == 2
    assert "error: --checkpoint: give either --checkpoint (a run's model.pt) or --model with --weights" in \
        capsys.readouterr().err
