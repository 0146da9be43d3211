"""The ``stack:`` grammar: the table of layer kinds, the parser and the text form, without torch.

One table, :data:`LAYERS`, declares every layer kind with its arguments (typed ``Param`` objects, as jobs use); the
parser (here), the shape inference (``workbench.core.models.stack``) and the app's builder form all read it. It
imports no torch, so the app can build its builder panel before torch has loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from workbench.core.errors import InputError
from workbench.core.jobs.params import Param

Shape = tuple[int, ...]  # one sample's shape (no batch dimension)


def _p(name: str, kind: str, default: Any, help: str, **kw: Any) -> Param:
    return Param(default, help=help, kind=kind, name=name, label=name, **kw)


@dataclass(frozen=True)
class LayerDecl:
    """One layer kind: its name in the text form, a line of help and its arguments in positional order."""

    name: str
    help: str
    args: tuple[Param, ...] = ()
    category: str = "layer"
    aliases: tuple[str, ...] = ()
    positional: int = 1  # how many leading arguments the text form writes without their names


    def arg(self, name: str) -> Param:
        return next(a for a in self.args if a.name == name)


_PAD = "valid, same, or a number of pixels"
_ACT_HELP = {
    "relu": "max(x, 0)", "relu6": "min(max(x, 0), 6)", "leaky_relu": "x, or slope*x below 0", "elu": "ELU",
    "gelu": "GELU (exact)", "silu": "x * sigmoid(x) (swish)", "sigmoid": "logistic", "tanh": "tanh",
    "hardswish": "x * relu6(x+3)/6", "softplus": "log(1 + e^x)", "softmax": "softmax over the last axis",
}

LAYERS: dict[str, LayerDecl] = {d.name: d for d in (
    LayerDecl("conv", "2-D convolution", (
        _p("filters", "int", 32, "output channels", min=1),
        _p("kernel", "int", 3, "kernel size (square)", min=1),
        _p("stride", "int", 1, "stride", min=1),
        _p("padding", "str", "valid", _PAD),
        _p("bias", "bool", True, "add a bias"),
    ), "conv", positional=2),
    LayerDecl("dwconv", "depthwise 2-D convolution (one filter per input channel)", (
        _p("kernel", "int", 3, "kernel size (square)", min=1),
        _p("stride", "int", 1, "stride", min=1),
        _p("padding", "str", "same", _PAD),
        _p("multiplier", "int", 1, "output channels per input channel", min=1),
        _p("bias", "bool", True, "add a bias"),
    ), "conv"),
    LayerDecl("res", "residual block: conv-bn-relu-conv-bn plus a shortcut (1x1 conv when the shape changes), relu", (
        _p("filters", "int", 0, "output channels (0: the input's)", min=0),
        _p("kernel", "int", 3, "kernel size (odd)", min=1),
        _p("stride", "int", 1, "stride of the first convolution", min=1),
    ), "conv", ("residual",)),
    LayerDecl("maxpool", "max pooling", (
        _p("size", "int", 2, "window (square)", min=1),
        _p("stride", "int", 0, "stride (0: the window size)", min=0),
    ), "pool"),
    LayerDecl("avgpool", "average pooling", (
        _p("size", "int", 2, "window (square)", min=1),
        _p("stride", "int", 0, "stride (0: the window size)", min=0),
    ), "pool"),
    LayerDecl("gavgpool", "global average pooling (over space, or over time for sequences)", (), "pool",
              ("globalavgpool", "gap")),
    LayerDecl("gmaxpool", "global max pooling (over space, or over time for sequences)", (), "pool",
              ("globalmaxpool",)),
    LayerDecl("batchnorm", "batch normalization over channels (or features)", (
        _p("eps", "float", 1e-5, "added to the variance", min=0),
        _p("momentum", "float", 0.1, "running statistics update", min=0, max=1),
    ), "norm", ("bn",)),
    LayerDecl("layernorm", "layer normalization over the last axis", (
        _p("eps", "float", 1e-5, "added to the variance", min=0),
    ), "norm", ("ln",)),
    LayerDecl("dropout", "dropout (training only)", (
        _p("rate", "float", 0.5, "fraction of values zeroed", min=0, max=0.99),
    ), "regularization"),
    LayerDecl("flatten", "flatten everything but the batch axis", (), "shape"),
    LayerDecl("dense", "fully connected layer on the last axis; the final one may leave out its size", (
        _p("units", "int", None, "outputs (left out on the final layer: the number of classes)", min=1),
        _p("bias", "bool", True, "add a bias"),
    ), "dense", ("linear", "fc")),
    *(LayerDecl(act, _ACT_HELP[act], ((_p("slope", "float", 0.01, "slope below 0", min=0),)
                                      if act == "leaky_relu" else ()), "activation",
                ("leakyrelu",) if act == "leaky_relu" else (("swish",) if act == "silu" else ()))
      for act in _ACT_HELP),
    LayerDecl("embed", "token embedding (text datasets): ids to vectors", (
        _p("dim", "int", 64, "vector size", min=1),
        _p("vocab", "int", 0, "vocabulary size (0: the dataset's)", min=0),
    ), "sequence", ("embedding",)),
    LayerDecl("pos", "learned position embedding added to a sequence", (), "sequence", ("positions",)),
    LayerDecl("lstm", "LSTM over a sequence", (
        _p("units", "int", 64, "hidden size", min=1),
        _p("layers", "int", 1, "stacked layers", min=1),
        _p("output", "choice", "last", "last step, mean over time, or the whole sequence",
           choices=("last", "mean", "seq")),
        _p("bidirectional", "bool", False, "also read the sequence backwards"),
    ), "sequence"),
    LayerDecl("gru", "GRU over a sequence", (
        _p("units", "int", 64, "hidden size", min=1),
        _p("layers", "int", 1, "stacked layers", min=1),
        _p("output", "choice", "last", "last step, mean over time, or the whole sequence",
           choices=("last", "mean", "seq")),
        _p("bidirectional", "bool", False, "also read the sequence backwards"),
    ), "sequence"),
    LayerDecl("transformer", "transformer encoder block (self-attention and feed-forward, pre-norm off)", (
        _p("heads", "int", 4, "attention heads (must divide the vector size)", min=1),
        _p("ff", "int", 0, "feed-forward size (0: twice the vector size)", min=0),
        _p("dropout", "float", 0.1, "dropout inside the block", min=0, max=0.99),
    ), "sequence", ("encoder",)),
)}
_ALIASES = {alias: d.name for d in LAYERS.values() for alias in d.aliases}


@dataclass
class LayerSpec:
    """One parsed layer: its kind and the values of all its arguments (defaults filled in)."""

    kind: str
    values: dict[str, Any] = field(default_factory=dict)
    given: tuple[str, ...] = ()  # the arguments the text named, kept so formatting stays short

    @property
    def decl(self) -> LayerDecl:
        return LAYERS[self.kind]

    def text(self) -> str:
        """The layer in the text form, e.g. ``conv(32,3,stride=2)`` (positional until the first skipped default)."""
        parts: list[str] = []
        positional = True
        for index, arg in enumerate(self.decl.args):
            positional = positional and index < self.decl.positional
            value = self.values.get(arg.name, arg.default)
            if value == arg.default and arg.name not in self.given:
                positional = False
                continue
            if value is None:
                positional = False
                continue
            shown = _format(value)
            parts.append(shown if positional else f"{arg.name}={shown}")
        return f"{self.kind}({','.join(parts)})" if parts else self.kind


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def shape_text(shape: Shape) -> str:
    """A sample shape with a batch of one, as the error messages and the builder show it: ``1x64x3x3``."""
    return "x".join(str(d) for d in (1, *shape))


# --------------------------------------------------------------------------------------------- parsing

_LAYER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)


def split_layers(text: str) -> list[str]:
    """The layer texts of a stack (``;`` or newlines separate them; empty pieces are skipped)."""
    body = text.strip()
    if body.startswith("stack:"):
        body = body[len("stack:"):]
    return [piece.strip() for piece in re.split(r"[;\n]", body) if piece.strip()]


def parse_layer(text: str, index: int = 1) -> LayerSpec:
    """One layer text to a spec with every argument typed and checked; errors name the layer."""
    match = _LAYER_RE.match(text)
    where = f"layer {index} {text.strip()}"
    if not match:
        raise InputError(f"{where}: expected NAME or NAME(arg,...,key=value)")
    name = match.group(1).lower()
    kind = _ALIASES.get(name, name)
    if kind not in LAYERS:
        raise InputError(f"{where}: unknown layer {name!r}; known: {', '.join(LAYERS)}")
    decl = LAYERS[kind]
    raw = match.group(2)
    pieces = [p.strip() for p in raw.split(",")] if raw is not None and raw.strip() else []
    values: dict[str, Any] = {a.name: a.default for a in decl.args}
    given: list[str] = []
    seen_keyword = False
    for position, piece in enumerate(pieces):
        key, sep, value = piece.partition("=")
        if sep:
            key = key.strip().lower()
            seen_keyword = True
            if key not in values:
                known = ", ".join(a.name for a in decl.args) or "none"
                raise InputError(f"{where}: unknown argument {key!r} (arguments: {known})")
            arg = decl.arg(key)
        else:
            if seen_keyword:
                raise InputError(f"{where}: a positional argument after key=value")
            if position >= len(decl.args):
                raise InputError(f"{where}: {kind} takes at most {len(decl.args)} argument(s)")
            arg, value = decl.args[position], piece
        if arg.name in given:
            raise InputError(f"{where}: argument {arg.name!r} given twice")
        values[arg.name] = _convert(arg, value.strip(), where)
        given.append(arg.name)
    return LayerSpec(kind, values, tuple(given))


def _convert(arg: Param, value: str, where: str) -> Any:
    if arg.name == "padding":
        lowered = value.lower()
        if lowered in ("same", "valid"):
            return lowered
        if lowered.isdigit():
            return int(lowered)
        raise InputError(f"{where}: padding must be same, valid or a number of pixels; got {value!r}")
    try:
        return arg.convert(value)
    except InputError as exc:
        reason = str(exc).split(": ", 1)[-1]
        raise InputError(f"{where}: {arg.name}: {reason}") from None


def parse_stack(text: str) -> list[LayerSpec]:
    """A stack's text (with or without ``stack:``) to layer specs."""
    pieces = split_layers(text)
    if not pieces:
        raise InputError("stack: no layers (write them as conv(32,3);relu;...;flatten;dense)")
    return [parse_layer(piece, i) for i, piece in enumerate(pieces, 1)]


def format_stack(layers: list[LayerSpec]) -> str:
    """The text form (without ``stack:``) of a list of layer specs."""
    return ";".join(layer.text() for layer in layers)


TEMPLATES: dict[str, str] = {
    "seed CNN (Keras MNIST example)":
        "conv(32,3);relu;maxpool(2);conv(64,3);relu;maxpool(2);conv(64,3);relu;flatten;dense(64);relu;dense",
    "LeNet-5": "conv(6,5,padding=2);relu;maxpool(2);conv(16,5);relu;maxpool(2);flatten;dense(120);relu;"
               "dense(84);relu;dense",
    "small ResNet": "conv(16,3,padding=same);batchnorm;relu;res(16);res(32,stride=2);res(64,stride=2);gavgpool;dense",
    "MobileNet-style": "conv(16,3,stride=2,padding=1);batchnorm;relu;dwconv(3);batchnorm;relu;conv(32,1);batchnorm;"
                       "relu;gavgpool;dense",
    "LSTM classifier (text)": "embed(64);lstm(64,output=mean);dense",
    "GRU classifier (text)": "embed(64);gru(64,output=mean);dense",
    "Transformer encoder (text)": "embed(64);pos;transformer(4);gavgpool;dense",
}
