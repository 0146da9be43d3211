"""A language model as a variant: the causal_lm task's metrics, reload equality after training (tokenizer
included), the fixed-shape ONNX export, generation and decode speed with a KV cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.core.data import load_dataset
from workbench.core.errors import JobFailed
from workbench.core.lm.generate import decode_tokens_per_s, generate_ids, generate_text
from workbench.core.models import load_model
from workbench.core.models.loading import load_torch_model
from workbench.core.models.serialize import recipe_of, save_torch_model
from workbench.core.tasks import get_task, task_of

SPEC = "zoo:tiny_llama:hidden=32,layers=2,heads=2,kv_heads=1"


@pytest.fixture
def lm(corpus):
    data = load_dataset(f"text:{corpus}:seq_len=16,vocab=300", batch_size=16)
    torch.manual_seed(0)
    return load_model(SPEC, data.info), data


def _train(model, data, steps: int = 30) -> None:
    task = task_of(data.info)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i, (x, y) in enumerate(data.loader("train", seed=0)):
        if i == steps:
            break
        opt.zero_grad()
        task.training_loss(model(x), y).backward()
        opt.step()
    model.eval()


def test_task_of_a_corpus_is_causal_lm(lm):
    _model, data = lm
    task = task_of(data.info)
    assert (task.name, task.headline, task.higher_is_better, task.default_bench_batch) == ("causal_lm", "perplexity",
                                                                                           False, 1)
    assert task_of(load_dataset("digits").info).name == "classification"


def test_perplexity_is_exp_of_the_mean_token_nll(lm):
    model, data = lm
    metrics = task_of(data.info).evaluate(model, data, "test")
    assert set(metrics) == {"perplexity", "loss", "token_accuracy"}
    x, y = data.tensors("test")
    with torch.inference_mode():
        nll = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    assert metrics["loss"] == pytest.approx(nll, rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert metrics["perplexity"] > 0.5 * data.info.vocab_size  # untrained: about uniform over the vocabulary
    _train(model, data, 40)
    trained = task_of(data.info).evaluate(model, data, "test")
    assert trained["perplexity"] < 0.5 * metrics["perplexity"] and trained["token_accuracy"] > 0.05


def test_a_trained_variant_reloads_exactly_with_its_tokenizer(tmp_path, lm):
    model, data = lm
    _train(model, data)
    assert save_torch_model(model, tmp_path, recipe_of(model)) == "safetensors"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "recipe.json"):
        assert (tmp_path / name).is_file(), name
    again = load_torch_model(tmp_path)
    x = data.example_batch(8)
    with torch.inference_mode():
        assert torch.equal(again(x), model(x))
    assert again.tokenizer.fingerprint() == model.tokenizer.fingerprint()
    assert recipe_of(again)["kind"] == "causal_lm" and recipe_of(again)["origin"]["name"] == "tiny_llama"
    # the variant folder is a Hugging Face folder: it opens as a model spec with the same data
    from_folder = load_model(str(tmp_path), data.info)
    with torch.inference_mode():
        assert torch.equal(from_folder(x), model(x))


def test_output_check_and_bench_input(lm):
    model, data = lm
    task = task_of(data.info)
    task.check_output(model, data, "cpu", "train")
    assert task.bench_input(data, 3).shape == (3, 16)
    with pytest.raises(JobFailed, match="expected next-token logits"):
        task.check_output(torch.nn.Embedding(data.info.vocab_size, 4), data, "cpu", "shrink")  # (batch, seq, 4)
    with pytest.raises(JobFailed, match="fails on a test batch"):
        task.check_output(torch.nn.Linear(3, 4), data, "cpu", "shrink")  # int64 ids into a float layer


def test_fixed_shape_onnx_export_is_verified_and_evaluates(tmp_path, lm):
    from workbench.core.models.onnx_model import OnnxModel

    model, data = lm
    _train(model, data, 10)
    task = task_of(data.info)
    example = task.bench_input(data, 2)
    result = task.export_onnx(model, example, tmp_path / "lm.onnx", verify_batches=[data.example_batch(2)])
    assert result.exporter == "dynamo" and result.max_abs_diff < 1e-3 and result.top1_agreement >= 0.99
    onnx_model = OnnxModel(tmp_path / "lm.onnx")
    assert onnx_model.session().get_inputs()[0].shape == [2, 16]
    via_onnx = task.evaluate(onnx_model, data, "test")  # fed in batches of the exported size, the last one padded
    via_torch = task.evaluate(model, data, "test")
    assert via_onnx["perplexity"] == pytest.approx(via_torch["perplexity"], rel=1e-3)


def test_generation_is_greedy_and_cached(lm):
    model, data = lm
    _train(model, data)
    prompt = data.tokenizer.encode("the model reads")
    new, stopped = generate_ids(model, prompt, 12)
    assert len(new) == 12 or stopped
    ids = list(prompt)  # the same tokens without a KV cache: full forward passes, argmax each time
    with torch.inference_mode():
        for _ in range(len(new)):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert ids[len(prompt):] == new
    gen = generate_text(model, "the model reads", 12)
    assert gen.text == data.tokenizer.decode(new) and gen.new_tokens == len(new)
    sampled = generate_text(model, "the model", 12, temperature=1.0, top_k=20, seed=1)
    assert sampled.text == generate_text(model, "the model", 12, temperature=1.0, top_k=20, seed=1).text
    assert decode_tokens_per_s(model, prompt, 8, repeats=1) > 0


def test_decode_speed_is_measured_within_the_budget_with_its_interval(lm):
    from workbench.core.errors import Cancelled
    from workbench.core.lm.generate import measure_decode
    from workbench.core.variants.timing import TimingBudget

    model, data = lm
    model.train()
    prompt = data.example_batch(1)[0, :8].tolist()
    speed = measure_decode(model, prompt, 8, TimingBudget(warmup_s=0.0, seconds=0.2, max_samples=50))
    assert 3 <= speed.runs <= 50
    assert 0 < speed.ci[0] <= speed.tokens_per_s <= speed.ci[1]
    assert model.training  # measured in eval mode, the caller's mode restored
    figures = task_of(data.info).extra_measurements(model, data, "cpu", TimingBudget(warmup_s=0.0, seconds=0.05))
    assert set(figures) == {"decode_tokens_per_s", "decode_tokens_per_s_ci"}
    low, high = figures["decode_tokens_per_s_ci"]
    assert low <= figures["decode_tokens_per_s"] <= high

    def stop() -> None:
        raise Cancelled("stop")

    with pytest.raises(Cancelled):  # a Stop during the timing ends it, as during a latency measurement
        measure_decode(model, prompt, 8, TimingBudget(warmup_s=0.0, seconds=5.0), check=stop)
    assert model.training


def test_a_plugin_can_register_a_third_task(corpus):
    from workbench.core.tasks import register_task
    from workbench.core.tasks.classification import ClassificationTask

    class Tagging(ClassificationTask):
        name = "tagging"
        headline = "f1"

    register_task(Tagging)
    assert get_task("tagging").headline == "f1"
    with pytest.raises(TypeError):
        register_task(object)  # type: ignore[arg-type]
