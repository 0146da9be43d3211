"""Hugging Face folders: every listed family opens offline; pickles, custom code and oversized configs are refused
before anything runs or is allocated; the data's tokenizer must fit the model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.core.lm.lm_helpers import small_config, write_hf_folder
from workbench.core.data import load_dataset
from workbench.core.data.corpus import lm_dataset_spec
from workbench.core.errors import InputError
from workbench.core.lm.hf_folder import check_memory, estimate_params, load_hf_causal_lm
from workbench.core.models import load_model

FAMILIES = ["llama", "qwen2", "mistral", "gpt2", "gpt_neox", "phi3"]


@pytest.mark.parametrize("arch", FAMILIES)
def test_each_family_opens_with_its_own_tokenizer(tmp_path, corpus, arch):
    from transformers import AutoModelForCausalLM

    folder = write_hf_folder(tmp_path / arch, corpus, arch)
    data = load_dataset(lm_dataset_spec(f"text:{corpus}:seq_len=16", str(folder)))
    model = load_model(str(folder), data.info)
    assert model.is_causal_lm and model.tokenizer.fingerprint() == data.tokenizer.fingerprint()
    x = data.example_batch(2)
    with torch.inference_mode():
        logits = model(x)
        reference = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()(input_ids=x).logits
    assert logits.shape == (2, 16, data.info.vocab_size)
    assert torch.allclose(logits, reference, atol=1e-5)  # the saved weights, not a fresh initialisation
    assert load_model(f"hf:{folder}", data.info).vocab_size == model.vocab_size


def test_phi3_default_pad_token_outside_a_small_vocabulary_is_dropped(tmp_path, corpus):
    folder = write_hf_folder(tmp_path / "phi3", corpus, "phi3")
    config = json.loads((folder / "config.json").read_text())
    config["pad_token_id"] = 32000
    (folder / "config.json").write_text(json.dumps(config))
    model = load_hf_causal_lm(folder)
    assert model.config.pad_token_id is None


def _evil_bin(folder: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save({"model.embed_tokens.weight": Evil()}, folder / "pytorch_model.bin")


def test_a_pickled_bin_is_refused_and_never_runs(tmp_path, corpus, hf_folder):
    marker = tmp_path / "pwned"
    _evil_bin(hf_folder, marker)
    data = load_dataset(f"text:{corpus}:seq_len=16,tokenizer={hf_folder}")
    with pytest.raises(InputError, match="pickled pytorch_model.bin.*refused"):
        load_model(str(hf_folder), data.info)
    with pytest.raises(InputError, match="would build objects or run code"):
        load_model(str(hf_folder), data.info, trust=True)  # --trust admits a .bin, read with weights_only
    assert not marker.exists()


def test_a_plain_state_dict_bin_loads_with_trust(tmp_path, corpus, hf_folder):
    from safetensors.torch import load_file

    state = load_file(hf_folder / "model.safetensors")
    (hf_folder / "model.safetensors").unlink()
    torch.save(state, hf_folder / "pytorch_model.bin")
    data = load_dataset(f"text:{corpus}:seq_len=16,tokenizer={hf_folder}")
    model = load_model(str(hf_folder), data.info, trust=True)
    assert torch.equal(model.hf.model.embed_tokens.weight, state["model.embed_tokens.weight"])


def test_custom_code_is_refused_without_trust(tmp_path, corpus, hf_folder):
    marker = tmp_path / "pwned"
    (hf_folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                                "from transformers import LlamaForCausalLM as EvilForCausalLM\n")
    config = json.loads((hf_folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (hf_folder / "config.json").write_text(json.dumps(config))
    data = load_dataset(f"text:{corpus}:seq_len=16,tokenizer={hf_folder}")
    with pytest.raises(InputError, match="names custom code.*auto_map.*--trust"):
        load_model(str(hf_folder), data.info)
    assert not marker.exists()


def test_an_oversized_config_is_refused_before_allocating(tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    small_config("llama", 32000).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_size=16384, intermediate_size=65536, num_hidden_layers=400, num_attention_heads=128)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"")  # never read: the config alone decides
    with pytest.raises(InputError, match="more than the .* GiB of memory available; refused before allocating"):
        load_hf_causal_lm(folder)
    cfg = small_config("llama", 1000)
    assert estimate_params(cfg) <= sum(p.numel() for p in
                                       __import__("transformers").AutoModelForCausalLM.from_config(cfg).parameters())
    with pytest.raises(InputError, match="refused before allocating"):
        check_memory(folder, cfg, available=1000)


def test_zoo_tiny_llama_sizes_too_large_for_the_machine_are_refused_before_allocating(corpus):
    """Sizes are options of the zoo model: hidden=16384, 200 layers (about 0.5T parameters) must be a one-line
    error, not an allocation that the kernel's out-of-memory killer ends."""
    data = load_dataset(f"text:{corpus}:seq_len=16")
    with pytest.raises(InputError, match="zoo:tiny_llama: the config describes .* refused before allocating"):
        load_model("zoo:tiny_llama:hidden=16384,layers=200,heads=128,kv_heads=128", data.info)


def test_folder_problems_are_one_line_errors(tmp_path, corpus, hf_folder):
    data = load_dataset(f"text:{corpus}:seq_len=16,tokenizer={hf_folder}")
    with pytest.raises(InputError, match="no such file or folder"):
        load_model(str(tmp_path / "missing"), data.info)
    with pytest.raises(InputError, match="no such folder"):
        load_model(f"hf:{tmp_path / 'missing'}", data.info)
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text((hf_folder / "config.json").read_text())
    with pytest.raises(InputError, match="no weights"):
        load_model(str(tmp_path / "noweights"), data.info)
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "config.json").write_text("{oops")
    with pytest.raises(InputError, match="unreadable JSON"):
        load_model(str(tmp_path / "badjson"), data.info)
    (tmp_path / "nobody").mkdir()
    (tmp_path / "nobody" / "config.json").write_text(json.dumps({"model_type": "no_such_architecture"}))
    (tmp_path / "nobody" / "model.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="not one this transformers"):
        load_model(str(tmp_path / "nobody"), data.info)
    (hf_folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="weights cannot be loaded"):
        load_model(str(hf_folder), data.info)


def test_the_datas_tokenizer_must_fit_the_model(tmp_path, corpus, hf_folder):
    bigger = load_dataset(f"text:{corpus}:seq_len=16,vocab=600")  # a BPE with more ids than the model embeds
    assert bigger.info.vocab_size > 400
    with pytest.raises(InputError, match="tokenizer does not match the model"):
        load_model(str(hf_folder), bigger.info)
    too_long = load_dataset(f"text:{corpus}:seq_len=300,tokenizer={hf_folder}")
    with pytest.raises(InputError, match="seq_len=300 is longer than the model's 256 positions"):
        load_model(str(hf_folder), too_long.info)
    with pytest.raises(InputError, match="needs a text corpus dataset"):
        load_model(str(hf_folder), load_dataset("digits").info)


def test_zoo_models_and_tasks_must_match(corpus):
    corpus_info = load_dataset(f"text:{corpus}:seq_len=16,vocab=300").info
    with pytest.raises(InputError, match="is a classifier.*zoo:tiny_llama"):
        load_model("zoo:mlp", corpus_info)
    with pytest.raises(InputError, match="language model: it needs a text corpus"):
        load_model("zoo:tiny_llama", load_dataset("digits").info)
    with pytest.raises(InputError, match="not divisible by heads"):
        load_model("zoo:tiny_llama:hidden=30,heads=4", corpus_info)
    with pytest.raises(InputError, match="unknown option 'width'"):
        load_model("zoo:tiny_llama:width=2", corpus_info)
    model = load_model("zoo:tiny_llama:hidden=32,layers=1,heads=2,kv_heads=1", corpus_info)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (32, 1, 2, 1)
    assert cfg.intermediate_size == 96 and cfg.vocab_size == corpus_info.vocab_size
    assert model.tokenizer is not None and model.tokenizer.vocab_size == corpus_info.vocab_size
