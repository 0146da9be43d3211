"""``stack:`` models: a layer list (``conv(32,3);relu;maxpool(2);flatten;dense``) built into a plain torch module.

The grammar (the table of layer kinds, :data:`LAYERS`, and the parser) is in ``workbench.core.stack_grammar``, which
the app's builder form reads too; this module infers shapes and builds the modules. Shapes are inferred from the dataset's sample
shape, layer by layer, so a mistake is reported as the layer that cannot take its input
("layer 7 dense(64): input 1x64x3x3 needs flatten first"). The model is an ``nn.Sequential`` of standard torch
layers (a few thin wrappers where torch has no module), so it saves as safetensors plus a recipe, prunes with
Torch-Pruning and exports to ONNX like a zoo model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.core.errors import InputError
from workbench.core.stack_grammar import (  # noqa: F401 - re-exported: the grammar is part of this module's API
    _ACT_HELP,
    LAYERS,
    TEMPLATES,
    LayerDecl,
    LayerSpec,
    Shape,
    format_stack,
    parse_layer,
    parse_stack,
    shape_text,
    split_layers,
)


@dataclass
class LayerInfo:
    """What the builder shows per row: the output shape, parameters and MACs (per sample) of one layer."""

    index: int
    text: str
    input_shape: Shape
    output_shape: Shape
    params: int
    macs: int


@dataclass
class StackPlan:
    """The parsed and checked stack: modules ready to run plus a row per layer."""

    layers: list[LayerSpec]
    rows: list[LayerInfo]
    modules: list[nn.Module]

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)


# --------------------------------------------------------------------------------------------- modules


class GlobalPool(nn.Module):
    """Global average or max over space (N,C,H,W -> N,C) or time (N,T,D -> N,D)."""

    def __init__(self, mode: str, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.mode, self.dims = mode, dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "max":
            return x.amax(dim=self.dims)
        return x.mean(dim=self.dims)


class SeqBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the features of a sequence (N,T,D): torch's BatchNorm1d wants them on axis 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class PositionEmbedding(nn.Module):
    """Learned positions added to a (N,T,D) sequence."""

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, length, dim))
        nn.init.normal_(self.position, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.position


class Recurrent(nn.Module):
    """An LSTM or GRU (batch first) whose output is the last step, the mean over time, or the whole sequence."""

    def __init__(self, rnn: nn.Module, output: str) -> None:
        super().__init__()
        self.rnn, self.output = rnn, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        if self.output == "seq":
            return out
        if self.output == "mean":
            return out.mean(dim=1)
        return out[:, -1]


class ResidualBlock(nn.Module):
    """The ResNet basic block."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(cin, cout, kernel, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, kernel, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + self.shortcut(x))


class StackModel(nn.Module):
    """The built stack: ``self.layers`` holds one module per layer of the text (``layers.0``, ``layers.1``...)."""

    def __init__(self, modules: list[nn.Module], text: str) -> None:
        super().__init__()
        self.layers = nn.Sequential(*modules)
        self.stack_text = text

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# --------------------------------------------------------------------------------------------- inference


@dataclass
class _Context:
    num_classes: int
    vocab_size: int | None
    last: bool
    tokens: bool  # the current tensor holds token ids (before an embed)


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _padding(value: Any, kernel: int, why: Callable[[str], InputError]) -> int:
    if value == "valid":
        return 0
    if value == "same":
        if kernel % 2 == 0:
            raise why(f"padding=same needs an odd kernel (got {kernel}); give the pixels instead")
        return kernel // 2  # both sides alike: the output is ceil(size / stride), as 'same' promises
    return int(value)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build_layer(spec: LayerSpec, shape: Shape, ctx: _Context, why: Callable[[str], InputError]) -> tuple[
        nn.Module, Shape, int]:
    """The module for one layer, its output shape and its MACs per sample."""
    v, kind = spec.values, spec.kind
    rank = len(shape)
    if ctx.tokens and kind not in ("embed",):
        raise why("token ids need embed first")

    def image() -> tuple[int, int, int]:
        if rank != 3:
            if rank == 1:
                raise why("needs an image (channels x height x width); this is a vector")
            raise why("needs an image (channels x height x width)")
        return shape  # type: ignore[return-value]

    def sequence() -> tuple[int, int]:
        if rank != 2:
            raise why("needs a sequence (time x features): put embed first")
        return shape  # type: ignore[return-value]

    if kind == "conv":
        c, h, w = image()
        k, s = v["kernel"], v["stride"]
        pad = _padding(v["padding"], k, why)
        oh, ow = _out_size(h, k, s, pad), _out_size(w, k, s, pad)
        if oh < 1 or ow < 1:
            raise why(f"is smaller than the {k}x{k} kernel")
        module = nn.Conv2d(c, v["filters"], k, s, pad, bias=v["bias"])
        return module, (v["filters"], oh, ow), v["filters"] * oh * ow * c * k * k
    if kind == "dwconv":
        c, h, w = image()
        k, s = v["kernel"], v["stride"]
        pad = _padding(v["padding"], k, why)
        oh, ow = _out_size(h, k, s, pad), _out_size(w, k, s, pad)
        if oh < 1 or ow < 1:
            raise why(f"is smaller than the {k}x{k} kernel")
        out = c * v["multiplier"]
        module = nn.Conv2d(c, out, k, s, pad, groups=c, bias=v["bias"])
        return module, (out, oh, ow), out * oh * ow * k * k
    if kind == "res":
        c, h, w = image()
        k, s = v["kernel"], v["stride"]
        if k % 2 == 0:
            raise why(f"needs an odd kernel (got {k})")
        cout = v["filters"] or c
        oh, ow = _out_size(h, k, s, k // 2), _out_size(w, k, s, k // 2)
        module = ResidualBlock(c, cout, k, s)
        macs = cout * oh * ow * (c * k * k + cout * k * k)
        if s != 1 or c != cout:
            macs += cout * oh * ow * c
        return module, (cout, oh, ow), macs
    if kind in ("maxpool", "avgpool"):
        c, h, w = image()
        k = v["size"]
        s = v["stride"] or k
        if h < k or w < k:
            raise why(f"is smaller than the {k}x{k} window")
        module = nn.MaxPool2d(k, s) if kind == "maxpool" else nn.AvgPool2d(k, s)
        return module, (c, _out_size(h, k, s, 0), _out_size(w, k, s, 0)), 0
    if kind in ("gavgpool", "gmaxpool"):
        mode = "max" if kind == "gmaxpool" else "avg"
        if rank == 3:
            return GlobalPool(mode, (2, 3)), (shape[0],), 0
        if rank == 2:
            return GlobalPool(mode, (1,)), (shape[1],), 0
        raise why("needs an image or a sequence")
    if kind == "batchnorm":
        if rank == 3:
            module: nn.Module = nn.BatchNorm2d(shape[0], eps=v["eps"], momentum=v["momentum"])
        elif rank == 2:
            module = SeqBatchNorm(shape[1], eps=v["eps"], momentum=v["momentum"])
        elif rank == 1:
            module = nn.BatchNorm1d(shape[0], eps=v["eps"], momentum=v["momentum"])
        else:
            raise why("has no channel axis to normalize")
        return module, shape, 0
    if kind == "layernorm":
        return nn.LayerNorm(shape[-1], eps=v["eps"]), shape, 0
    if kind == "dropout":
        return (nn.Dropout2d(v["rate"]) if rank == 3 else nn.Dropout(v["rate"])), shape, 0
    if kind == "flatten":
        return nn.Flatten(), (math.prod(shape),), 0
    if kind == "dense":
        if rank == 3:
            raise why("needs flatten first")
        units = v["units"]
        if units is None:
            if not ctx.last:
                raise why("needs a size (only the final dense may leave it out: it gets the number of classes)")
            units = ctx.num_classes
        steps = shape[0] if rank == 2 else 1
        return nn.Linear(shape[-1], units, bias=v["bias"]), (*shape[:-1], units), steps * shape[-1] * units
    if kind in _ACT_HELP:
        if kind == "softmax" and ctx.last:
            raise why("a final softmax: the workbench trains on logits, so end with dense")
        modules: dict[str, Callable[[], nn.Module]] = {
            "relu": nn.ReLU, "relu6": nn.ReLU6, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU,
            "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "hardswish": nn.Hardswish, "softplus": nn.Softplus,
            "softmax": lambda: nn.Softmax(dim=-1), "leaky_relu": lambda: nn.LeakyReLU(v["slope"]),
        }
        return modules[kind](), shape, 0
    if kind == "embed":
        if not ctx.tokens or rank != 1:
            raise why("needs token ids (a text dataset) and comes first")
        vocab = v["vocab"] or ctx.vocab_size
        if not vocab:
            raise why("needs a vocabulary size: the dataset has none, give vocab=N")
        ctx.tokens = False
        return nn.Embedding(vocab, v["dim"], padding_idx=0), (shape[0], v["dim"]), 0
    if kind == "pos":
        t, d = sequence()
        return PositionEmbedding(t, d), shape, 0
    if kind in ("lstm", "gru"):
        t, d = sequence()
        units, layers, both = v["units"], v["layers"], v["bidirectional"]
        cls = nn.LSTM if kind == "lstm" else nn.GRU
        rnn = cls(d, units, num_layers=layers, batch_first=True, bidirectional=both)
        width = units * (2 if both else 1)
        out = (t, width) if v["output"] == "seq" else (width,)
        gates = 4 if kind == "lstm" else 3
        directions = 2 if both else 1
        macs = directions * t * gates * (d * units + units * units)
        macs += directions * t * gates * (width * units + units * units) * (layers - 1)
        return Recurrent(rnn, v["output"]), out, macs
    if kind == "transformer":
        t, d = sequence()
        heads = v["heads"]
        if d % heads:
            raise why(f"vector size {d} is not divisible by heads={heads}")
        ff = v["ff"] or 2 * d
        block = nn.TransformerEncoderLayer(d, heads, dim_feedforward=ff, dropout=v["dropout"], batch_first=True)
        macs = 4 * t * d * d + 2 * t * t * d + 2 * t * d * ff
        return block, shape, macs
    raise why("is not a layer the builder knows")  # unreachable: parse_layer checked the kind


def plan_stack(text: str | list[LayerSpec], input_shape: Shape, num_classes: int, *,
               vocab_size: int | None = None, tokens: bool | None = None) -> StackPlan:
    """Parse and check a stack for a dataset; every layer's module, output shape, params and MACs.

    ``tokens``: the input holds token ids (text datasets); by default a 1-D input with a vocabulary is tokens.
    """
    layers = parse_stack(text) if isinstance(text, str) else list(text)
    if not layers:
        raise InputError("stack: no layers")
    shape: Shape = tuple(int(d) for d in input_shape)
    is_tokens = bool(vocab_size) and len(shape) == 1 if tokens is None else tokens
    ctx = _Context(num_classes, vocab_size, False, is_tokens)
    rows: list[LayerInfo] = []
    modules: list[nn.Module] = []
    for i, spec in enumerate(layers, 1):
        ctx.last = i == len(layers)
        text_i = spec.text()

        def why(reason: str, _i: int = i, _t: str = text_i, _s: Shape = shape) -> InputError:
            return InputError(f"layer {_i} {_t}: input {shape_text(_s)} {reason}")

        module, out, macs = _build_layer(spec, shape, ctx, why)
        rows.append(LayerInfo(i, text_i, shape, out, _count(module), int(macs)))
        modules.append(module)
        shape = out
    if ctx.tokens:
        raise InputError(f"stack: the input is token ids ({shape_text(shape)}): start with embed")
    if shape != (num_classes,):
        last = rows[-1]
        raise InputError(f"layer {last.index} {last.text}: the stack ends in {shape_text(shape)}; the dataset has "
                         f"{num_classes} classes, so it must end in {shape_text((num_classes,))} "
                         "(end with flatten and dense)")
    return StackPlan(layers, rows, modules)


@dataclass
class StackCheck:
    """What the builder shows while typing: the rows that fit, and the first problem (if any)."""

    layers: list[LayerSpec]
    rows: list[LayerInfo]
    error: str | None = None
    failed: int | None = None  # 1-based index of the layer that failed (None: parsing or the end)


def inspect_stack(text: str | list[LayerSpec], input_shape: Shape, num_classes: int, *,
                  vocab_size: int | None = None) -> StackCheck:
    """Like :func:`plan_stack` but never raises: the rows up to the first failing layer, and why it failed."""
    if isinstance(text, str):
        layers: list[LayerSpec] = []
        for i, piece in enumerate(split_layers(text), 1):
            try:
                layers.append(parse_layer(piece, i))
            except InputError as exc:
                return StackCheck(layers, _rows_of(layers, input_shape, num_classes, vocab_size), str(exc), i)
        if not layers:
            return StackCheck([], [], "no layers yet: add one, or pick a template")
    else:
        layers = list(text)
    try:
        plan = plan_stack(layers, input_shape, num_classes, vocab_size=vocab_size)
    except InputError as exc:
        message = str(exc)
        match = re.match(r"layer (\d+) ", message)
        failed = int(match.group(1)) if match else None
        ends = "the stack ends in" in message  # every layer fits; only the last shape is wrong
        prefix = layers if ends or not failed else layers[: failed - 1]
        rows = _rows_of(prefix, input_shape, num_classes, vocab_size)
        return StackCheck(layers, rows, message, failed)
    return StackCheck(layers, plan.rows)


def _rows_of(layers: list[LayerSpec], input_shape: Shape, num_classes: int, vocab_size: int | None) -> list[LayerInfo]:
    """Rows of a prefix that fits (the end-of-stack class check does not apply to a prefix)."""
    try:
        shape: Shape = tuple(int(d) for d in input_shape)
        ctx = _Context(num_classes, vocab_size, False, bool(vocab_size) and len(shape) == 1)
        rows = []
        for i, spec in enumerate(layers, 1):
            def why(reason: str) -> InputError:
                return InputError(reason)
            module, out, macs = _build_layer(spec, shape, ctx, why)
            rows.append(LayerInfo(i, spec.text(), shape, out, _count(module), int(macs)))
            shape = out
        return rows
    except InputError:
        return []


def build_stack(text: str, input_shape: Shape, num_classes: int, *, vocab_size: int | None = None) -> StackModel:
    """The torch module of a stack (untrained), checked by a dry forward pass; carries its text."""
    plan = plan_stack(text, input_shape, num_classes, vocab_size=vocab_size)
    model = StackModel(plan.modules, format_stack(plan.layers))
    tokens = bool(vocab_size) and len(input_shape) == 1
    example = torch.zeros(2, *input_shape, dtype=torch.long if tokens else torch.float32)
    model.eval()
    with torch.no_grad():
        try:
            out = model(example)
        except (RuntimeError, ValueError, IndexError) as exc:  # a shape rule above missed a case
            raise InputError(f"stack: the built model does not run: {str(exc).splitlines()[0]}") from None
    if tuple(out.shape) != (2, num_classes):
        raise InputError(f"stack: the model gives {tuple(out.shape)} for a batch of 2; expected (2, {num_classes})")
    return model.train()


def stack_recipe(text: str, input_shape: Shape, num_classes: int, vocab_size: int | None) -> dict[str, Any]:
    """The recipe a ``stack:`` model is saved with (rebuilt by :func:`build_stack`)."""
    layers = format_stack(parse_stack(text))
    return {"kind": "stack", "layers": layers, "input_shape": list(input_shape), "num_classes": int(num_classes),
            "vocab_size": int(vocab_size) if vocab_size else None}


