"""Keras files (``.keras``, Keras 3's zip, and ``.h5``, Keras 2's HDF5) as native torch modules.

Why through Keras itself: Keras 3 reads both formats with its torch backend (no TensorFlow), so the layer
configurations and weights are Keras' own reading of the file, not a re-implementation of its formats.

Safety, in this order: the archive's member names are checked (no absolute paths, no ``..``, no links, bounded
sizes) and the stored configuration is scanned without Keras: a ``Lambda`` layer, a serialized function or any
object from outside Keras is refused before Keras sees the file. Keras then loads a copy of the file inside a
temporary folder with ``safe_mode=True`` and ``compile=False`` (no optimizer or loss objects are rebuilt).

The conversion walks Keras' layer graph (Sequential or functional: ``Add``, ``Concatenate`` and the other merges)
and emits one plain torch module per layer, with the weights moved into torch's layouts. The torch model takes
NCHW images where Keras takes NHWC: tensors stay channels-first inside, a transpose is inserted only where a
layer needs Keras' order, and a ``Flatten`` feeding a ``Dense`` is kept in torch order with the ``Dense`` kernel's
rows permuted instead (so Torch-Pruning sees an ordinary conv -> flatten -> linear chain).

A final softmax is removed: the converted model returns logits, which the workbench's training and
cross-entropy expect, and argmax (accuracy) is unchanged; ``keras_softmax`` in the recipe (and the module's
``output_activation``) records that Keras applied it, and ``softmax(model(x))`` gives Keras' outputs.

The conversion result is saved as a recipe (the node list, JSON) plus safetensors, so a converted variant reloads,
prunes and exports without Keras installed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.core.errors import InputError
from workbench.core.models.recipe import set_recipe
from workbench.core.models.stack import GlobalPool, SeqBatchNorm

MAX_MEMBER_BYTES = 4 << 30  # one archive member, uncompressed
MAX_CONFIG_BYTES = 64 << 20
_CODE_CLASSES = {"Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__", "function", "__function__"}


# --------------------------------------------------------------------------------------------- file checks


def check_archive(path: Path) -> dict[str, Any]:
    """Validate a ``.keras`` zip without extracting it; returns its parsed ``config.json``."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not a Keras 3 archive ({exc})") from None
    with archive:
        total = 0
        for info in archive.infolist():
            name = info.filename
            pure = PurePosixPath(name)
            if (not name or name.startswith(("/", "\\")) or "\\" in name or ".." in pure.parts
                    or (len(name) > 1 and name[1] == ":")):
                raise InputError(f"{path}: archive member {name!r} points outside the archive; refused")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise InputError(f"{path}: archive member {name!r} is a symbolic link; refused")
            if info.file_size > MAX_MEMBER_BYTES:
                raise InputError(f"{path}: archive member {name!r} is larger than 4 GiB; refused")
            total += info.file_size
        if total > 2 * MAX_MEMBER_BYTES:
            raise InputError(f"{path}: the archive unpacks to more than 8 GiB; refused")
        if "config.json" not in archive.namelist():
            raise InputError(f"{path}: no config.json: not a Keras 3 model archive")
        info = archive.getinfo("config.json")
        if info.file_size > MAX_CONFIG_BYTES:
            raise InputError(f"{path}: config.json is larger than 64 MiB; refused")
        try:
            return json.loads(archive.read("config.json"))
        except (ValueError, zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"{path}: unreadable config.json ({exc})") from None


def read_h5_config(path: Path) -> dict[str, Any]:
    """The model configuration stored in a Keras HDF5 file (read with h5py, nothing is run)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({str(exc).splitlines()[0]})") from None
    if raw is None:
        raise InputError(f"{path}: an HDF5 file without a model configuration (weights only?); "
                         "save the whole model with model.save()")
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError as exc:
        raise InputError(f"{path}: unreadable model configuration ({exc})") from None


def refuse_stored_code(config: Any, where: str) -> None:
    """Raise InputError if the configuration holds a Lambda, a serialized function or a non-Keras object."""

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            cls = node.get("class_name")
            if isinstance(cls, str):
                name = (node.get("config") or {}).get("name") if isinstance(node.get("config"), dict) else None
                label = f"layer '{name}' ({cls})" if name else cls
                if cls in _CODE_CLASSES:
                    raise InputError(f"{where}: {label} holds Python code; refused (it is never run)")
                module = node.get("module")
                if isinstance(module, str) and module != "keras" and not module.startswith("keras."):
                    raise InputError(f"{where}: {label} comes from {module!r}, not Keras; refused "
                                     "(custom objects would run their own code)")
                registered = node.get("registered_name")
                if isinstance(registered, str) and ">" in registered:
                    raise InputError(f"{where}: {label} is a registered custom object ({registered}); refused")
            if node.get("function_type") in ("lambda", "raw") or "__lambda__" in node:
                raise InputError(f"{where}: a stored function; refused (it is never run)")
            for key, value in node.items():
                if key != "compile_config":  # never rebuilt: the model is loaded with compile=False
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)


def _import_keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception as exc:  # noqa: BLE001 - ImportError, or a backend that cannot start
        raise InputError(f"opening Keras files needs the keras package (pip install keras h5py): {exc}") from None
    return keras


def load_keras_file(path: Path) -> nn.Module:
    """A ``.keras`` or ``.h5`` file as a converted torch module carrying its recipe (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    config = check_archive(path) if suffix == ".keras" else read_h5_config(path)
    refuse_stored_code(config, str(path))
    keras = _import_keras()
    with tempfile.TemporaryDirectory(prefix="workbench-keras-") as tmp:
        local = Path(tmp) / f"model{suffix}"
        shutil.copyfile(path, local)  # Keras reads (and unpacks what it must) from inside the temporary folder
        try:
            kmodel = keras.saving.load_model(str(local), compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - Keras raises many kinds on bad files
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"{path}: Keras could not load it ({first[:300]})") from None
    return convert_keras_model(kmodel, source=path.name)


# --------------------------------------------------------------------------------------------- the torch side


_ACTIVATIONS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "elu": nn.ELU, "selu": nn.SELU,
    "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "silu": nn.SiLU, "swish": nn.SiLU,
    "softplus": nn.Softplus, "softsign": nn.Softsign, "hard_sigmoid": nn.Hardsigmoid, "hard_silu": nn.Hardswish,
    "hard_swish": nn.Hardswish, "mish": nn.Mish, "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "exponential": None, "linear": nn.Identity,
}


class Exp(nn.Module):
    """Keras' ``exponential`` activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)


class Softmax(nn.Softmax):
    """A softmax that is not the model's last operation (a final one is removed: see the module docstring)."""


class KerasRNN(nn.Module):
    """An LSTM/GRU/SimpleRNN with Keras' outputs: the whole sequence, or the final state of each direction."""

    def __init__(self, rnn: nn.Module, sequences: bool, backwards: bool) -> None:
        super().__init__()
        self.rnn, self.sequences, self.backwards = rnn, sequences, backwards

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backwards:
            x = torch.flip(x, dims=(1,))
        out, state = self.rnn(x)
        if self.sequences:
            return out
        h = state[0] if isinstance(state, tuple) else state
        if self.rnn.bidirectional:
            return torch.cat([h[-2], h[-1]], dim=-1)
        return h[-1]


def _make_module(op: str, a: dict[str, Any]) -> nn.Module:
    """One node's torch module from its (JSON) arguments; the weights come later."""
    if op == "conv2d":
        return nn.Conv2d(a["cin"], a["cout"], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["padding"]),
                         tuple(a["dilation"]), a["groups"], bias=a["bias"])
    if op == "conv1d":
        return nn.Conv1d(a["cin"], a["cout"], a["kernel"], a["stride"], a["padding"], a["dilation"], a["groups"],
                         bias=a["bias"])
    if op == "pad":
        if a.get("value", 0.0) == 0.0:
            return nn.ZeroPad2d(tuple(a["pads"])) if len(a["pads"]) == 4 else nn.ConstantPad1d(tuple(a["pads"]), 0.0)
        cls = nn.ConstantPad2d if len(a["pads"]) == 4 else nn.ConstantPad1d
        return cls(tuple(a["pads"]), float(a["value"]))
    if op == "linear":
        return nn.Linear(a["cin"], a["cout"], bias=a["bias"])
    if op == "batchnorm":
        cls = {"2d": nn.BatchNorm2d, "1d": nn.BatchNorm1d, "seq": SeqBatchNorm}[a["form"]]
        return cls(a["features"], eps=a["eps"], momentum=a["momentum"])
    if op == "layernorm":
        return nn.LayerNorm(a["features"], eps=a["eps"], elementwise_affine=True)
    if op == "maxpool":
        cls = nn.MaxPool2d if a["dims"] == 2 else nn.MaxPool1d
        return cls(_t(a["kernel"]), _t(a["stride"]), _t(a["padding"]))
    if op == "avgpool":
        cls = nn.AvgPool2d if a["dims"] == 2 else nn.AvgPool1d
        return cls(_t(a["kernel"]), _t(a["stride"]), _t(a["padding"]), count_include_pad=False)
    if op == "globalpool":
        return GlobalPool(a["mode"], tuple(a["dims"]))
    if op == "act":
        name = a["name"]
        if name == "softmax":
            return Softmax(dim=a.get("dim", -1))
        if name == "leaky_relu":
            return nn.LeakyReLU(a.get("slope", 0.2))
        if name == "elu":
            return nn.ELU(a.get("alpha", 1.0))
        if name == "exponential":
            return Exp()
        return _ACTIVATIONS[name]()
    if op == "dropout":
        return nn.Dropout2d(a["rate"]) if a.get("spatial") else nn.Dropout(a["rate"])
    if op == "flatten":
        return nn.Flatten()
    if op == "embedding":
        return nn.Embedding(a["vocab"], a["dim"])
    if op == "rnn":
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "simple": nn.RNN}[a["cell"]]
        rnn = cls(a["cin"], a["units"], batch_first=True, bias=a["bias"], bidirectional=a["bidirectional"])
        return KerasRNN(rnn, a["sequences"], a["backwards"])
    if op == "identity":
        return nn.Identity()
    raise InputError(f"unknown converted node kind {op!r}")


def _t(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_FUNCTIONAL = {"add", "sub", "mul", "avg", "max", "min", "concat", "permute", "reshape", "affine"}


class ConvertedModel(nn.Module):
    """A converted Keras graph: ``nodes`` holds one torch module per layer, run in Keras' topological order."""

    def __init__(self, plan: list[dict[str, Any]], inputs: list[str], output: str,
                 output_activation: str | None = None) -> None:
        super().__init__()
        self.plan = [dict(n) for n in plan]
        self.input_names, self.output_name = list(inputs), output
        self.output_activation = output_activation
        self.nodes = nn.ModuleDict({n["name"]: _make_module(n["op"], n["args"])
                                    for n in self.plan if n["op"] not in _FUNCTIONAL})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {self.input_names[0]: x}
        for node in self.plan:
            ins = [env[i] for i in node["inputs"]]
            op, a = node["op"], node["args"]
            if op not in _FUNCTIONAL:
                out = self.nodes[node["name"]](ins[0])
            elif op == "add":
                out = ins[0]
                for t in ins[1:]:
                    out = out + t
            elif op == "sub":
                out = ins[0] - ins[1]
            elif op == "mul":
                out = ins[0]
                for t in ins[1:]:
                    out = out * t
            elif op == "avg":
                out = ins[0]
                for t in ins[1:]:
                    out = out + t
                out = out / len(ins)
            elif op == "max":
                out = ins[0]
                for t in ins[1:]:
                    out = torch.maximum(out, t)
            elif op == "min":
                out = ins[0]
                for t in ins[1:]:
                    out = torch.minimum(out, t)
            elif op == "concat":
                out = torch.cat(ins, dim=a["dim"])
            elif op == "permute":
                out = ins[0].permute(*a["dims"])
            elif op == "reshape":
                out = ins[0].reshape(ins[0].shape[0], *a["shape"])
            else:  # affine: Keras' Rescaling
                out = ins[0] * a["scale"] + a["offset"]
            env[node["name"]] = out
        return env[self.output_name]


def build_converted(recipe: dict[str, Any]) -> ConvertedModel:
    """Rebuild a converted model (untrained) from its recipe; no Keras needed."""
    try:
        return ConvertedModel(recipe["nodes"], recipe["inputs"], recipe["output"],
                              "softmax" if recipe.get("keras_softmax") else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"unreadable converted-Keras recipe ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------------------------- conversion


@dataclass
class _Ref:
    """A converted tensor: its node name, its Keras shape (no batch) and whether it is held channels-first."""

    name: str
    shape: tuple[int, ...]
    cf: bool = False
    flat_from: tuple[int, ...] | None = None  # a vector flattened in torch order from this channels-first shape


@dataclass
class _Graph:
    source: str
    nodes: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    out_shape: tuple[int, ...] = ()  # the Keras output shape (no batch) of the layer being converted

    def unique(self, base: str) -> str:
        name = "".join(c if c.isalnum() or c == "_" else "_" for c in base) or "node"
        candidate, i = name, 1
        while candidate in self.names:
            i += 1
            candidate = f"{name}_{i}"
        self.names.add(candidate)
        return candidate

    def emit(self, base: str, op: str, inputs: list[_Ref], args: dict[str, Any] | None = None,
             weights: dict[str, Any] | None = None) -> str:
        name = self.unique(base)
        self.nodes.append({"name": name, "op": op, "inputs": [r.name for r in inputs], "args": args or {}})
        for key, value in (weights or {}).items():
            self.state[f"nodes.{name}.{key}"] = torch.as_tensor(np.ascontiguousarray(value), dtype=torch.float32)
        return name

    # layout helpers
    def to_cl(self, ref: _Ref, base: str) -> _Ref:
        """The tensor in Keras' channels-last order."""
        ref = self.materialize(ref, base)
        if not ref.cf:
            return ref
        rank = len(ref.shape) + 1
        dims = [0, *range(2, rank), 1]
        return _Ref(self.emit(f"{base}_to_nhwc", "permute", [ref], {"dims": dims}), ref.shape, False)

    def to_cf(self, ref: _Ref, base: str) -> _Ref:
        """The tensor channels-first (torch's conv layout)."""
        ref = self.materialize(ref, base)
        if ref.cf or len(ref.shape) < 2:
            return ref
        rank = len(ref.shape) + 1
        dims = [0, rank - 1, *range(1, rank - 1)]
        return _Ref(self.emit(f"{base}_to_nchw", "permute", [ref], {"dims": dims}), ref.shape, True)

    def materialize(self, ref: _Ref, base: str) -> _Ref:
        """A vector flattened in torch order, reordered to Keras' order (only where no Dense absorbs it)."""
        if ref.flat_from is None:
            return ref
        c, *spatial = ref.flat_from
        shaped = self.emit(f"{base}_unflatten", "reshape", [ref], {"shape": [c, *spatial]})
        rank = len(spatial) + 2
        moved = self.emit(f"{base}_to_nhwc", "permute", [_Ref(shaped, ())], {"dims": [0, *range(2, rank), 1]})
        flat = self.emit(f"{base}_flatten", "flatten", [_Ref(moved, ())])
        return _Ref(flat, ref.shape, False)


class _Unsupported(Exception):
    pass


def _pair(value: Any, n: int = 2) -> list[int]:
    if isinstance(value, int):
        return [value] * n
    return [int(v) for v in value]


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (Keras' on every backend): the extra pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _activation(g: _Graph, ref: _Ref, name: Any, base: str) -> _Ref:
    if name in (None, "linear"):
        return ref
    if not isinstance(name, str) or name not in _ACTIVATIONS and name not in ("softmax",):
        raise _Unsupported(f"activation {name!r}")
    args: dict[str, Any] = {"name": name}
    if name == "softmax":
        args["dim"] = 1 if ref.cf else -1
        if ref.flat_from is not None:
            ref = g.materialize(ref, base)
    return _Ref(g.emit(f"{base}_{name}", "act", [ref], args), ref.shape, ref.cf, ref.flat_from)


def _conv(g: _Graph, layer: Any, cfg: dict, x: _Ref, kind: str) -> _Ref:
    dims = 2 if kind.endswith("2d") else 1
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise _Unsupported("data_format=channels_first")
    if len(x.shape) != dims + 1:
        raise _Unsupported(f"input of shape {x.shape}")
    x = g.to_cf(x, layer.name)
    spatial, cin = list(x.shape[:-1]), x.shape[-1]
    kernel = _pair(cfg["kernel_size"], dims)
    stride = _pair(cfg["strides"], dims)
    dilation = _pair(cfg.get("dilation_rate", 1), dims)
    padding = cfg.get("padding", "valid")
    pads = [(0, 0)] * dims
    if padding == "same":
        pads = [_same_pads(s, k, st, d) for s, k, st, d in zip(spatial, kernel, stride, dilation)]
    elif padding == "causal" and dims == 1:
        pads = [((kernel[0] - 1) * dilation[0], 0)]
    elif padding != "valid":
        raise _Unsupported(f"padding={padding!r}")
    symmetric = all(a == b for a, b in pads)
    weights = layer.get_weights()
    if kind == "dwconv2d":
        k = weights[0]  # (kh, kw, cin, multiplier)
        mult = k.shape[3]
        cout, groups = cin * mult, cin
        w = k.transpose(2, 3, 0, 1).reshape(cout, 1, *k.shape[:2])
    else:
        k = weights[0]  # (kh, kw, cin/groups, cout) or (k, cin/groups, cout)
        groups = int(cfg.get("groups", 1))
        cout = k.shape[-1]
        w = k.transpose(3, 2, 0, 1) if dims == 2 else k.transpose(2, 1, 0)
    bias = bool(cfg.get("use_bias", True))
    if not symmetric:
        flat = [p for pair in reversed(pads) for p in pair]  # torch pads the last axis first
        x = _Ref(g.emit(f"{layer.name}_pad", "pad", [x], {"pads": flat}), x.shape, True)
        pads = [(0, 0)] * dims
    args = {"cin": cin, "cout": int(cout), "kernel": kernel if dims == 2 else kernel[0],
            "stride": stride if dims == 2 else stride[0], "padding": [p[0] for p in pads] if dims == 2 else pads[0][0],
            "dilation": dilation if dims == 2 else dilation[0], "groups": groups, "bias": bias}
    tensors = {"weight": w}
    if bias:
        tensors["bias"] = weights[1]
    out_shape = g.out_shape
    name = g.emit(layer.name, "conv2d" if dims == 2 else "conv1d", [x], args, tensors)
    return _activation(g, _Ref(name, out_shape, True), cfg.get("activation"), layer.name)


def _separable(g: _Graph, layer: Any, cfg: dict, x: _Ref) -> _Ref:
    if cfg.get("data_format", "channels_last") != "channels_last" or len(x.shape) != 3:
        raise _Unsupported("only channels-last 2-D inputs")
    x = g.to_cf(x, layer.name)
    spatial, cin = list(x.shape[:-1]), x.shape[-1]
    kernel, stride = _pair(cfg["kernel_size"]), _pair(cfg["strides"])
    dilation = _pair(cfg.get("dilation_rate", 1))
    pads = [(0, 0), (0, 0)]
    if cfg.get("padding") == "same":
        pads = [_same_pads(s, k, st, d) for s, k, st, d in zip(spatial, kernel, stride, dilation)]
    if any(a != b for a, b in pads):
        x = _Ref(g.emit(f"{layer.name}_pad", "pad", [x], {"pads": [*pads[1], *pads[0]]}), x.shape, True)
        pads = [(0, 0), (0, 0)]
    weights = layer.get_weights()
    dk, pk = weights[0], weights[1]  # (kh, kw, cin, mult), (1, 1, cin*mult, cout)
    mult = dk.shape[3]
    dw = g.emit(f"{layer.name}_depthwise", "conv2d", [x], {
        "cin": cin, "cout": cin * mult, "kernel": kernel, "stride": stride, "padding": [p[0] for p in pads],
        "dilation": dilation, "groups": cin, "bias": False},
        {"weight": dk.transpose(2, 3, 0, 1).reshape(cin * mult, 1, *dk.shape[:2])})
    bias = bool(cfg.get("use_bias", True))
    tensors = {"weight": pk.transpose(3, 2, 0, 1)}
    if bias:
        tensors["bias"] = weights[2]
    pw = g.emit(f"{layer.name}_pointwise", "conv2d", [_Ref(dw, ())], {
        "cin": cin * mult, "cout": int(pk.shape[3]), "kernel": [1, 1], "stride": [1, 1], "padding": [0, 0],
        "dilation": [1, 1], "groups": 1, "bias": bias}, tensors)
    out_shape = g.out_shape
    return _activation(g, _Ref(pw, out_shape, True), cfg.get("activation"), layer.name)


def _dense(g: _Graph, layer: Any, cfg: dict, x: _Ref) -> _Ref:
    weights = layer.get_weights()
    kernel = weights[0]  # (in, out)
    if x.flat_from is not None:  # rows in Keras' (H, W, C) order, the input in torch's (C, H, W) order
        c, *spatial = x.flat_from
        k = kernel.reshape(*spatial, c, kernel.shape[1])
        k = np.moveaxis(k, len(spatial), 0).reshape(kernel.shape[0], kernel.shape[1])
        kernel = k
        x = _Ref(x.name, x.shape, False)
    else:
        x = g.to_cl(x, layer.name)
    bias = bool(cfg.get("use_bias", True))
    tensors = {"weight": kernel.T}
    if bias:
        tensors["bias"] = weights[1]
    name = g.emit(layer.name, "linear", [x], {"cin": int(kernel.shape[0]), "cout": int(kernel.shape[1]),
                                               "bias": bias}, tensors)
    out_shape = (*x.shape[:-1], int(kernel.shape[1]))
    return _activation(g, _Ref(name, out_shape, False), cfg.get("activation"), layer.name)


def _pool(g: _Graph, layer: Any, cfg: dict, x: _Ref, mode: str, dims: int) -> _Ref:
    if cfg.get("data_format", "channels_last") != "channels_last" or len(x.shape) != dims + 1:
        raise _Unsupported(f"input of shape {x.shape}")
    x = g.to_cf(x, layer.name)
    spatial = list(x.shape[:-1])
    kernel = _pair(cfg["pool_size"], dims)
    stride = _pair(cfg.get("strides") or cfg["pool_size"], dims)
    pads = [(0, 0)] * dims
    if cfg.get("padding") == "same":
        pads = [_same_pads(s, k, st, 1) for s, k, st in zip(spatial, kernel, stride)]
    padding = [p[0] for p in pads]
    if any(a != b for a, b in pads) or any(p * 2 > k for (p, _), k in zip(pads, kernel)):
        if mode == "avg":
            raise _Unsupported("padding='same' with uneven padding (average pooling)")
        flat = [p for pair in reversed(pads) for p in pair]
        x = _Ref(g.emit(f"{layer.name}_pad", "pad", [x], {"pads": flat, "value": float("-inf")}), x.shape, True)
        padding = [0] * dims
    args = {"dims": dims, "kernel": kernel if dims == 2 else kernel[0], "stride": stride if dims == 2 else stride[0],
            "padding": padding if dims == 2 else padding[0]}
    out_shape = g.out_shape
    return _Ref(g.emit(layer.name, "maxpool" if mode == "max" else "avgpool", [x], args), out_shape, True)


def _global_pool(g: _Graph, layer: Any, cfg: dict, x: _Ref, mode: str) -> _Ref:
    if cfg.get("keepdims"):
        raise _Unsupported("keepdims=True")
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise _Unsupported("data_format=channels_first")
    x = g.materialize(x, layer.name)
    rank = len(x.shape) + 1
    dims = list(range(2, rank)) if x.cf else list(range(1, rank - 1))
    out_shape = (x.shape[-1],)
    return _Ref(g.emit(layer.name, "globalpool", [x], {"mode": mode, "dims": dims}), out_shape, False)


def _batchnorm(g: _Graph, layer: Any, cfg: dict, x: _Ref) -> _Ref:
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    rank = len(x.shape) + 1
    if not isinstance(axis, int) or axis % rank != rank - 1:
        raise _Unsupported(f"axis={axis} (only the channel axis is converted)")
    x = g.materialize(x, layer.name)
    features = int(x.shape[-1])
    if rank == 2:
        form = "1d"
    elif x.cf:
        form = "2d" if rank == 4 else "1d"
        if rank > 4:
            raise _Unsupported(f"input of shape {x.shape}")
    elif rank == 3:
        form = "seq"
    else:
        x = g.to_cf(x, layer.name)
        form = "2d"
    weights = layer.get_weights()
    i = 0
    gamma = beta = None
    if cfg.get("scale", True):
        gamma, i = weights[i], i + 1
    if cfg.get("center", True):
        beta, i = weights[i], i + 1
    mean, var = weights[i], weights[i + 1]
    tensors = {"weight": gamma if gamma is not None else np.ones(features, np.float32),
               "bias": beta if beta is not None else np.zeros(features, np.float32),
               "running_mean": mean, "running_var": var}
    args = {"form": form, "features": features, "eps": float(cfg.get("epsilon", 1e-3)),
            "momentum": 1.0 - float(cfg.get("momentum", 0.99))}
    name = g.emit(layer.name, "batchnorm", [x], args, tensors)
    g.state[f"nodes.{name}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return _Ref(name, x.shape, x.cf)


def _layernorm(g: _Graph, layer: Any, cfg: dict, x: _Ref) -> _Ref:
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    rank = len(x.shape) + 1
    if not isinstance(axis, int) or axis % rank != rank - 1 or cfg.get("rms_scaling"):
        raise _Unsupported(f"axis={axis} (only the last axis is converted)")
    x = g.to_cl(x, layer.name)
    features = int(x.shape[-1])
    weights, i = layer.get_weights(), 0
    gamma = np.ones(features, np.float32)
    beta = np.zeros(features, np.float32)
    if cfg.get("scale", True):
        gamma, i = weights[i], i + 1
    if cfg.get("center", True):
        beta = weights[i]
    name = g.emit(layer.name, "layernorm", [x], {"features": features, "eps": float(cfg.get("epsilon", 1e-3))},
                  {"weight": gamma, "bias": beta})
    return _Ref(name, x.shape, False)


def _rnn_weights(cell: str, weights: list[np.ndarray], bias: bool, units: int, suffix: str) -> dict[str, Any]:
    kernel, recurrent = weights[0], weights[1]
    if cell == "gru":  # Keras: update, reset, candidate; torch: reset, update, new
        order = [1, 0, 2]

        def reorder(m: np.ndarray) -> np.ndarray:
            return np.concatenate([m[..., i * units:(i + 1) * units] for i in order], axis=-1)

        kernel, recurrent = reorder(kernel), reorder(recurrent)
    out = {f"weight_ih_l0{suffix}": kernel.T, f"weight_hh_l0{suffix}": recurrent.T}
    if bias:
        b = weights[2]
        if cell == "gru":
            b = np.stack([reorder(b[0]), reorder(b[1])]) if b.ndim == 2 else reorder(b)
            if b.ndim == 2:
                out[f"bias_ih_l0{suffix}"], out[f"bias_hh_l0{suffix}"] = b[0], b[1]
            else:
                raise _Unsupported("reset_after=False")
        else:  # LSTM (gates i, f, c, o: torch's i, f, g, o) and SimpleRNN: one bias, all on the input side
            out[f"bias_ih_l0{suffix}"], out[f"bias_hh_l0{suffix}"] = b, np.zeros_like(b)
    return out


_CELLS = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "simple"}


def _check_rnn(cfg: dict, cell: str) -> None:
    if cfg.get("stateful") or cfg.get("return_state"):
        raise _Unsupported("stateful or return_state")
    if cfg.get("activation", "tanh") != "tanh":
        raise _Unsupported(f"activation={cfg.get('activation')!r}")
    if cell != "simple" and cfg.get("recurrent_activation", "sigmoid") != "sigmoid":
        raise _Unsupported(f"recurrent_activation={cfg.get('recurrent_activation')!r}")
    if cell == "gru" and not cfg.get("reset_after", True):
        raise _Unsupported("reset_after=False")


def _rnn(g: _Graph, layer: Any, cfg: dict, x: _Ref, masked: bool) -> _Ref:
    cls = type(layer).__name__
    bidirectional = cls == "Bidirectional"
    if bidirectional:
        if cfg.get("merge_mode", "concat") != "concat":
            raise _Unsupported(f"merge_mode={cfg.get('merge_mode')!r}")
        inner = layer.forward_layer
        cell = _CELLS.get(type(inner).__name__)
        if cell is None:
            raise _Unsupported(f"wraps {type(inner).__name__}")
        icfg = inner.get_config()
        backward_cfg = layer.backward_layer.get_config()
        if backward_cfg.get("units") != icfg.get("units"):
            raise _Unsupported("different forward and backward layers")
    else:
        inner, icfg, cell = layer, cfg, _CELLS[cls]
    _check_rnn(icfg, cell)
    if masked:
        raise _Unsupported("masking (an Embedding with mask_zero=True): padded steps would change the result")
    if icfg.get("go_backwards") and bidirectional:
        raise _Unsupported("go_backwards inside Bidirectional")
    x = g.to_cl(x, layer.name)
    if len(x.shape) != 2:
        raise _Unsupported(f"input of shape {x.shape}")
    units, bias = int(icfg["units"]), bool(icfg.get("use_bias", True))
    tensors = _rnn_weights(cell, inner.get_weights(), bias, units, "")
    if bidirectional:
        tensors.update(_rnn_weights(cell, layer.backward_layer.get_weights(), bias, units, "_reverse"))
    tensors = {f"rnn.{k}": v for k, v in tensors.items()}
    sequences = bool(icfg.get("return_sequences"))
    args = {"cell": cell, "cin": int(x.shape[-1]), "units": units, "bias": bias, "bidirectional": bidirectional,
            "sequences": sequences, "backwards": bool(icfg.get("go_backwards"))}
    width = units * (2 if bidirectional else 1)
    out_shape = (x.shape[0], width) if sequences else (width,)
    return _Ref(g.emit(layer.name, "rnn", [x], args, tensors), out_shape, False)


def _merge(g: _Graph, layer: Any, cfg: dict, xs: list[_Ref], op: str) -> _Ref:
    flats = {r.flat_from for r in xs}
    if flats != {None} and (len(flats) > 1 or op == "concat"):  # elementwise merges keep a shared torch order
        xs = [g.materialize(r, layer.name) for r in xs]
    if len({r.cf for r in xs}) > 1:
        xs = [g.to_cl(r, layer.name) for r in xs]
    out_shape = g.out_shape
    args: dict[str, Any] = {}
    if op == "concat":
        rank = len(xs[0].shape) + 1
        axis = int(cfg.get("axis", -1)) % rank
        if xs[0].cf:
            axis = 1 if axis == rank - 1 else axis + 1
        args["dim"] = axis
    first = xs[0]
    return _Ref(g.emit(layer.name, op, xs, args), out_shape, first.cf, first.flat_from if op != "concat" else None)


_MERGES = {"Add": "add", "Subtract": "sub", "Multiply": "mul", "Average": "avg", "Maximum": "max",
           "Minimum": "min", "Concatenate": "concat"}
_IDENTITY = {"GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Masking"}


def _convert_layer(g: _Graph, layer: Any, xs: list[_Ref], masks: set[str]) -> _Ref:
    cls = type(layer).__name__
    cfg = layer.get_config()
    x = xs[0]
    if cls in _MERGES:
        return _merge(g, layer, cfg, xs, _MERGES[cls])
    if len(xs) != 1:
        raise _Unsupported(f"{len(xs)} inputs")
    if cls == "Conv2D":
        return _conv(g, layer, cfg, x, "conv2d")
    if cls == "Conv1D":
        return _conv(g, layer, cfg, x, "conv1d")
    if cls == "DepthwiseConv2D":
        return _conv(g, layer, cfg, x, "dwconv2d")
    if cls == "SeparableConv2D":
        return _separable(g, layer, cfg, x)
    if cls == "Dense":
        return _dense(g, layer, cfg, x)
    if cls == "Flatten":
        if len(x.shape) <= 1:
            return x
        out_shape = (int(np.prod(x.shape)),)
        if x.cf:  # torch order; a following Dense takes it as it is (see _dense), others reorder it
            name = g.emit(layer.name, "flatten", [x])
            c = x.shape[-1]
            return _Ref(name, out_shape, False, (c, *x.shape[:-1]))
        return _Ref(g.emit(layer.name, "flatten", [x]), out_shape, False)
    if cls in ("MaxPooling2D", "AveragePooling2D", "MaxPooling1D", "AveragePooling1D"):
        return _pool(g, layer, cfg, x, "max" if cls.startswith("Max") else "avg", 2 if cls.endswith("2D") else 1)
    if cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D", "GlobalMaxPooling1D"):
        return _global_pool(g, layer, cfg, x, "max" if "Max" in cls else "avg")
    if cls == "BatchNormalization":
        return _batchnorm(g, layer, cfg, x)
    if cls == "LayerNormalization":
        return _layernorm(g, layer, cfg, x)
    if cls in ("Dropout", "SpatialDropout1D", "SpatialDropout2D"):
        spatial = cls == "SpatialDropout2D" and x.cf
        return _Ref(g.emit(layer.name, "dropout", [x], {"rate": float(cfg.get("rate", 0.5)), "spatial": spatial}),
                    x.shape, x.cf, x.flat_from)
    if cls in _IDENTITY:
        return x
    if cls == "Activation":
        return _activation(g, x, cfg.get("activation"), layer.name)
    if cls == "ReLU":
        if cfg.get("threshold", 0.0) or (cfg.get("negative_slope", 0.0) and cfg.get("max_value") is not None):
            raise _Unsupported("threshold, or a slope together with max_value")
        if cfg.get("max_value") is not None:
            if float(cfg["max_value"]) != 6.0:
                raise _Unsupported(f"max_value={cfg['max_value']}")
            return _activation(g, x, "relu6", layer.name)
        if cfg.get("negative_slope", 0.0):
            return _Ref(g.emit(layer.name, "act", [x], {"name": "leaky_relu", "slope": float(cfg["negative_slope"])}),
                        x.shape, x.cf, x.flat_from)
        return _activation(g, x, "relu", layer.name)
    if cls == "LeakyReLU":
        slope = float(cfg.get("negative_slope", cfg.get("alpha", 0.3)))
        return _Ref(g.emit(layer.name, "act", [x], {"name": "leaky_relu", "slope": slope}), x.shape, x.cf, x.flat_from)
    if cls == "ELU":
        return _Ref(g.emit(layer.name, "act", [x], {"name": "elu", "alpha": float(cfg.get("alpha", 1.0))}),
                    x.shape, x.cf, x.flat_from)
    if cls == "Softmax":
        axis = cfg.get("axis", -1)
        if axis not in (-1, [-1], len(x.shape)):
            raise _Unsupported(f"axis={axis}")
        return _activation(g, x, "softmax", layer.name)
    if cls == "Embedding":
        if cfg.get("mask_zero"):
            masks.add(layer.name)
        w = layer.get_weights()[0]
        name = g.emit(layer.name, "embedding", [x], {"vocab": int(w.shape[0]), "dim": int(w.shape[1])},
                      {"weight": w})
        return _Ref(name, (*x.shape, int(w.shape[1])), False)
    if cls in _CELLS or cls == "Bidirectional":
        return _rnn(g, layer, cfg, x, bool(masks))
    if cls == "Reshape":
        x = g.to_cl(x, layer.name)
        target = list(g.out_shape)
        return _Ref(g.emit(layer.name, "reshape", [x], {"shape": target}), tuple(target), False)
    if cls == "ZeroPadding2D":
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise _Unsupported("data_format=channels_first")
        (top, bottom), (left, right) = [_pair(p) for p in cfg["padding"]]
        x = g.to_cf(x, layer.name)
        out_shape = g.out_shape
        return _Ref(g.emit(layer.name, "pad", [x], {"pads": [left, right, top, bottom]}), out_shape, True)
    if cls == "Rescaling":
        scale, offset = cfg.get("scale", 1.0), cfg.get("offset", 0.0)
        if not isinstance(scale, int | float) or not isinstance(offset, int | float):
            raise _Unsupported("per-channel scale or offset")
        return _Ref(g.emit(layer.name, "affine", [x], {"scale": float(scale), "offset": float(offset)}),
                    x.shape, x.cf, x.flat_from)
    raise _Unsupported("no converter for this layer kind")


def _walk(g: _Graph, kmodel: Any, inputs: list[_Ref], masks: set[str]) -> list[_Ref]:
    """Convert the operations of a Sequential or functional model, given refs for its inputs."""
    cls = type(kmodel).__name__
    if cls == "Sequential":
        x = inputs[0]
        for layer in kmodel.layers:
            g.out_shape = _static_shape(layer.output)
            x = _convert_one(g, layer, [x], masks)
        return [x]
    by_tensor: dict[int, _Ref] = {id(t): r for t, r in zip(kmodel.inputs, inputs)}
    for depth in sorted(kmodel._nodes_by_depth, reverse=True):
        for node in kmodel._nodes_by_depth[depth]:
            op = node.operation
            if type(op).__name__ == "InputLayer":
                continue
            try:
                xs = [by_tensor[id(t)] for t in node.input_tensors]
            except KeyError:
                raise InputError(f"{g.source}: layer '{op.name}' ({type(op).__name__}) takes an input the "
                                 "conversion does not know (a model with several inputs?)") from None
            outs = node.output_tensors
            if len(outs) != 1:
                raise InputError(f"{g.source}: layer '{op.name}' ({type(op).__name__}) has {len(outs)} outputs; "
                                 "not converted")
            g.out_shape = _static_shape(outs[0])
            by_tensor[id(outs[0])] = _convert_one(g, op, xs, masks)
    try:
        return [by_tensor[id(t)] for t in kmodel.outputs]
    except KeyError:
        raise InputError(f"{g.source}: the model's output could not be traced through its layers") from None


def _static_shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) if d is not None else -1 for d in tuple(tensor.shape)[1:])


def _convert_one(g: _Graph, layer: Any, xs: list[_Ref], masks: set[str]) -> _Ref:
    cls = type(layer).__name__
    if cls == "InputLayer":
        return xs[0]
    if cls in ("Sequential", "Functional") and hasattr(layer, "layers"):
        if len(getattr(layer, "inputs", None) or [None]) != len(xs):
            raise InputError(f"{g.source}: nested model '{layer.name}' takes {len(layer.inputs)} inputs; not converted")
        outs = _walk(g, layer, xs, masks)
        if len(outs) != 1:
            raise InputError(f"{g.source}: nested model '{layer.name}' has several outputs; not converted")
        return outs[0]
    try:
        return _convert_layer(g, layer, xs, masks)
    except _Unsupported as exc:
        raise InputError(f"{g.source}: layer '{layer.name}' ({cls}) cannot be converted to torch: {exc}") from None


def convert_keras_model(kmodel: Any, source: str = "model") -> ConvertedModel:
    """A loaded Keras model as a torch module with its weights and recipe (NCHW images in, logits out)."""
    inputs = list(getattr(kmodel, "inputs", None) or [])
    if len(inputs) != 1:
        raise InputError(f"{source}: {len(inputs)} inputs; only models with one input are converted")
    outputs = list(getattr(kmodel, "outputs", None) or [])
    if len(outputs) != 1:
        raise InputError(f"{source}: {len(outputs)} outputs; only models with one output are converted")
    kshape = tuple(inputs[0].shape[1:])
    if any(d is None for d in kshape):
        raise InputError(f"{source}: the input shape {kshape} is not fixed; save the model with a fixed input shape")
    kshape = tuple(int(d) for d in kshape)
    dtype = str(getattr(inputs[0], "dtype", "float32"))
    integer = "int" in dtype
    image = len(kshape) == 3 and not integer
    g = _Graph(source)
    g.names.add("input")
    x = _Ref("input", kshape, image)
    out = _walk(g, kmodel, [x], set())[0]
    out = g.materialize(out, "output")
    if out.cf:
        out = g.to_cl(out, "output")
    softmax = False
    last = g.nodes[-1] if g.nodes else None
    if last is not None and last["name"] == out.name and last["op"] == "act" and last["args"]["name"] == "softmax":
        g.nodes.pop()
        out = _Ref(last["inputs"][0], out.shape, False)
        softmax = True
    if len(out.shape) != 1:
        raise InputError(f"{source}: the model's output has shape {out.shape} per sample; a classifier gives one "
                         "score per class")
    input_shape = (kshape[-1], *kshape[:-1]) if image else kshape
    recipe = {"kind": "keras", "source": source, "nodes": g.nodes, "inputs": ["input"], "output": out.name,
              "input_shape": list(input_shape), "input_dtype": "int64" if integer else "float32",
              "num_classes": int(out.shape[0]), "keras_softmax": softmax, "keras_class": type(kmodel).__name__}
    model = build_converted(recipe)
    missing, unexpected = model.load_state_dict(g.state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        raise InputError(f"{source}: converted weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return set_recipe(model.eval(), recipe)


def load_saved_model(folder: Path) -> Any:
    """A TensorFlow SavedModel folder as an ONNX model through tf2onnx (an optional extra: both must be installed)."""
    import importlib.util
    import subprocess
    import sys

    from workbench.core.models.onnx_model import OnnxModel

    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf2onnx") is None:
        raise InputError(f"{folder}: a TensorFlow SavedModel; opening one needs tensorflow and tf2onnx "
                         "(pip install tensorflow tf2onnx), or save it as .keras")
    out_dir = Path(tempfile.mkdtemp(prefix="workbench-savedmodel-"))
    target = out_dir / f"{folder.name or 'saved_model'}.onnx"
    done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(folder), "--output",
                           str(target)], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or not target.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"{folder}: tf2onnx could not convert the SavedModel ({last[:300]})")
    return OnnxModel.load_checked(target)
