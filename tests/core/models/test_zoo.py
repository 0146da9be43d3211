"""Model zoo: shapes, width scaling, input-fit errors, option parsing, plugins, export and pruning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from workbench.core.errors import InputError
from workbench.core.models import zoo
from workbench.core.models.zoo import ZooEntry, build_zoo_model, list_models

IMAGE_MODELS = ["seed_cnn", "lenet5", "mlp", "resnet8", "resnet18", "mobilenet_v2"]
TEXT_MODELS = ["lstm_classifier", "transformer_encoder"]
ALL_MODELS = IMAGE_MODELS + TEXT_MODELS
SEQ_LEN, VOCAB = 16, 100


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(
    name: str, width: float = 1.0, image_shape: tuple[int, ...] = (1, 28, 28), classes: int = 10
) -> nn.Module:
    if name in TEXT_MODELS:
        return build_zoo_model(name, (SEQ_LEN,), classes, {"width": width, "vocab_size": VOCAB})
    return build_zoo_model(name, image_shape, classes, {"width": width})


def _example(name: str, batch: int, image_shape: tuple[int, ...] = (1, 28, 28)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if name in TEXT_MODELS:
        tokens = torch.randint(1, VOCAB, (batch, SEQ_LEN), generator=gen)
        tokens[:, SEQ_LEN // 2 :] = 0  # trailing padding, as a tokenizer would give
        return tokens
    return torch.rand(batch, *image_shape, generator=gen)


def test_seed_cnn_has_the_classic_parameter_count() -> None:
    assert _params(build_zoo_model("seed_cnn", (1, 28, 28), 10)) == 93_322


def test_list_models_has_every_builtin_with_a_description() -> None:
    entries = {e.name: e for e in list_models()}
    assert set(ALL_MODELS) <= set(entries)
    for name in ALL_MODELS:
        entry = entries[name]
        assert isinstance(entry, ZooEntry)
        assert entry.description and "\n" not in entry.description
    assert entries["lstm_classifier"].input_kinds == ("text",)
    assert "tabular" in entries["mlp"].input_kinds


@pytest.mark.parametrize("name", ALL_MODELS)
def test_output_is_batch_by_classes_and_classifier_is_linear(name: str) -> None:
    model = _build(name, width=0.5, classes=7)
    assert isinstance(model.classifier, nn.Linear)
    assert model.classifier.out_features == 7
    assert model(_example(name, 4)).shape == (4, 7)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_smaller_width_gives_fewer_parameters(name: str) -> None:
    full, quarter = _params(_build(name, 1.0)), _params(_build(name, 0.25))
    assert quarter < full
    if name in ("resnet8", "resnet18"):  # conv-dominated: parameters scale about with width squared
        assert quarter / full < 0.1


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_image_models_adapt_to_colour_32x32_input(name: str) -> None:
    model = _build(name, 0.25, image_shape=(3, 32, 32), classes=5)
    assert model(_example(name, 2, (3, 32, 32))).shape == (2, 5)


def test_mlp_takes_tabular_vectors() -> None:
    model = build_zoo_model("mlp", (12,), 3, {"hidden": "32", "depth": "3", "dropout": "0.1"})
    assert model(torch.rand(5, 12)).shape == (5, 3)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 4


def test_seed_cnn_too_small_input_says_what_size_it_needs() -> None:
    with pytest.raises(InputError) as err:
        build_zoo_model("seed_cnn", (1, 8, 8), 10)
    message = str(err.value)
    assert "at least 1x18x18" in message and "1x8x8" in message
    assert "\n" not in message
    build_zoo_model("seed_cnn", (1, 18, 18), 10)  # the stated minimum really works


def test_text_models_refuse_images_and_cnns_refuse_vectors() -> None:
    with pytest.raises(InputError, match="lstm_classifier needs token sequences"):
        build_zoo_model("lstm_classifier", (1, 28, 28), 10)
    with pytest.raises(InputError, match="transformer_encoder needs token sequences"):
        build_zoo_model("transformer_encoder", (3, 32, 32), 10)
    with pytest.raises(InputError, match="resnet8 needs images"):
        build_zoo_model("resnet8", (20,), 2)


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(InputError, match="unknown model 'nope'; known: seed_cnn, lenet5"):
        build_zoo_model("nope", (1, 28, 28), 10)


def test_unknown_option_names_the_valid_ones() -> None:
    with pytest.raises(InputError, match="unknown option 'depth'; valid options: width"):
        build_zoo_model("seed_cnn", (1, 28, 28), 10, {"depth": 3})


def test_bad_option_value_is_an_input_error() -> None:
    with pytest.raises(InputError, match="option 'width' expects float"):
        build_zoo_model("seed_cnn", (1, 28, 28), 10, {"width": "wide"})
    with pytest.raises(InputError, match="option 'depth' expects int"):
        build_zoo_model("mlp", (1, 28, 28), 10, {"depth": "1.5"})
    with pytest.raises(InputError, match="width must be greater than 0"):
        build_zoo_model("mlp", (1, 28, 28), 10, {"width": "0"})


def test_string_options_are_converted_to_the_default_types() -> None:
    from_string = build_zoo_model("seed_cnn", (1, 28, 28), 10, {"width": "0.5"})
    from_float = build_zoo_model("seed_cnn", (1, 28, 28), 10, {"width": 0.5})
    assert _params(from_string) == _params(from_float) < 93_322
    assert from_string.features[0].out_channels == 16
    lstm = build_zoo_model("lstm_classifier", (10,), 2, {"vocab_size": "500", "num_layers": "2"})
    assert lstm.embedding.num_embeddings == 500 and lstm.lstm.num_layers == 2


def test_dry_forward_leaves_batchnorm_statistics_and_mode_alone() -> None:
    model = build_zoo_model("resnet8", (3, 16, 16), 4)
    assert model.training
    assert torch.equal(model.stem[1].running_mean, torch.zeros_like(model.stem[1].running_mean))
    assert int(model.stem[1].num_batches_tracked) == 0


class _FakeEntryPoint:
    def __init__(self, name: str, target: object) -> None:
        self.name, self.value, self._target = name, f"fake:{name}", target

    def load(self) -> object:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_plugin_models_load_lazily_and_broken_ones_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    def tiny(input_shape: tuple[int, ...], num_classes: int, *, width: float = 1.0) -> nn.Module:
        """A plugin test model."""
        model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))
        return model

    calls: list[str] = []

    def fake_entry_points(group: str) -> list[_FakeEntryPoint]:
        calls.append(group)
        return [_FakeEntryPoint("tiny", tiny), _FakeEntryPoint("broken", ImportError("no module named x"))]

    monkeypatch.setattr(zoo, "entry_points", fake_entry_points)
    monkeypatch.setattr(zoo, "_plugin_cache", None)
    build_zoo_model("seed_cnn", (1, 28, 28), 10)
    assert calls == []  # built-in names never touch the entry points
    with pytest.warns(UserWarning, match="'broken'.*could not be loaded"):
        names = [e.name for e in list_models()]
    assert calls == ["workbench.models"]
    assert "tiny" in names and "broken" not in names
    entry = next(e for e in list_models() if e.name == "tiny")
    assert entry.description == "A plugin test model."
    assert build_zoo_model("tiny", (4,), 3, {"width": "2"})(torch.rand(2, 4)).shape == (2, 3)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_onnx_export_with_dynamic_batch_matches_torch(name: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = _build(name, width=0.25 if name in ("resnet18", "mobilenet_v2") else 1.0).eval()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (_example(name, 2),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    x = _example(name, 3)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "name", ["seed_cnn", "resnet8", "mobilenet_v2", "lstm_classifier", "transformer_encoder"]
)
def test_torch_export_with_dynamic_batch(name: str) -> None:
    model = _build(name, width=0.25).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():  # nn.LSTM warns about its cached _flat_weights; harmless
        warnings.simplefilter("ignore")
        exported = torch.export.export(model, (_example(name, 2),), dynamic_shapes=({0: batch},))
    x = _example(name, 5)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_text_models_export_with_the_dynamo_onnx_exporter(name: str, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _build(name, width=0.25).eval()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (_example(name, 2),),
            str(path),
            dynamo=True,
            opset_version=18,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    x = _example(name, 3)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, atol=1e-4, rtol=1e-4)


def test_seed_cnn_learns_a_tiny_synthetic_problem() -> None:
    torch.manual_seed(0)
    n, side = 128, 20
    x = torch.rand(n, 1, side, side) * 0.3
    y = torch.randint(0, 2, (n,))
    x[y == 0, :, :, : side // 2] += 0.7  # class 0: bright left half
    x[y == 1, :, :, side // 2 :] += 0.7  # class 1: bright right half
    model = build_zoo_model("seed_cnn", (1, side, side), 2, {"width": 0.5})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.9


@pytest.mark.parametrize(("name", "width"), [("resnet18", 0.25), ("mobilenet_v2", 0.5)])
def test_torch_pruning_halves_channels_and_keeps_outputs(name: str, width: float) -> None:
    tp = pytest.importorskip("torch_pruning")
    model = build_zoo_model(name, (3, 32, 32), 10, {"width": width})
    example = torch.rand(2, 3, 32, 32)
    tp.DependencyGraph().build_dependency(model, example_inputs=example)
    before = _params(model)
    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[model.classifier],
    )
    pruner.step()
    assert _params(model) < 0.5 * before
    assert model.classifier.out_features == 10
    assert model(example).shape == (2, 10)
