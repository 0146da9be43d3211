"""Model specs (``zoo:``, ``py:``, files, variant folders) to models, safely.

Loading never unpickles by default: ``.pt/.pth`` go through ``torch.load(weights_only=True)``; a full pickled
module loads only when the user passed ``--trust``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from workbench.core.errors import InputError
from workbench.core.kv import split_kv
from workbench.core.models.onnx_model import OnnxModel
from workbench.core.models.recipe import set_recipe
from workbench.core.models.serialize import apply_shapes

if TYPE_CHECKING:
    from workbench.core.data import DatasetInfo


def build_from_recipe(recipe: dict[str, Any]) -> nn.Module:
    """Rebuild an architecture (untrained) from its recipe."""
    kind = recipe.get("kind")
    shape = tuple(recipe.get("input_shape", ()))
    classes = int(recipe.get("num_classes", 0))
    options = dict(recipe.get("options", {}))
    if kind == "zoo":
        from workbench.core.models.zoo import build_zoo_model

        model = build_zoo_model(recipe["name"], shape, classes, options)
    elif kind == "py":
        model = _build_py(recipe["target"], recipe["attr"], options, shape, classes)
    elif kind == "stack":
        from workbench.core.models.stack import build_stack

        model = build_stack(recipe["layers"], shape, classes, vocab_size=recipe.get("vocab_size"))
    elif kind == "keras":
        from workbench.core.models.keras_import import build_converted

        model = build_converted(recipe)
    else:
        raise InputError(f"unknown model recipe kind {kind!r}")
    return set_recipe(model, recipe)


def load_model(spec: str, info: DatasetInfo, *, weights: str | None = None, trust: bool = False) -> Any:
    """A model from a spec, fitted to the dataset; torch models carry their recipe."""
    if spec.startswith("hf:") or _is_hf_folder(spec):
        from workbench.core.lm.model import open_hf_folder

        if weights:
            raise InputError("--weights goes with a zoo: or py: model; a Hugging Face folder already has weights")
        return open_hf_folder(Path(spec.removeprefix("hf:")), trust=trust, info=info)
    if spec.startswith("zoo:"):
        name, _, rest = spec[4:].partition(":")
        options = split_kv(rest, f"model {spec}")
        _check_task_fits(spec, name, info)
        if info.vocab_size and "vocab_size" not in options:
            from workbench.core.models.zoo import list_models

            entry = next((e for e in list_models() if e.name == name), None)
            if entry is not None and "text" in entry.input_kinds:
                options["vocab_size"] = str(info.vocab_size)
        recipe = {"kind": "zoo", "name": name, "options": options,
                  "input_shape": list(info.input_shape), "num_classes": info.num_classes}
        model = build_from_recipe(recipe)
    elif spec.startswith("stack:"):
        from workbench.core.models.stack import stack_recipe

        model = build_from_recipe(stack_recipe(spec, info.input_shape, info.num_classes, info.vocab_size))
    elif spec.startswith("py:"):
        target, attr, options = _parse_py_spec(spec)
        recipe = {"kind": "py", "target": target, "attr": attr, "options": options,
                  "input_shape": list(info.input_shape), "num_classes": info.num_classes}
        model = build_from_recipe(recipe)
    else:
        if weights:
            raise InputError("--weights goes with a zoo: or py: model; a file or folder already has weights")
        return _fit_language_model(load_model_file(Path(spec), trust=trust), info, spec)
    if weights:
        load_weights(model, Path(weights))
    return _fit_language_model(model, info, spec)


def is_language_model_spec(spec: str) -> bool:
    """Whether ``spec`` names a language model, read without building it: a zoo model taking tokens, a Hugging Face
    folder (``hf:DIR``, ``DIR`` with config.json) or a language-model variant folder (it keeps a config.json)."""
    if spec.startswith("zoo:"):
        from workbench.core.models.zoo import list_models

        name = spec[4:].split(":", 1)[0]
        entry = next((e for e in list_models() if e.name == name), None)
        return entry is not None and "tokens" in entry.input_kinds
    if spec.startswith(("py:", "stack:")):
        return False
    folder = Path(spec[3:] if spec.startswith("hf:") else spec).expanduser()
    try:
        return folder.is_dir() and (folder / "config.json").is_file()
    except OSError:
        return False


def default_dataset_for(model: str | None) -> str:
    """The data a model gets when none is named: the built-in corpus for a language model, else the demo's digits."""
    return "pydocs" if model and is_language_model_spec(model) else "digits"


def _is_hf_folder(spec: str) -> bool:
    if spec.startswith(("zoo:", "py:", "stack:")):
        return False
    from workbench.core.lm.hf_folder import is_hf_folder

    return is_hf_folder(Path(spec).expanduser())


def _check_task_fits(spec: str, name: str, info: DatasetInfo) -> None:
    """A zoo language model needs a corpus, a zoo classifier needs labelled data: say so in one line."""
    from workbench.core.models.zoo import list_models

    entry = next((e for e in list_models() if e.name == name), None)
    if entry is None:
        return
    is_lm = "tokens" in entry.input_kinds
    if is_lm and info.task != "causal_lm":
        raise InputError(f"{spec} is a language model: it needs a text corpus dataset (text:FILE or pydocs), "
                         f"not {info.spec!r}")
    if not is_lm and info.task == "causal_lm":
        raise InputError(f"{spec} is a classifier, and {info.spec!r} is a corpus for language models: use "
                         "zoo:tiny_llama or a Hugging Face model folder")


def _fit_language_model(model: Any, info: DatasetInfo, spec: str) -> Any:
    """A language model gets the tokenizer its data is encoded with (checked against its vocabulary)."""
    if getattr(model, "is_causal_lm", False):
        from workbench.core.lm.hf_folder import attach_dataset_tokenizer

        if info.task != "causal_lm":
            raise InputError(f"{spec} is a language model: it needs a text corpus dataset (text:FILE or pydocs), "
                             f"not {info.spec!r}")
        attach_dataset_tokenizer(model, info, what=spec)
    return model


def load_model_file(path: Path, *, trust: bool = False) -> Any:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        if _is_hf_folder(str(path)):
            from workbench.core.lm.model import open_hf_folder

            return open_hf_folder(path, trust=trust)
        if (path / "saved_model.pb").is_file() and not (path / "meta.json").exists():
            from workbench.core.models.keras_import import load_saved_model

            return load_saved_model(path)
        return load_variant_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxModel.load_checked(path)
    if suffix == ".pt2":
        return load_pt2(path)
    if suffix in (".keras", ".h5", ".hdf5"):
        from workbench.core.models.keras_import import load_keras_file

        return load_keras_file(path)
    if suffix in (".pt", ".pth"):
        return _load_pickle_file(path, trust)
    if suffix == ".safetensors":
        raise InputError(f"{path}: a .safetensors file holds weights only; give the architecture with "
                         f"--model zoo:NAME (or py:...) --weights {path}")
    raise InputError(f"{path}: unknown model file type {suffix!r} (expected .onnx, .pt2, .pt, .pth, .safetensors, .keras, .h5)")


def load_variant_folder(folder: Path) -> Any:
    meta_file = folder / "meta.json"
    if not meta_file.exists():
        raise InputError(f"{folder}: not a variant folder (no meta.json)")
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError:
        raise InputError(f"{meta_file}: unreadable") from None
    if meta.get("format") == "onnx":
        return OnnxModel.load_checked(folder / "model.onnx")
    return load_torch_model(folder)


def load_pt2(path: Path) -> nn.Module:
    """A torch.export program (no pickle of code), as a runnable module."""
    logger = logging.getLogger("torch.export")  # it logs a traceback for corrupt archives; we say one line
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        program = torch.export.load(io.BytesIO(path.read_bytes()))
    except Exception as exc:  # noqa: BLE001 - corrupt archives raise many kinds
        raise InputError(f"{path}: not a readable torch.export (.pt2) file ({type(exc).__name__})") from None
    finally:
        logger.setLevel(level)
    return program.module()


def load_weights(model: nn.Module, path: Path) -> None:
    """Trained weights into an architecture: .safetensors, or a state-dict .pt (weights_only)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: corrupt safetensors file ({str(exc)[:120]})") from None
    else:
        state = _torch_load_safe(path)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise InputError(f"{path}: holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"{path}: the weights do not fit the model ({first[:200]})") from None


def _torch_load_safe(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing: one line is ours
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError and friends
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text or _pickle_imports_names(path):
            raise InputError(f"{path}: the file is a pickle that would run code or build objects when loaded; "
                             "refused (pass --trust only if you trust where it came from)") from None
        raise InputError(f"{path}: not a readable PyTorch file ({type(exc).__name__})") from None


_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


def _pickle_imports_names(path: Path) -> bool:
    """Whether the pickle (plain, or data.pkl of a torch zip) imports or calls anything, read without running it,
    so a refused pickle and a merely corrupt file get different messages."""
    import pickletools
    import zipfile

    try:
        data = path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(name) if name else b""
        for opcode, _, _ in pickletools.genops(data):
            if opcode.name in _CODE_OPCODES:
                return True
    except Exception:  # noqa: BLE001 - a corrupt stream: report what was seen before it broke
        return False
    return False


def _load_pickle_file(path: Path, trust: bool) -> Any:
    if not trust:
        obj = _torch_load_safe(path)
        if isinstance(obj, dict):
            raise InputError(f"{path}: a state dict has no architecture; use --model zoo:NAME --weights {path}")
        raise InputError(f"{path}: holds a {type(obj).__name__}, not a model")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)  # the user passed --trust
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: could not be loaded ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(obj, nn.Module):
        raise InputError(f"{path}: holds a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _parse_py_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    body = spec[3:]
    parts = body.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise InputError(f"model {spec!r}: expected py:FILE.py:NAME[:k=v,...] or py:package.module:NAME[:k=v]")
    target, attr = parts[0], parts[1]
    options = split_kv(":".join(parts[2:]), f"model {spec}")
    if target.endswith(".py"):
        file = Path(target).expanduser().resolve()
        if not file.is_file():
            raise InputError(f"model {spec!r}: {target} does not exist")
        target = str(file)
    return target, attr, options


def _build_py(target: str, attr: str, options: dict[str, Any], shape: tuple, classes: int) -> nn.Module:
    try:
        if target.endswith(".py"):
            module_name = f"workbench_user_{abs(hash(target))}"
            module = sys.modules.get(module_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(module_name, target)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot import {target}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
        sys.modules.pop(f"workbench_user_{abs(hash(target))}", None)
        raise InputError(f"cannot import {target}: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise InputError(f"{target} has no class or function {attr!r}")
    kwargs = {k: _literal(v) for k, v in options.items()}
    try:
        params = inspect.signature(factory).parameters
        if "num_classes" in params and "num_classes" not in kwargs:
            kwargs["num_classes"] = classes
        if "input_shape" in params and "input_shape" not in kwargs:
            kwargs["input_shape"] = tuple(shape)
        if "in_channels" in params and "in_channels" not in kwargs and len(shape) == 3:
            kwargs["in_channels"] = shape[0]
    except (TypeError, ValueError):
        pass
    try:
        model = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{target}:{attr}({kwargs}) raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"{target}:{attr} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _literal(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def load_torch_model(folder: Path) -> nn.Module:
    """Rebuild a saved PyTorch variant (weights checked for shape) on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    recipe_file = folder / "recipe.json"
    if recipe_file.exists():
        try:
            payload = json.loads(recipe_file.read_text())
            recipe, shapes = payload["recipe"], payload.get("shapes", {})
        except (ValueError, KeyError) as exc:
            raise InputError(f"{recipe_file}: unreadable recipe ({exc})") from None
        if isinstance(recipe, dict) and recipe.get("kind") == "causal_lm":
            from workbench.core.lm.model import load_language_model

            return load_language_model(folder, recipe)
        try:
            state = load_file(str(folder / "model.safetensors"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{folder / 'model.safetensors'}: unreadable weights ({exc})") from None
        model = build_from_recipe(recipe)
        apply_shapes(model, shapes, state)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise InputError(f"{folder}: the weights do not fit the architecture ({first})") from None
        return set_recipe(model.eval(), recipe)
    pt2 = folder / "model.pt2"
    if pt2.exists():
        return load_pt2(pt2)
    raise InputError(f"{folder}: no PyTorch model in this variant folder")
