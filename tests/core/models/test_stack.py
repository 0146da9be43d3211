"""stack: models: every layer kind, shape inference and its errors, the text form, and the recipe round trip
(save, reload, prune with Torch-Pruning, export to ONNX) a stack model shares with zoo models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.core.errors import InputError
from workbench.core.models import recipe_of
from workbench.core.models.loading import load_torch_model
from workbench.core.models.serialize import save_torch_model
from workbench.core.models.stack import (
    LAYERS,
    TEMPLATES,
    build_stack,
    format_stack,
    inspect_stack,
    parse_stack,
    plan_stack,
    stack_recipe,
)

SEED = "conv(32,3);relu;maxpool(2);conv(64,3);relu;maxpool(2);conv(64,3);relu;flatten;dense(64);relu;dense"
IMAGE = (1, 28, 28)

# one stack per layer kind (image stacks on 1x12x12, text stacks on 16 token ids of a 50-word vocabulary)
EXAMPLES = {
    "conv": "conv(4,3,stride=2,padding=1);flatten;dense",
    "dwconv": "conv(4,1);dwconv(3,stride=2,multiplier=2);flatten;dense",
    "res": "conv(4,3,padding=same);res(8,stride=2);res;gavgpool;dense",
    "maxpool": "maxpool(3,stride=2);flatten;dense",
    "avgpool": "avgpool(2);flatten;dense",
    "gavgpool": "conv(6,3);gap;dense",
    "gmaxpool": "conv(6,3);gmaxpool;dense",
    "batchnorm": "conv(4,3);batchnorm;flatten;dense(8);batchnorm;dense",
    "layernorm": "flatten;dense(8);layernorm;dense",
    "dropout": "conv(4,3);dropout(0.2);flatten;dropout(0.3);dense",
    "flatten": "flatten;dense",
    "dense": "flatten;dense(16,bias=false);dense",
    "embed": "embed(8);gavgpool;dense",
    "pos": "embed(8);pos;gmaxpool;dense",
    "lstm": "embed(8);lstm(6,output=seq);lstm(5,layers=2,bidirectional=true);dense",
    "gru": "embed(8);gru(6,output=mean,bidirectional=true);dense",
    "transformer": "embed(8);pos;transformer(2,ff=16);batchnorm;gavgpool;dense",
}
EXAMPLES.update({act: f"flatten;dense(8);{act};dense" for act in
                 ("relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh", "hardswish", "softplus",
                  "softmax")})
TEXT_KINDS = {"embed", "pos", "lstm", "gru", "transformer"}


def _input(kind: str) -> tuple[tuple[int, ...], int | None, torch.Tensor]:
    if kind in TEXT_KINDS:
        return (16,), 50, torch.randint(1, 50, (3, 16))
    return (1, 12, 12), None, torch.randn(3, 1, 12, 12)


def test_every_layer_kind_has_an_example():
    assert set(EXAMPLES) == set(LAYERS)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_every_layer_kind_builds_and_trains(kind):
    shape, vocab, x = _input(kind)
    model = build_stack(EXAMPLES[kind], shape, 5, vocab_size=vocab)
    plan = plan_stack(EXAMPLES[kind], shape, 5, vocab_size=vocab)
    assert sum(p.numel() for p in model.parameters()) == plan.params  # per-row counts add up to the model
    assert any(row.text.startswith(kind) for row in plan.rows)
    out = model(x)
    assert out.shape == (3, 5)
    out.sum().backward()  # trainable end to end
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_seed_cnn_matches_the_keras_seed_layer_by_layer():
    plan = plan_stack(SEED, IMAGE, 10)
    assert plan.params == 93_322
    assert [r.output_shape for r in plan.rows][:4] == [(32, 26, 26), (32, 26, 26), (32, 13, 13), (64, 11, 11)]
    assert plan.rows[0].params == 320 and plan.rows[0].macs == 32 * 26 * 26 * 9
    assert plan.rows[-1].output_shape == (10,) and plan.rows[-1].params == 650  # the final dense gets the classes


@pytest.mark.parametrize("text, message", [
    ("conv(32,3);relu;maxpool(2);conv(64,3);relu;maxpool(2);conv(64,3);dense(64);dense",
     "layer 8 dense(64): input 1x64x3x3 needs flatten first"),
    ("conv(8,3);bogus;flatten;dense", "layer 2 bogus: unknown layer 'bogus'"),
    ("conv(eight)", "layer 1 conv(eight): filters: 'eight' is not a valid int"),
    ("conv(8,3,wide=2)", "layer 1 conv(8,3,wide=2): unknown argument 'wide'"),
    ("flatten;dense;dense", "layer 2 dense: input 1x784 needs a size"),
    ("flatten;dense(7)", "the stack ends in 1x7; the dataset has 10 classes"),
    ("conv(8,3);maxpool(40);flatten;dense", "layer 2 maxpool(40): input 1x8x26x26 is smaller than the 40x40 window"),
    ("embed(8);dense", "layer 1 embed(8): input 1x1x28x28 needs token ids"),
    ("flatten;dense(8);softmax", "final softmax"),
    ("conv(8,3,padding=half)", "padding must be same, valid or a number"),
    ("", "no layers"),
])
def test_errors_name_the_layer_and_its_input(text, message):
    with pytest.raises(InputError) as err:
        build_stack(text, IMAGE, 10)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_text_stacks_need_an_embedding_and_a_vocabulary():
    with pytest.raises(InputError, match="token ids need embed first"):
        build_stack("lstm(8);dense", (16,), 3, vocab_size=50)
    with pytest.raises(InputError, match="needs a sequence"):
        build_stack("flatten;lstm(4);dense", IMAGE, 10)
    with pytest.raises(InputError, match="not divisible by heads=3"):
        build_stack("embed(8);transformer(3);gap;dense", (16,), 3, vocab_size=50)


def test_inspect_keeps_the_rows_before_the_failing_layer():
    check = inspect_stack("conv(8,3);relu;dense(4);dense", IMAGE, 10)
    assert check.failed == 3 and "needs flatten first" in check.error
    assert [r.text for r in check.rows] == ["conv(8,3)", "relu"]
    assert inspect_stack(SEED, IMAGE, 10).error is None


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_text_form_round_trips(name):
    text = TEMPLATES[name]
    assert format_stack(parse_stack(text)) == text
    assert format_stack(parse_stack("stack:" + text.replace(";", " ;\n "))) == text


def test_keyword_and_alias_forms_normalise():
    assert format_stack(parse_stack("Conv(filters=8, kernel=5);bn;GAP;linear")) == "conv(8,5);batchnorm;gavgpool;dense"


def _prune_half(model, example):
    import torch_pruning as tp

    last = model.layers[-1]
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[last])
    pruner.step()
    return model


@pytest.mark.parametrize("text, shape, vocab", [
    (SEED, IMAGE, None),
    ("conv(8,3,padding=same);batchnorm;relu;res(16,stride=2);dwconv(3);gap;dense", (1, 12, 12), None),
    ("embed(8);lstm(6,output=mean);dense", (16,), 50),
])
def test_round_trip_recipe_reload_prune_export(tmp_path, text, shape, vocab):
    from workbench.core.models.loading import build_from_recipe
    from workbench.core.variants.export import export_onnx

    torch.manual_seed(0)
    recipe = stack_recipe(text, shape, 10, vocab)
    model = build_from_recipe(recipe).eval()
    x = torch.randint(1, 50, (4, *shape)) if vocab else torch.randn(4, *shape)
    assert recipe_of(model)["kind"] == "stack"
    (tmp_path / "a").mkdir()
    save_torch_model(model, tmp_path / "a", recipe)
    reloaded = load_torch_model(tmp_path / "a")
    assert torch.equal(reloaded(x), model(x))
    if vocab is None:  # structural pruning of the convolutions, then the pruned shapes reload
        before = sum(p.numel() for p in model.parameters())
        _prune_half(model, x[:1])
        assert sum(p.numel() for p in model.parameters()) < 0.6 * before
        (tmp_path / "b").mkdir()
        save_torch_model(model, tmp_path / "b", recipe)
        again = load_torch_model(tmp_path / "b")
        assert torch.equal(again(x), model(x))
    export_onnx(model, x[:2], tmp_path / "m.onnx", verify_batches=[x])
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)


def test_load_model_spec_uses_the_dataset():
    from workbench.core.data import DatasetInfo
    from workbench.core.models import load_model

    info = DatasetInfo("digits", "image", (1, 28, 28), 10, tuple("0123456789"), "float32")
    model = load_model("stack:" + SEED, info)
    assert sum(p.numel() for p in model.parameters()) == 93_322
    assert recipe_of(model) == {"kind": "stack", "layers": SEED, "input_shape": [1, 28, 28], "num_classes": 10,
                                "vocab_size": None}
    text_info = DatasetInfo("t", "text", (16,), 3, ("a", "b", "c"), "int64", vocab_size=40)
    lstm = load_model("stack:embed(8);lstm(8);dense", text_info)
    assert lstm.layers[0].num_embeddings == 40  # the vocabulary comes from the dataset
