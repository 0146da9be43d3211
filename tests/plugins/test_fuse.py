"""The fuse job: BatchNorm folding, onnxruntime graph optimization, model soups and ensembles."""

import onnx
import pytest
import torch

from tests.plugins.helpers import trained_variant
from workbench.core.execution.runner import JobRequest
from workbench.core.models.loading import load_variant_folder
from workbench_plugins._fusion import count_batchnorm, fold_batchnorm, soup
from workbench_plugins.fuse import FuseJob

RESNET = "zoo:resnet8:width=0.25"


def _model(session, vid):
    return load_variant_folder(session.workspace.variant(vid).path)


def _outputs(model, session, n=32):
    try:
        model.eval()
    except NotImplementedError:  # a torch.export program: saved in eval mode already
        pass
    with torch.inference_mode():
        return model(session.data.example_batch(n))


@pytest.fixture
def trained(make_session, runner_for):
    return trained_variant(make_session, runner_for, RESNET, epochs=1, lr=0.01)


def test_conv_bn_folds_every_batchnorm_and_reloads_trainable(trained):
    session, runner, parent = trained
    out = runner.run(JobRequest("fuse", {"method": "conv_bn"}, parent, "cpu", 0))
    assert out.status == "ok", out.error
    variant = session.workspace.variant(out.variant)
    assert variant.result["bn_left"] == 0 and variant.result["bn_folded"] == variant.result["bn_before"] > 0
    fused, before = _model(session, out.variant), _model(session, parent)
    assert count_batchnorm(fused) == 0 and type(fused) is type(before)
    assert (_outputs(fused, session) - _outputs(before, session)).abs().max() < 1e-4
    ops = {n.op_type for n in onnx.load(str(variant.path / "model.onnx")).graph.node}
    assert "BatchNormalization" not in ops
    assert out.metrics["accuracy"] == pytest.approx(session.workspace.variant(parent).metrics["accuracy"], abs=0.003)
    again = runner.run(JobRequest("train", {"epochs": 1}, out.variant, "cpu", 0))
    assert again.status == "ok", again.error
    assert count_batchnorm(_model(session, again.variant)) == 0


def test_fold_batchnorm_without_fx_uses_sequential_patterns():
    class Dynamic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())

        def forward(self, x):
            return self.body(x) if x.sum() > -1e9 else x  # data-dependent: fx cannot trace it

    model = Dynamic()
    model.body[1].running_mean.uniform_(-1, 1)
    model.body[1].running_var.uniform_(0.5, 2)
    fused, folded, how = fold_batchnorm(model)
    x = torch.randn(2, 1, 8, 8)
    assert (how, folded, count_batchnorm(fused)) == ("sequential", 1, 0)
    assert torch.allclose(fused(x), model.eval()(x), atol=1e-5)


def test_onnx_graph_reduces_nodes_with_identical_outputs(trained):
    session, runner, parent = trained
    out = runner.run(JobRequest("fuse", {"method": "onnx_graph"}, parent, "cpu", 0))
    assert out.status == "ok", out.error
    variant = session.workspace.variant(out.variant)
    assert (variant.path / "model.onnx").exists() and not (variant.path / "model.safetensors").exists()
    assert variant.result["nodes_after"] < variant.result["nodes_before"]
    assert variant.result["max_abs_diff"] <= 1e-4
    optimized = _model(session, out.variant)
    assert (_outputs(optimized, session) - _outputs(_model(session, parent), session)).abs().max() < 1e-4
    again = runner.run(JobRequest("fuse", {"method": "onnx_graph", "level": "basic"}, out.variant, "cpu", 0))
    assert again.status == "ok", again.error


def test_greedy_soup_is_at_least_its_best_ingredient(trained):
    session, runner, parent = trained
    tunes = [runner.run(JobRequest("train", {"epochs": 1, "lr": 0.002}, parent, "cpu", s)).variant for s in (1, 2, 3)]
    params = {"method": "average", "soup": "greedy", "with": tunes, "include_input": False}
    out = runner.run(JobRequest("fuse", params, tunes[0], "cpu", 0))
    assert out.status == "ok", out.error
    result = session.workspace.variant(out.variant).result
    assert result["soup_val_accuracy"] >= max(result["ingredient_val_accuracy"].values())
    assert set(result["ingredients"]) <= set(tunes) and result["candidates"] == tunes
    uniform = runner.run(JobRequest("fuse", {"method": "average", "soup": "uniform", "with": tunes[1:]},
                                    tunes[0], "cpu", 0))
    assert uniform.status == "ok", uniform.error
    models = [_model(session, t) for t in tunes]
    expected = soup(models).state_dict()["classifier.weight"]
    got = _model(session, uniform.variant).state_dict()["classifier.weight"]
    assert torch.allclose(got, expected, atol=1e-6)


def test_ensemble_is_one_onnx_graph_at_least_as_good(trained):
    session, runner, parent = trained
    members = [runner.run(JobRequest("train", {"epochs": 1, "lr": 0.005}, parent, "cpu", s)).variant for s in (1, 2)]
    out = runner.run(JobRequest("fuse", {"method": "ensemble", "with": members}, parent, "cpu", 0))
    assert out.status == "ok", out.error
    best = max(session.workspace.variant(v).metrics["accuracy"] for v in [parent, *members])
    assert out.metrics["accuracy"] >= best - 0.005
    variant = session.workspace.variant(out.variant)
    graph = onnx.load(str(variant.path / "model.onnx")).graph
    assert len(graph.input) == 1 and len(graph.output) == 1
    reloaded = _model(session, out.variant)
    for n in (1, 5):
        assert _outputs(reloaded, session, n).shape == (n, session.data.info.num_classes)
    probs = runner.run(JobRequest("fuse", {"method": "ensemble", "with": members, "combine": "probs"},
                                  parent, "cpu", 0))
    assert probs.status == "ok", probs.error
    assert probs.metrics["accuracy"] >= best - 0.02


def test_with_is_a_cli_parameter_and_mismatches_are_bad_input(make_session, runner_for):
    from workbench.core.kv import split_kv

    job = FuseJob(**split_kv("method=average,with=v0003,v0004", "job fuse"))
    assert job.values["with"] == ["v0003", "v0004"] and list(FuseJob.params())[:2] == ["method", "with"]
    session, root = make_session(model=RESNET)
    runner = runner_for(session)
    other = runner.run(JobRequest("distill", {"student": "zoo:resnet8:width=0.5", "epochs": 1}, root, "cpu", 0))
    out = runner.run(JobRequest("fuse", {"method": "average", "with": [other.variant]}, root, "cpu", 0))
    assert out.status == "failed" and out.bad_input and "architecture" in out.error
    alone = runner.run(JobRequest("fuse", {"method": "ensemble"}, root, "cpu", 0))
    assert alone.status == "failed" and "at least two" in alone.error
