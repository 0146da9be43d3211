"""Keras files converted to torch: every converted layer against Keras' own outputs (NHWC in Keras, NCHW here),
the seed's model from .keras and .h5, the recipe round trip, and every refusal (stored code, unsafe archives,
layers that do not convert)."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from workbench.core.errors import InputError  # noqa: E402
from workbench.core.models import recipe_of  # noqa: E402
from workbench.core.models.keras_import import load_keras_file  # noqa: E402
from workbench.core.models.loading import load_torch_model  # noqa: E402
from workbench.core.models.serialize import save_torch_model  # noqa: E402

TOL = 1e-4
# Keras' torch backend calls np.array(tensor, copy=False), which NumPy 2 warns about; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _randomize(model, seed: int = 0) -> None:
    """Weights (BatchNorm moving statistics included) away from their initial values."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = []
        for w, v in zip(layer.weights, weights):
            if "moving_variance" in w.path:
                new.append(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
            else:
                new.append(rng.normal(0, 0.3, v.shape).astype(np.float32))
        layer.set_weights(new)


def _convert(model, tmp_path, suffix=".keras"):
    path = tmp_path / f"m{suffix}"
    model.save(path)
    return load_keras_file(path)


def _keras_out(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


def _compare(model, torch_model, x: np.ndarray) -> float:
    ref = _keras_out(model, x)
    xt = torch.from_numpy(x)
    if xt.dim() == 4:
        xt = xt.permute(0, 3, 1, 2)
    with torch.no_grad():
        got = torch_model(xt)
    if recipe_of(torch_model).get("keras_softmax"):
        got = torch.softmax(got, dim=1)
    return float(np.abs(got.numpy() - ref).max())


def _image(n=3, h=12, w=12, c=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n, h, w, c)).astype(np.float32)


def _seed_cnn():
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_seed_cnn_matches_keras_from_both_formats(tmp_path, suffix):
    keras.utils.set_random_seed(0)
    model = _seed_cnn()
    converted = _convert(model, tmp_path, suffix)
    assert sum(p.numel() for p in converted.parameters()) == 93_322
    recipe = recipe_of(converted)
    assert recipe["kind"] == "keras" and recipe["keras_softmax"] and recipe["input_shape"] == [1, 28, 28]
    assert converted.output_activation == "softmax"
    assert _compare(model, converted, _image(4, 28, 28, 1)) < TOL
    logits = converted(torch.zeros(2, 1, 28, 28))
    assert not torch.allclose(logits.sum(1), torch.ones(2))  # logits for training, not probabilities


def _functional_branches():
    inp = keras.Input((12, 12, 3))
    x = layers.Rescaling(0.5, offset=-0.1)(inp)
    a = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)  # uneven 'same' padding
    a = layers.BatchNormalization(epsilon=1e-2, momentum=0.9)(a)
    a = layers.ReLU(max_value=6)(a)
    b = layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(x)
    b = layers.Conv2D(8, 1, activation="gelu")(b)
    s = layers.Add()([a, b])
    c = layers.Concatenate()([s, a])
    c = layers.SeparableConv2D(6, 3, padding="same", activation="swish")(c)
    c = layers.MaxPooling2D(3, strides=2, padding="same")(c)
    c = layers.ZeroPadding2D(((1, 0), (0, 1)))(c)
    c = layers.AveragePooling2D(2)(c)
    g = layers.GlobalAveragePooling2D()(s)
    f = layers.Flatten()(c)
    f = layers.Dense(12)(f)
    f = layers.LeakyReLU(0.1)(f)
    both = layers.Concatenate()([f, g, layers.GlobalMaxPooling2D()(c)])
    both = layers.Dropout(0.3)(both)
    out = layers.Dense(4, activation="softmax")(both)
    return keras.Model(inp, out)


def test_functional_graph_with_branches_batchnorm_padding_and_depthwise(tmp_path):
    keras.utils.set_random_seed(1)
    model = _functional_branches()
    _randomize(model)
    bn = next(layer for layer in model.layers if isinstance(layer, layers.BatchNormalization))
    assert not np.allclose(bn.moving_variance.numpy(), 1.0)  # statistics away from their defaults
    converted = _convert(model, tmp_path)
    torch_bn = converted.nodes[bn.name]
    assert torch_bn.eps == pytest.approx(1e-2) and torch_bn.momentum == pytest.approx(0.1)
    assert _compare(model, converted, _image()) < TOL


def test_flattened_image_concatenated_keeps_keras_order(tmp_path):
    inp = keras.Input((4, 4, 2))
    a = layers.Flatten()(layers.Conv2D(3, 1)(inp))
    b = layers.Flatten()(inp)
    out = layers.Dense(3)(layers.Concatenate()([a, b]))
    model = keras.Model(inp, out)
    _randomize(model)
    converted = _convert(model, tmp_path)
    assert _compare(model, converted, _image(2, 4, 4, 2)) < TOL
    assert not recipe_of(converted)["keras_softmax"]


def test_reshape_conv1d_layernorm_and_activations(tmp_path):
    inp = keras.Input((8, 8, 1))
    x = layers.Flatten()(inp)
    x = layers.Dense(48, activation="tanh")(x)
    x = layers.Reshape((12, 4))(x)
    x = layers.Conv1D(6, 3, padding="causal", activation="elu")(x)
    x = layers.Conv1D(6, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.LayerNormalization()(x)
    x = layers.Activation("sigmoid")(x)
    x = layers.MaxPooling1D(2)(x)
    x = layers.AveragePooling1D(1)(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dense(5, activation="softplus")(x)
    x = layers.Softmax()(layers.Dense(3)(x))
    model = keras.Model(inp, x)
    _randomize(model, 3)
    converted = _convert(model, tmp_path)
    assert recipe_of(converted)["keras_softmax"]
    assert _compare(model, converted, _image(3, 8, 8, 1)) < TOL


def _text_model(bidirectional: bool):
    inp = keras.Input((10,), dtype="int32")
    x = layers.Embedding(30, 8)(inp)
    x = layers.LSTM(7, return_sequences=True)(x)
    x = layers.GRU(6, return_sequences=True, go_backwards=True)(x)
    x = layers.SimpleRNN(5, return_sequences=True)(x)
    if bidirectional:
        x = layers.Bidirectional(layers.LSTM(4))(x)
    else:
        x = layers.GRU(4)(x)
    out = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inp, out)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_text_model_gate_order(tmp_path, bidirectional):
    keras.utils.set_random_seed(2)
    model = _text_model(bidirectional)
    _randomize(model, 4)
    converted = _convert(model, tmp_path)
    tokens = np.random.default_rng(0).integers(0, 30, (4, 10)).astype(np.int32)
    ref = _keras_out(model, tokens)
    with torch.no_grad():
        got = torch.softmax(converted(torch.from_numpy(tokens).long()), 1).numpy()
    assert float(np.abs(got - ref).max()) < TOL
    assert recipe_of(converted)["input_dtype"] == "int64" and recipe_of(converted)["input_shape"] == [10]


def test_converted_model_reloads_prunes_and_trains(tmp_path):
    import torch_pruning as tp

    keras.utils.set_random_seed(0)
    converted = _convert(_seed_cnn(), tmp_path)
    recipe = recipe_of(converted)
    x = torch.randn(4, 1, 28, 28)
    (tmp_path / "v").mkdir()
    save_torch_model(converted, tmp_path / "v", recipe)
    reloaded = load_torch_model(tmp_path / "v")
    assert torch.equal(reloaded(x), converted(x))
    convs = [m for m in converted.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in converted.modules() if isinstance(m, torch.nn.Linear)]
    pruner = tp.pruner.MetaPruner(converted, x[:1], importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[linears[-1]])
    pruner.step()
    assert convs[0].out_channels == 16
    (tmp_path / "p").mkdir()
    save_torch_model(converted, tmp_path / "p", recipe)
    pruned = load_torch_model(tmp_path / "p")
    assert torch.equal(pruned(x), converted(x))
    loss = torch.nn.functional.cross_entropy(pruned.train()(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert next(m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)).weight.grad is not None


# --------------------------------------------------------------------------------------------- refusals


def _lambda_model(marker):
    return keras.Sequential([keras.Input((4,)), layers.Lambda(lambda t: (open(marker, "w").close(), t)[1], name="evil"),
                             layers.Dense(2)])


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layer_is_refused_and_never_runs(tmp_path, suffix):
    marker = tmp_path / "ran"
    path = tmp_path / f"evil{suffix}"
    _lambda_model(str(marker)).save(path)
    marker.unlink(missing_ok=True)  # building the model above ran the lambda; loading must not
    with pytest.raises(InputError, match="layer 'evil' \\(Lambda\\) holds Python code; refused"):
        load_keras_file(path)
    assert not marker.exists()


def _archive_with(tmp_path, members: dict[str, bytes], name="bad.keras", link: str | None = None):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as z:
        for member, data in members.items():
            z.writestr(member, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "/etc/passwd")
    return path


CONFIG = json.dumps({"module": "keras", "class_name": "Sequential", "config": {"layers": []}}).encode()


@pytest.mark.parametrize("member", ["../outside.txt", "/abs/path.txt", "a/../../x", "C:\\windows\\x", "dir\\..\\x"])
def test_archive_members_outside_the_folder_are_refused(tmp_path, member):
    path = _archive_with(tmp_path, {"config.json": CONFIG, member: b"x"})
    with pytest.raises(InputError, match="refused"):
        load_keras_file(path)
    assert not (tmp_path.parent / "outside.txt").exists()


def test_archive_symlinks_and_garbage_are_refused(tmp_path):
    with pytest.raises(InputError, match="symbolic link"):
        load_keras_file(_archive_with(tmp_path, {"config.json": CONFIG}, link="assets/link"))
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a Keras 3 archive"):
        load_keras_file(garbage)
    with pytest.raises(InputError, match="no config.json"):
        load_keras_file(_archive_with(tmp_path, {"metadata.json": b"{}"}, "noconfig.keras"))


def test_custom_objects_and_functions_are_refused(tmp_path):
    custom = {"module": "keras", "class_name": "Sequential", "config": {"layers": [
        {"module": "evil.layers", "class_name": "Backdoor", "config": {"name": "backdoor"}}]}}
    with pytest.raises(InputError, match="layer 'backdoor' \\(Backdoor\\) comes from 'evil.layers'"):
        load_keras_file(_archive_with(tmp_path, {"config.json": json.dumps(custom).encode()}, "c.keras"))
    function = {"module": "keras", "class_name": "Sequential", "config": {"layers": [
        {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "activation": {
            "module": "builtins", "class_name": "function", "config": "my_act", "registered_name": "function"}}}]}}
    with pytest.raises(InputError, match="Python code"):
        load_keras_file(_archive_with(tmp_path, {"config.json": json.dumps(function).encode()}, "f.keras"))


def test_unconvertible_layer_is_named(tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 1)), layers.UpSampling2D(name="up"), layers.Flatten(), layers.Dense(2)])
    with pytest.raises(InputError) as err:
        _convert(model, tmp_path)
    assert "layer 'up' (UpSampling2D) cannot be converted to torch" in str(err.value)
    assert "\n" not in str(err.value)


def test_masking_is_refused_not_silently_wrong(tmp_path):
    model = keras.Sequential([keras.Input((6,), dtype="int32"), layers.Embedding(10, 4, mask_zero=True),
                              layers.LSTM(3, name="rnn"), layers.Dense(2)])
    with pytest.raises(InputError, match="layer 'rnn' \\(LSTM\\) cannot be converted to torch: masking"):
        _convert(model, tmp_path)


def test_weights_only_h5_is_refused(tmp_path):
    model = keras.Sequential([keras.Input((4,)), layers.Dense(2)])
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    with pytest.raises(InputError, match="without a model configuration"):
        load_keras_file(path)


def test_cli_refuses_a_lambda_file_with_exit_2(tmp_path):
    from tests.conftest import run_cli

    marker = tmp_path / "ran"
    _lambda_model(str(marker)).save(tmp_path / "evil.keras")
    marker.unlink(missing_ok=True)
    done = run_cli("--batch", "--model", str(tmp_path / "evil.keras"), "--dataset", "digits:size=8", "--job",
                   "evaluate", "--out", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert "holds Python code; refused" in done.stderr
    assert not marker.exists()


def test_a_custom_loss_is_not_refused_it_is_never_rebuilt(tmp_path):
    def my_loss(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_true - y_pred))

    model = keras.Sequential([keras.Input((4,)), layers.Dense(3)])
    model.compile(optimizer="adam", loss=my_loss)
    converted = _convert(model, tmp_path)  # compile=False: the stored loss is never looked up, let alone run
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    assert _compare(model, converted, x) < TOL


def test_saved_model_folder_goes_through_tf2onnx_or_says_what_it_needs(tmp_path):
    import importlib.util

    from workbench.core.models.loading import load_model_file

    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf2onnx") is None:
        with pytest.raises(InputError, match="needs tensorflow and tf2onnx"):
            load_model_file(folder)
        return
    with pytest.raises(InputError, match="tf2onnx could not convert"):  # an empty saved_model.pb
        load_model_file(folder)
