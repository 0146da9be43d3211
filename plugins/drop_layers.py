"""The ``drop_layers`` job: remove whole decoder blocks of a language model (ShortGPT, Men et al. 2024).

Block influence BI_i = 1 - mean over tokens of cos(x_in, x_out), where x_in and x_out are the hidden states
before and after block i, read by forward hooks on calibration sequences of the train split.
A block whose output is almost its input changes little: the ``count`` blocks of lowest influence are removed.
``criterion=last`` removes the last ``count`` blocks instead.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from workbench.plugin import InputError, Job, JobContext, Param


class DropLayersJob(Job):
    name = "drop_layers"
    title = "Drop layers"
    description = ("Remove whole decoder blocks of a language model: those that change their input least "
                   "(block influence, ShortGPT), measured on train sequences, or the last ones.")
    needs_torch_model = True

    count: int = Param(1, min=1, max=10000, help="decoder blocks to remove")
    criterion: Literal["influence", "last"] = Param(
        "influence", help="influence: the blocks whose output changes their input least; last: the last blocks")
    calibration: int = Param(16, min=1, max=100000, help="train-split sequences to measure block influence on")

    def run(self, ctx: JobContext) -> nn.Module:
        model = ctx.model
        layers = decoder_layers(model)
        n = len(layers)
        if self.count >= n:
            raise InputError(f"drop_layers: count={self.count} would leave no block; the model has {n} decoder "
                             f"blocks (count must be at most {n - 1})")
        if self.criterion == "influence":
            influence = self._influence(ctx, model, n)
            order = sorted(range(n), key=lambda i: (influence[i], -i))
            dropped = sorted(order[: self.count])
        else:
            influence = None
            dropped = list(range(n - self.count, n))
        before = sum(p.numel() for p in model.parameters())
        remove_blocks(model, dropped)
        after = sum(p.numel() for p in model.parameters())
        names = [f"hf.model.layers.{i}" for i in range(n)]  # as the graph view and prune_sensitivity name them
        ctx.result["blocks"] = {
            names[i]: {"influence": None if influence is None else round(float(influence[i]), 6),
                       "dropped": i in dropped}
            for i in range(n)
        }
        ctx.result.update(criterion=self.criterion, dropped=[names[i] for i in dropped],
                          blocks_before=n, blocks_after=n - len(dropped),
                          params_before=int(before), params_after=int(after))
        ctx.info(f"dropped {', '.join(names[i] for i in dropped)}: {n} -> {n - len(dropped)} blocks, "
                 f"{before} -> {after} parameters")
        ctx.mark(f"-{len(dropped)} block{'s' if len(dropped) > 1 else ''}")
        return model

    def _influence(self, ctx: JobContext, model: nn.Module, n: int) -> list[float]:
        """BI_i per block, averaged over every token of ``calibration`` train sequences: each block's input and
        output are read by forward hooks (the hidden states, before the final norm)."""
        hf = model.hf
        sums = torch.zeros(n, dtype=torch.float64)
        tokens, seen = 0, 0

        def hook(i: int) -> Any:
            def record(_module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
                x_in = args[0] if args else kwargs["hidden_states"]
                x_out = output[0] if isinstance(output, (tuple, list)) else output
                cos = F.cosine_similarity(x_in.double(), x_out.double(), dim=-1)
                sums[i] += float((1.0 - cos).sum())
            return record

        handles = [layer.register_forward_hook(hook(i), with_kwargs=True)
                   for i, layer in enumerate(decoder_layers(model))]
        was_training = hf.training
        hf.eval()
        loader = ctx.data.loader("train", batch_size=min(8, self.calibration), shuffle=False)
        try:
            with torch.no_grad():
                for x, _ in loader:
                    ctx.check_cancelled()
                    x = x[: self.calibration - seen].to(ctx.device)
                    hf(input_ids=x, use_cache=False)
                    tokens += int(x.numel())
                    seen += x.shape[0]
                    ctx.progress(seen, self.calibration, text=f"block influence: {seen}/{self.calibration} sequences")
                    if seen >= self.calibration:
                        break
        finally:
            for handle in handles:
                handle.remove()
            hf.train(was_training)
        if tokens == 0:
            raise InputError("drop_layers: the train split has no sequences to measure block influence on")
        influence = (sums / tokens).tolist()
        for i, value in enumerate(influence):
            ctx.log(step=i, block_influence=value)
        ctx.info("block influence: " + ", ".join(f"{i}: {v:.4f}" for i, v in enumerate(influence)))
        return influence


def decoder_layers(model: Any) -> nn.ModuleList:
    """The decoder blocks of a language model (``model.hf.model.layers``), or an InputError."""
    if not getattr(model, "is_causal_lm", False) and not hasattr(model, "config"):
        raise InputError("drop_layers needs a decoder language model (zoo:tiny_llama or a Hugging Face folder), "
                         f"not a {type(model).__name__}")
    hf = getattr(model, "hf", model)
    layers = getattr(getattr(hf, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise InputError(f"drop_layers needs a decoder language model with model.layers blocks; "
                         f"{type(hf).__name__} has none")
    return layers


def remove_blocks(model: Any, dropped: list[int]) -> None:
    """Remove blocks in place; renumber the attention's ``layer_idx`` (KV cache) and fix the config."""
    hf = getattr(model, "hf", model)
    layers = hf.model.layers
    keep = [i for i in range(len(layers)) if i not in set(dropped)]
    hf.model.layers = nn.ModuleList([layers[i] for i in keep])
    for new, layer in enumerate(hf.model.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    config = hf.config
    config.num_hidden_layers = len(keep)
    types = getattr(config, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == len(layers):
        config.layer_types = [types[i] for i in keep]
    generation = getattr(hf, "generation_config", None)
    if generation is not None and getattr(generation, "num_hidden_layers", None) is not None:
        generation.num_hidden_layers = len(keep)
