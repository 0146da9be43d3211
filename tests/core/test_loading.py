"""Model specs and files: zoo, py:, .onnx, .pt2, .safetensors, .pt (safe by default), variant folders."""

import os
import pickle
import textwrap

import pytest
import torch

from workbench.core.data import load_dataset
from workbench.core.errors import InputError
from workbench.core.models import OnnxModel, build_zoo_model, load_model, recipe_of
from workbench.core.models.loading import load_torch_model
from workbench.core.models.serialize import save_torch_model


@pytest.fixture(scope="module")
def info():
    return load_dataset("digits:size=8").info


def _x():
    return torch.rand(4, 1, 8, 8)


def test_zoo_spec_sets_a_recipe(info):
    model = load_model("zoo:mlp:hidden=16,depth=1", info)
    assert recipe_of(model)["options"] == {"hidden": "16", "depth": "1"}
    assert model(_x()).shape == (4, 10)


def test_weights_from_safetensors_and_state_dict(tmp_path, info):
    from safetensors.torch import save_file

    trained = load_model("zoo:mlp:hidden=16", info)
    save_file(trained.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    x = _x()
    for name in ("w.safetensors", "w.pt"):
        fresh = load_model("zoo:mlp:hidden=16", info, weights=str(tmp_path / name))
        assert torch.equal(fresh(x), trained(x))
    with pytest.raises(InputError, match="do not fit"):
        load_model("zoo:mlp:hidden=8", info, weights=str(tmp_path / "w.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(InputError, match="corrupt"):
        load_model("zoo:mlp:hidden=16", info, weights=str(tmp_path / "bad.safetensors"))


def test_full_pickled_module_needs_trust(tmp_path, info):
    model = build_zoo_model("mlp", (1, 8, 8), 10, {"hidden": 8})
    torch.save(model, tmp_path / "full.pt")
    with pytest.raises(InputError, match="--trust"):
        load_model(str(tmp_path / "full.pt"), info)
    trusted = load_model(str(tmp_path / "full.pt"), info, trust=True)
    x = _x()
    assert torch.equal(trusted(x), model(x))


def test_hostile_pickle_never_runs_even_as_weights(tmp_path, info):
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    for call in (lambda: load_model(str(tmp_path / "evil.pt"), info),
                 lambda: load_model("zoo:mlp", info, weights=str(tmp_path / "evil.pt"))):
        with pytest.raises(InputError):
            call()
    assert not marker.exists()


def test_pt2_and_onnx_files(tmp_path, info):
    model = build_zoo_model("mlp", (1, 8, 8), 10, {"hidden": 8}).eval()
    x = _x()
    program = torch.export.export(model, (x,))
    torch.export.save(program, tmp_path / "m.pt2")
    loaded = load_model(str(tmp_path / "m.pt2"), info)
    assert torch.allclose(loaded(x), model(x))
    torch.onnx.export(model, (x,), tmp_path / "m.onnx", dynamo=False, input_names=["input"],
                      dynamic_axes={"input": {0: "batch"}})
    onnx_model = load_model(str(tmp_path / "m.onnx"), info)
    assert isinstance(onnx_model, OnnxModel)
    assert torch.allclose(onnx_model(x), model(x), atol=1e-5)
    (tmp_path / "trunc.onnx").write_bytes((tmp_path / "m.onnx").read_bytes()[:100])
    with pytest.raises(InputError):
        load_model(str(tmp_path / "trunc.onnx"), info)
    (tmp_path / "bad.pt2").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(InputError, match="pt2"):
        load_model(str(tmp_path / "bad.pt2"), info)


def test_py_spec_from_a_file_and_a_module(tmp_path, info, monkeypatch):
    src = tmp_path / "mymodels.py"
    src.write_text(textwrap.dedent("""
        import torch.nn as nn
        class Tiny(nn.Module):
            def __init__(self, num_classes=2, hidden=4):
                super().__init__()
                self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
            def forward(self, x):
                return self.net(x)
        def broken():
            raise RuntimeError("nope")
    """))
    model = load_model(f"py:{src}:Tiny:hidden=7", info)
    assert model(_x()).shape == (4, 10) and model.net[1].out_features == 7
    assert recipe_of(model)["kind"] == "py"
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_model("py:mymodels:Tiny", info)(_x()).shape == (4, 10)
    with pytest.raises(InputError, match="raised RuntimeError"):
        load_model(f"py:{src}:broken", info)
    with pytest.raises(InputError, match="no class or function"):
        load_model(f"py:{src}:Missing", info)


def test_shape_changed_models_reload_from_recipe(tmp_path, info):
    """A pruned model (fewer units) reloads with its new shapes from the original recipe."""
    model = load_model("zoo:mlp:hidden=16,depth=1", info)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    second = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][1]
    keep = torch.arange(0, 16, 2)
    first.weight = torch.nn.Parameter(first.weight.data[keep].clone())
    first.bias = torch.nn.Parameter(first.bias.data[keep].clone())
    first.out_features = 8
    second.weight = torch.nn.Parameter(second.weight.data[:, keep].clone())
    second.in_features = 8
    save_torch_model(model, tmp_path, recipe_of(model))
    again = load_torch_model(tmp_path)
    x = _x()
    assert torch.equal(again(x), model(x))
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())


