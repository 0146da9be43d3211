"""The prune job: structured pruning shrinks real models (coupled layers included), the result reloads exactly and
exports to ONNX; unstructured methods leave sparse dense weights and say so; bad inputs give clear errors."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.plugins.helpers import Bench
from workbench.core.execution.runner import JobRequest
from workbench.core.models import OnnxModel, load_model
from workbench.core.models.loading import load_variant_folder

IMAGES = "synthetic:kind=image,n=96,classes=4,shape=3x8x8"
SMALL_GREY = "synthetic:kind=image,n=96,classes=4,shape=1x12x12"  # the smallest lenet5 takes


@pytest.fixture
def bench_factory(tmp_path: Path) -> Iterator:
    made: list[Bench] = []

    def make(dataset: str = IMAGES) -> Bench:
        made.append(Bench(tmp_path / f"ws{len(made)}", dataset))
        return made[-1]

    yield make
    for b in made:
        b.close()


def run_and_save(bench: Bench, variant: str, **params: object) -> tuple[torch.nn.Module, Path]:
    """Run PruneJob in this thread, keep the model it returns, and save it as the runner would."""
    from workbench.core.execution.runner import RunHandle
    from workbench_plugins.prune import PruneJob

    job = PruneJob(**params)
    handle = RunHandle(1, JobRequest("prune", dict(params), variant, "cpu", 0))
    ctx = bench.session.make_context(handle.run_id, handle.cancel_event, PruneJob, variant, "cpu",
                                     lambda event: None, 0)
    try:
        model = job.run(ctx)
        saved = bench.session.save_result(model, ctx, job, variant, "cpu")
    finally:
        bench.session.release_context(ctx)
    return model.eval(), saved.path


def assert_reloads_exactly(model: torch.nn.Module, folder: Path, x: torch.Tensor) -> torch.nn.Module:
    """The folder holds safetensors + a recipe with the new shapes; the rebuilt model gives identical outputs."""
    assert json.loads((folder / "meta.json").read_text())["result"]["saved_as"] == "safetensors"
    reloaded = load_variant_folder(folder).eval()
    assert [p.shape for p in reloaded.parameters()] == [p.shape for p in model.parameters()]
    with torch.inference_mode():
        assert torch.equal(reloaded(x), model(x))
    return reloaded


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["zoo:resnet18:width=0.25", "zoo:mobilenet_v2:width=0.5"])
def test_structured_residual_and_depthwise_models_shrink_reload_and_export(bench_factory, spec: str) -> None:
    bench = bench_factory()
    root = bench.add(spec)
    full = bench.session.workspace.variant(root).metrics
    model, folder = run_and_save(bench, root, amount=0.5)
    metrics = json.loads((folder / "meta.json").read_text())["metrics"]
    assert metrics["params"] < 0.4 * full["params"]
    assert metrics["macs"] < 0.45 * full["macs"]
    x = bench.data.example_batch(8)
    reloaded = assert_reloads_exactly(model, folder, x)
    recipe = json.loads((folder / "recipe.json").read_text())
    narrowed = [n for n, s in recipe["shapes"].items() if "out_channels" in s
                and s["out_channels"] < dict(load_model(spec, bench.data.info).named_modules())[n].out_channels]
    assert narrowed, "the recipe records the pruned widths"
    with torch.inference_mode():
        y = reloaded(x)
        onnx_y = OnnxModel(folder / "model.onnx")(x)
    assert y.shape == (8, 4)
    torch.testing.assert_close(onnx_y, y, rtol=1e-3, atol=1e-4)


def test_structured_result_reports_channels_coupling_and_sizes(bench_factory) -> None:
    bench = bench_factory()
    out = bench.ok("prune", bench.add("zoo:resnet8:width=0.5"), amount=0.5)
    assert out.result["param_ratio"] == pytest.approx(out.metrics["params"] / out.result["params_before"], abs=1e-3)
    assert all(after < full for full, after in out.result["channels"].values())
    stem = out.result["coupled"]["stem.0"]
    assert "layers.0.conv2" in stem and "layers.0.bn2" in stem, "the residual add couples the stem with block 0"
    assert out.result["mac_ratio"] < 0.4


def test_pruned_variant_keeps_training(bench_factory) -> None:
    bench = bench_factory("digits")
    trained = bench.ok("train", bench.add("zoo:seed_cnn:width=0.5"), epochs=2)
    pruned = bench.ok("prune", trained.variant, amount=0.5)
    assert pruned.result["channels"] == {"features.0": [16, 8], "features.3": [32, 16], "features.6": [32, 16],
                                         "fc.0": [32, 16]}
    assert pruned.metrics["params"] <= 0.3 * trained.metrics["params"]
    assert pruned.metrics["nonzero_params"] == pruned.metrics["params"]
    assert not pruned.marks
    tuned = bench.ok("train", pruned.variant, epochs=1)
    assert tuned.metrics["params"] == pruned.metrics["params"]
    assert tuned.metrics["accuracy"] > 0.5


def test_iterative_steps_with_finetuning_log_live_metrics(bench_factory) -> None:
    bench = bench_factory()
    root = bench.add("zoo:resnet8:width=0.5")
    out = bench.ok("prune", root, amount=0.5, steps=2, finetune_epochs=1, importance="l2", scope="global")
    prune_points = [(s, m) for s, m in out.history if "prune_step" in m]
    assert [m["prune_step"] for _, m in prune_points] == [1.0, 2.0]
    assert prune_points[0][1]["params"] > prune_points[1][1]["params"]
    losses = [s for s, m in out.history if "loss" in m]
    assert losses and losses == sorted(losses), "fine-tuning steps keep counting across pruning steps"
    assert any("val_accuracy" in m and "epoch" in m for _, m in out.history)
    assert out.metrics["params"] < 0.5 * out.result["params_before"]


def test_taylor_and_bn_scale_importance(bench_factory) -> None:
    bench = bench_factory()
    trained = bench.ok("train", bench.add("zoo:resnet8:width=0.5"), epochs=1)
    for importance in ("taylor", "bn_scale"):
        out = bench.ok("prune", trained.variant, amount=0.25, importance=importance)
        assert out.result["importance"] == importance
        assert out.metrics["params"] < out.result["params_before"]


def test_bn_scale_without_batchnorm_and_unknown_ignore_are_input_errors(bench_factory) -> None:
    bench = bench_factory(SMALL_GREY)
    root = bench.add("zoo:lenet5")
    out = bench.run("prune", root, importance="bn_scale")
    assert out.status == "failed" and out.bad_input and "BatchNorm" in out.error
    out = bench.run("prune", root, ignore="features.9")
    assert out.status == "failed" and out.bad_input and "features.9" in out.error


def test_ignore_keeps_named_layers_at_full_width(bench_factory) -> None:
    bench = bench_factory(SMALL_GREY)
    out = bench.ok("prune", bench.add("zoo:lenet5"), amount=0.5, ignore="classifier,features.0")
    assert "features.0" not in out.result["channels"]
    assert out.result["channels"]["features.3"] == [16, 8]


def test_lstm_cannot_be_pruned_structurally_but_can_be_sparsified(bench_factory) -> None:
    bench = bench_factory("synthetic:kind=text,n=96,seq_len=12,vocab=50")
    root = bench.add("zoo:lstm_classifier:width=0.25,vocab_size=50")
    out = bench.run("prune", root)
    assert out.status == "failed" and out.bad_input
    assert "LSTM" in out.error and "l1_unstructured" in out.error
    sparse = bench.ok("prune", root, method="l1_unstructured", amount=0.5)
    assert sparse.metrics["nonzero_params"] < 0.75 * sparse.metrics["params"]


def test_transformer_attention_is_pruned_structurally(bench_factory) -> None:
    bench = bench_factory("synthetic:kind=text,n=96,seq_len=12,vocab=50")
    root = bench.add("zoo:transformer_encoder:width=0.5,vocab_size=50")
    full = bench.session.workspace.variant(root).metrics["params"]
    model, folder = run_and_save(bench, root, amount=0.5)
    assert sum(p.numel() for p in model.parameters()) < 0.5 * full
    assert_reloads_exactly(model, folder, bench.data.example_batch(8))


@pytest.mark.parametrize("method", ["l1_unstructured", "random_unstructured", "global_magnitude"])
def test_unstructured_methods_zero_weights_and_say_no_speed_up(bench_factory, method: str) -> None:
    bench = bench_factory(SMALL_GREY)
    root = bench.add("zoo:lenet5")
    out = bench.ok("prune", root, method=method, amount=0.8)
    assert out.metrics["params"] == bench.session.workspace.variant(root).metrics["params"]
    assert out.metrics["nonzero_params"] <= 0.25 * out.metrics["params"]  # biases and the classifier stay
    assert out.result["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert "sparse (no dense speed-up)" in out.marks
    assert "do not run faster" in out.result["note"]
    model = load_variant_folder(bench.folder(out.variant))
    assert not any("weight_orig" in k or "weight_mask" in k for k in model.state_dict()), "masks made permanent"
    assert float((model.classifier.weight == 0).float().mean()) < 0.05, "the classifier is ignored by default"


def test_l1_unstructured_08_on_seed_cnn_leaves_a_fifth_of_the_weights(bench_factory) -> None:
    bench = bench_factory("digits")
    out = bench.ok("prune", bench.add("zoo:seed_cnn"), method="l1_unstructured", amount=0.8)
    assert out.metrics["nonzero_params"] <= 0.22 * out.metrics["params"]
    assert out.metrics["latency_ms"] > 0 and "sparse (no dense speed-up)" in out.marks


def test_unstructured_finetuning_keeps_pruned_weights_at_zero(bench_factory) -> None:
    bench = bench_factory(SMALL_GREY)
    out = bench.ok("prune", bench.add("zoo:lenet5"), method="l1_unstructured", amount=0.6, steps=2,
                   finetune_epochs=1)
    assert out.result["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert any("loss" in m for _, m in out.history)


USER_MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    class SE(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(c, c // 2, 1)
            self.fc2 = nn.Conv2d(c // 2, c, 1)

        def forward(self, x):
            return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))

    class Net(nn.Module):
        """Grouped convolution, squeeze-excitation, a concatenation and a head named 'head'."""

        def __init__(self, input_shape, num_classes):
            super().__init__()
            c = input_shape[0]
            self.a = nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.b = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16), nn.ReLU())
            self.se = SE(32)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(32, num_classes)

        def forward(self, x):
            a = self.a(x)
            y = self.se(torch.cat([a, self.b(a)], dim=1))
            return self.head(torch.flatten(self.pool(y), 1))
''')


def test_users_own_model_with_se_groups_and_concat(bench_factory, tmp_path: Path) -> None:
    source = tmp_path / "user_net.py"
    source.write_text(USER_MODEL)
    bench = bench_factory()
    root = bench.add(f"py:{source}:Net")
    out = bench.ok("prune", root, amount=0.5)
    assert out.metrics["params"] < 0.6 * out.result["params_before"]
    assert "head" not in out.result["channels"], "the output layer is found and kept without a name"
    model, folder = run_and_save(bench, root, amount=0.5)
    reloaded = assert_reloads_exactly(model, folder, bench.data.example_batch(8))
    assert reloaded.b[0].groups == 4 and reloaded.b[0].out_channels == 8
