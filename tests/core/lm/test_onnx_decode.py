"""The KV-cache decode graph: greedy generation through onnxruntime gives torch's very tokens (Llama, Qwen2), the
graph's inputs and outputs have the documented names and static shapes, its decode speed is measured, a family
it cannot express is refused in one line, and the export job writes it beside the prefill (a failure there is a
warning, not the job's failure)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.core.lm.lm_helpers import make_corpus, small_config
from workbench.core.errors import InputError
from workbench.core.lm.generate import generate_ids
from workbench.core.lm.model import CausalLM, tiny_llama
from workbench.core.lm.onnx_decode import OnnxDecoder, export_decoder_with_cache, onnx_decode_tokens_per_s

PROMPT = [5, 17, 3, 42, 8, 99]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _hf_family(arch: str, vocab: int = 300) -> CausalLM:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return CausalLM(AutoModelForCausalLM.from_config(small_config(arch, vocab)).eval())


def _check_greedy(model: CausalLM, path, max_len: int, new: int) -> None:
    result = export_decoder_with_cache(model, path, max_len, verify_prompt=PROMPT, verify_tokens=new)
    assert result.max_abs_diff <= 1e-3 and result.tokens_checked == new and path.is_file()
    expected, _ = generate_ids(model, PROMPT, new)
    got, logits = OnnxDecoder(path, threads=1).greedy(PROMPT, new)
    assert got == expected  # the torch generation path of the workbench, token for token
    assert len(logits) == new and all(lg.shape == (model.vocab_size,) for lg in logits)


def test_llama_decode_graph_generates_torchs_tokens_with_static_shapes(tmp_path):
    torch.manual_seed(0)
    model = tiny_llama((16,), 300, layers=2, hidden=32, heads=2, kv_heads=1).eval()
    path = tmp_path / "decode.onnx"
    _check_greedy(model, path, 24, 12)

    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    cache = [1, 1, 24, 16]  # batch, kv_heads, max_len slots, head_dim: static, no symbolic axis
    assert inputs == {"input_ids": [1, 1], "position": [1], "past_key_0": cache, "past_value_0": cache,
                      "past_key_1": cache, "past_value_1": cache}
    assert outputs == {"logits": [1, 1, 300], "present_key_0": cache, "present_value_0": cache,
                       "present_key_1": cache, "present_value_1": cache}

    decoder = OnnxDecoder(path, threads=1)
    _, filled = decoder.prompt(PROMPT)
    assert all(np.any(c[:, :, len(PROMPT) - 1] != 0) and not np.any(c[:, :, len(PROMPT):]) for c in filled)
    with pytest.raises(InputError, match="outside the decode graph's 24 cache slots"):
        decoder.step(1, 24, filled)

    rate = onnx_decode_tokens_per_s(path, list(range(40)), 64, repeats=1, threads=1)  # both cut to fit 24 slots
    assert rate > 0


def test_qwen2_decode_graph_generates_torchs_tokens(tmp_path):
    _check_greedy(_hf_family("qwen2"), tmp_path / "qwen2.onnx", 20, 10)


def test_a_sliding_window_shorter_than_the_cache_is_refused_in_one_line(tmp_path):
    from transformers import AutoModelForCausalLM

    config = small_config("mistral", 300)
    config.sliding_window = 8
    model = CausalLM(AutoModelForCausalLM.from_config(config).eval())
    with pytest.raises(InputError, match=r"sliding window \(8\) is shorter.*max_len <= 8") as info:
        export_decoder_with_cache(model, tmp_path / "m.onnx", 24)
    assert "\n" not in str(info.value) and not (tmp_path / "m.onnx").exists()
    with pytest.raises(InputError, match="past the model's 256 positions"):
        export_decoder_with_cache(model, tmp_path / "m.onnx", 257)


def test_the_export_job_writes_the_decode_graph_beside_the_prefill_and_a_failure_only_warns(tmp_path,
                                                                                           monkeypatch):
    from tests.plugins.helpers import Bench

    corpus = make_corpus(tmp_path / "corpus.txt", lines=400)
    bench = Bench(tmp_path / "ws", f"text:{corpus}:seq_len=16,vocab=300")
    bench.session.bench_batch = 1
    try:
        root = bench.add("zoo:tiny_llama:hidden=32,layers=1,heads=2,kv_heads=1")
        out = bench.ok("export", root, path=str(tmp_path / "lm.onnx"))
        assert out.result["decode_path"] == str(tmp_path / "lm.decode.onnx") and out.result["decode_max_len"] == 16
        assert out.result["decode_max_abs_diff"] <= 1e-3 and OnnxDecoder(tmp_path / "lm.decode.onnx").max_len == 16

        import workbench.core.lm.onnx_decode as onnx_decode

        def broken(*args, **kwargs):
            raise RuntimeError("exporter exploded")

        monkeypatch.setattr(onnx_decode, "export_decoder_with_cache", broken)
        out = bench.ok("export", root, path=str(tmp_path / "again.onnx"))
        assert (tmp_path / "again.onnx").is_file() and not (tmp_path / "again.decode.onnx").exists()
        assert out.result["decode_error"] == "exporter exploded"

        def stopped(*args, **kwargs):
            from workbench.plugin import Cancelled

            raise Cancelled("cancelled")

        monkeypatch.setattr(onnx_decode, "export_decoder_with_cache", stopped)
        out = bench.run("export", root, path=str(tmp_path / "third.onnx"))
        assert out.status == "cancelled", (out.status, out.error)  # a Stop during the decode step is no warning
    finally:
        bench.runner.shutdown()
        bench.session.workspace.close()
