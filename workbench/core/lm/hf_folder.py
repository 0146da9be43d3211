"""Opening a Hugging Face model folder offline, safely.

Every check that protects the user runs on the folder's JSON and file names before transformers sees it:

- custom code (``auto_map`` in config.json or tokenizer_config.json, or a ``trust_remote_code`` key) is refused
  without ``--trust``, so a ``modeling_*.py`` in the folder is never imported;
- weights come from ``*.safetensors`` only; a pickled ``pytorch_model.bin`` needs ``--trust``, and even then it
  is read with ``torch.load(weights_only=True)``, which refuses a pickle that would build arbitrary objects;
- a config whose parameters would not fit in the machine's available memory is refused from the config alone,
  before a single tensor is allocated.

Nothing is downloaded: transformers runs with ``local_files_only=True`` and the hub's offline switch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.core.errors import InputError

SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
BYTES_PER_PARAM = 4  # loaded in float32 for training and measuring on any device


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path.parent}: not a Hugging Face model folder (no {path.name})") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable JSON ({str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def is_hf_folder(path: Path) -> bool:
    """A folder with config.json and no workbench meta.json (a variant folder is opened as a variant)."""
    return path.is_dir() and (path / "config.json").is_file() and not (path / "meta.json").exists()


def check_custom_code(folder: Path, config: dict[str, Any], trust: bool) -> None:
    """Refuse (InputError) a folder that asks to run its own Python code, unless the user trusts it."""
    if trust:
        return
    named: list[str] = []
    if config.get("auto_map"):
        named.append(f"config.json auto_map {sorted(config['auto_map'])}")
    if config.get("trust_remote_code"):
        named.append("config.json trust_remote_code")
    tok_config = folder / "tokenizer_config.json"
    if tok_config.is_file():
        try:
            tok = json.loads(tok_config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            tok = {}
        if isinstance(tok, dict) and tok.get("auto_map"):
            named.append("tokenizer_config.json auto_map")
    if named:
        raise InputError(f"{folder}: the folder names custom code ({'; '.join(named)}); refused, it would run Python "
                         "code from the folder (pass --trust only if you trust where it came from)")


def weight_format(folder: Path, trust: bool) -> str:
    """``safetensors``, or ``bin`` (only with --trust); InputError when there are no usable weights."""
    if any((folder / name).is_file() for name in SAFETENSORS) or any(folder.glob("*.safetensors")):
        return "safetensors"
    if any((folder / name).is_file() for name in PICKLED) or any(folder.glob("pytorch_model*.bin")):
        if not trust:
            raise InputError(f"{folder}: the weights are only a pickled pytorch_model.bin, which can run code when "
                             "loaded; refused (convert it to safetensors, or pass --trust if you trust its source)")
        return "bin"
    raise InputError(f"{folder}: no weights (model.safetensors or sharded *.safetensors)")


def estimate_params(config: Any) -> int:
    """A lower bound of the parameter count from a transformers config: embeddings (and an untied head) plus per
    layer the query and output projections and two MLP matrices. Cheap, and never more than the real count."""
    hidden = _int(config, "hidden_size")
    layers = _int(config, "num_hidden_layers")
    vocab = _int(config, "vocab_size")
    ffn = _int(config, "intermediate_size") or _int(config, "n_inner") or 4 * hidden
    tied = bool(getattr(config, "tie_word_embeddings", True))
    return vocab * hidden * (1 if tied else 2) + layers * (2 * hidden * hidden + 2 * hidden * ffn)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux MemAvailable; else physical), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(folder: Path | str, config: Any, available: int | None = None) -> int:
    """Refuse a config too large for this machine before allocating; returns the parameter estimate. ``folder``
    names the model in the message (a folder, or ``zoo:tiny_llama``)."""
    params = estimate_params(config)
    need = params * BYTES_PER_PARAM
    available = available_memory() if available is None else available
    if available is not None and need > available:
        raise InputError(f"{folder}: the config describes a model of at least {params / 1e9:.2f}B parameters "
                         f"({need / 2**30:.1f} GiB in float32), more than the {available / 2**30:.1f} GiB of memory "
                         "available; refused before allocating anything")
    return params


def load_config(folder: Path, *, trust: bool = False) -> Any:
    """The folder's transformers config, after the custom-code check (no weights touched)."""
    from workbench.core.lm.offline import quiet_transformers

    raw = read_json(folder / "config.json")
    check_custom_code(folder, raw, trust)
    if "model_type" not in raw:
        raise InputError(f"{folder / 'config.json'}: no model_type; not a transformers config")
    transformers = quiet_transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust)
    except (ValueError, KeyError, OSError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{folder}: config.json with model_type {raw.get('model_type')!r} is not one this "
                         f"transformers {transformers.__version__} knows ({first[:160]})") from None
    vocab = _int(config, "vocab_size")
    pad = getattr(config, "pad_token_id", None)
    if isinstance(pad, int) and vocab and pad >= vocab:  # e.g. Phi-3's default 32000 with a small vocabulary
        config.pad_token_id = None
    return config


def load_hf_causal_lm(folder: Path, *, trust: bool = False, available: int | None = None) -> nn.Module:
    """The causal LM of a Hugging Face folder (float32, CPU, eval mode), after every safety check above."""
    from workbench.core.lm.offline import quiet_transformers

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    config = load_config(folder, trust=trust)
    fmt = weight_format(folder, trust)
    check_memory(folder, config, available)
    transformers = quiet_transformers()
    if type(config) not in transformers.AutoModelForCausalLM._model_mapping and not trust:
        raise InputError(f"{folder}: model_type {config.model_type!r} is not a causal language model transformers "
                         "can build (AutoModelForCausalLM)")
    try:
        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            str(folder), config=config, local_files_only=True, use_safetensors=fmt == "safetensors",
            weights_only=True, dtype=torch.float32, trust_remote_code=trust, output_loading_info=True)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt files and refused pickles surface as many kinds
        if "weights only load failed" in str(exc).lower() or "unsupported global" in str(exc).lower():
            raise InputError(f"{folder}: the pickled weights would build objects or run code when loaded; refused "
                             "(even with --trust, pickles are read with weights_only=True)") from None
        raise InputError(f"{folder}: the weights cannot be loaded ({_first_line(exc)})") from None
    missing = [k for k in info.get("missing_keys", []) if k]
    if missing:
        raise InputError(f"{folder}: the weights lack {len(missing)} tensors the architecture needs "
                         f"(first: {sorted(missing)[0]})")
    mismatched = info.get("mismatched_keys") or []
    if mismatched:
        raise InputError(f"{folder}: weights of the wrong shape for the config (first: {mismatched[0]})")
    return model.float().eval()


def attach_dataset_tokenizer(model: Any, info: Any, *, what: str) -> None:
    """Give ``model`` the tokenizer its data is encoded with; refuse data whose ids the model cannot embed, and a
    sequence length past the model's positions."""
    from workbench.core.lm.tokenizer import TextTokenizer

    vocab = int(info.vocab_size or 0)
    if vocab > model.vocab_size:
        raise InputError(f"{what}: the dataset's tokenizer has {vocab} tokens but the model's vocabulary has "
                         f"{model.vocab_size}: the tokenizer does not match the model (give the model's own with "
                         "tokenizer=DIR, or leave tokenizer= out to use the model folder's)")
    seq_len = int(info.input_shape[0])
    limit = model.max_positions
    if limit is not None and seq_len > limit:
        raise InputError(f"{what}: seq_len={seq_len} is longer than the model's {limit} positions; "
                         f"give the dataset a seq_len of at most {limit}")
    if info.tokenizer:
        tok = TextTokenizer.load(info.tokenizer)
        if model.tokenizer is None or model.tokenizer.fingerprint() != tok.fingerprint():
            model.tokenizer = tok


def _int(config: Any, key: str) -> int:
    try:
        value = getattr(config, key, None)
    except AttributeError:
        value = None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else type(exc).__name__)
