"""A decoder's graph opens as embedding, N blocks, norm and head: the mask/position ops get a block of their own
and the repeated blocks fold; a small CNN opens expanded."""

from __future__ import annotations

import warnings

import pytest
import torch

from workbench.core.graph import graph_from_torch
from workbench.core.graph.folding import default_collapsed, repeated_blocks


def _decoder_graph(arch: str, layers: int = 3):
    from transformers import AutoConfig, AutoModelForCausalLM

    from workbench.core.lm.model import CausalLM

    if arch == "gpt2":
        cfg = AutoConfig.for_model("gpt2", vocab_size=300, n_embd=32, n_layer=layers, n_head=2, n_positions=64,
                                   bos_token_id=0, eos_token_id=0)
    else:
        cfg = AutoConfig.for_model(arch, vocab_size=300, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                                   max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    model = CausalLM(AutoModelForCausalLM.from_config(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, graph_from_torch(model, torch.randint(0, 300, (1, 16)))


@pytest.mark.parametrize("arch, body", [("llama", "hf.model"), ("gpt2", "hf.transformer"), ("phi3", "hf.model"),
                                        ("gpt_neox", "hf.gpt_neox")])
def test_a_decoder_opens_as_embedding_blocks_and_head(arch, body):
    model, g = _decoder_graph(arch)
    blocks = ["h" if arch == "gpt2" else "layers"]
    assert repeated_blocks(g) == [f"g:{body}.{blocks[0]}.{i}" for i in range(3)]
    masks = g.groups[f"g:{body}/masks"]
    assert masks.parent == f"g:{body}" and len(masks.children) >= 10
    members = [n for n in g.nodes if n.id in set(masks.children)]
    assert all(n.params == 0 and n.op != "embedding" and n.parent == masks.id for n in members)
    # nothing is lost by the regrouping: every node is still in the graph, params still sum to the model's
    assert g.params == sum(p.numel() for p in model.parameters())
    assert all(n.parent is None or n.id in g.groups[n.parent].children for n in g.nodes)
    assert sum(len(grp.children) for grp in g.groups.values()) == sum(n.parent is not None for n in g.nodes)
    folded = default_collapsed(g)
    assert {f"g:{body}.{blocks[0]}.{i}" for i in range(3)} | {masks.id} <= folded
    shown = [n for n in g.nodes if not any(a in folded for a in g.ancestors(n))]
    ops = [n.op for n in shown]
    # what stays drawn as plain nodes: the input, the token (and GPT-2's position) embedding, the main path's
    # few ops between blocks, the head and the output; no mask plumbing
    assert ops[0] == "Input" and ops[-1] == "Output" and "embedding" in ops and len(shown) <= 12, ops
    assert not {"arange", "cumsum", "new_ones"} & set(ops), ops


def test_a_small_cnn_opens_expanded():
    from workbench.core.models.zoo import build_zoo_model

    g = graph_from_torch(build_zoo_model("resnet18", (3, 32, 32), 10, {}), torch.randn(1, 3, 32, 32))
    assert len(repeated_blocks(g)) >= 2  # its stages' blocks are numbered ...
    assert default_collapsed(g) == set()  # ... but 70 nodes read fine expanded
    assert not any(gid.endswith("/masks") for gid in g.groups)


def test_an_exported_and_an_int4_decoder_fold_by_the_exporters_module_paths(tmp_path):
    """ONNX from the dynamo exporter records each node's module path: the graph gets the same blocks as the torch
    view, and an int4 variant's MatMulNBits (which lost that record in the rewrite) land in their layer."""
    from workbench.core.graph import graph_from_onnx
    from workbench.core.lm.export import export_language_model
    from workbench_plugins._lm_quant import Settings, quantize

    model, _ = _decoder_graph("llama", layers=2)
    fp32, int4 = tmp_path / "fp32.onnx", tmp_path / "int4.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_language_model(model, torch.randint(0, 300, (1, 16)), fp32)
    quantize(fp32, int4, Settings(bits=4, group_size=32))
    for path in (fp32, int4):
        g = graph_from_onnx(path)
        assert repeated_blocks(g) == ["hf.model.layers.0", "hf.model.layers.1"], path.name
        folded = default_collapsed(g, big=50)
        shown = [n for n in g.nodes if not any(a in folded for a in g.ancestors(n))]
        assert [n.op for n in shown][0] == "Input" and len(shown) <= 6, [(n.op, n.name) for n in shown]
    nbits = [n for n in graph_from_onnx(int4).nodes if n.op == "MatMulNBits"]
    assert len(nbits) == 15  # 7 projections per layer and the head
    assert sum(n.parent == "hf.model.layers.0" for n in nbits) == 7
    assert sum(n.parent == "hf.model.layers.1" for n in nbits) == 7
    head = [n for n in nbits if n.parent is None]
    assert len(head) == 1  # the head feeds the output: it stays at the top
