"""Hostile and broken inputs: each gives one clear error, runs no code and touches no file outside the workspace.

Each case of ``cases.HOSTILE`` has a builder here that writes its files into a fresh folder and returns either
CLI flags (run through the real ``workbench --batch``) or a library call.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import resource
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reliability.builders import idx_bytes, snapshot, tiny_onnx, workbench, write_mnist
from tests.reliability.cases import HOSTILE, Case
from workbench.core.errors import InputError

Attempt = list[str] | Callable[[], object]
BUILDERS: dict[str, Callable[[Path], Attempt]] = {}
MARKER = "PWNED"


def builder(case_id: str):
    def register(fn: Callable[[Path], Attempt]) -> Callable[[Path], Attempt]:
        BUILDERS[case_id] = fn
        return fn
    return register


def _model(path: Path) -> Callable[[], object]:
    from workbench.core.models.loading import load_model_file

    return lambda: load_model_file(path)


def _weights(path: Path) -> Callable[[], object]:
    from workbench.core.models import build_zoo_model
    from workbench.core.models.loading import load_weights

    return lambda: load_weights(build_zoo_model("mlp", (1, 8, 8), 10, {"hidden": 8}), path)


def _dataset(spec: str) -> Callable[[], object]:
    from workbench.core.data import load_dataset

    return lambda: load_dataset(spec, download=False)


def _pipeline(path: Path) -> Callable[[], object]:
    from workbench.core.pipeline import load_pipeline_file, validate_steps

    return lambda: validate_steps(load_pipeline_file(path).steps)


def _job(flag: str) -> Callable[[], object]:
    from workbench.core.pipeline import parse_job_flag, validate_steps

    return lambda: validate_steps([parse_job_flag(flag)])


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pt(d: Path) -> Path:
    (d / "evil.pt").write_bytes(pickle.dumps(_Evil(d / MARKER)))
    return d / "evil.pt"


def _safetensors(d: Path) -> bytes:
    from safetensors.torch import save_file

    from workbench.core.models import build_zoo_model

    save_file(build_zoo_model("mlp", (1, 8, 8), 10, {"hidden": 8}).state_dict(), str(d / "good.safetensors"))
    return (d / "good.safetensors").read_bytes()


def _safetensors_header(d: Path, edit: Callable[[dict], None]) -> Path:
    data = _safetensors(d)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    edit(header[next(k for k in header if k != "__metadata__")])
    text = json.dumps(header).encode()
    (d / "bad.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    return d / "bad.safetensors"


def _write(d: Path, name: str, data: bytes | str) -> Path:
    path = d / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _pt2(d: Path) -> bytes:
    model = torch.nn.Linear(4, 2)
    torch.export.save(torch.export.export(model, (torch.rand(1, 4),)), d / "good.pt2")
    return (d / "good.pt2").read_bytes()


def _image_folder(d: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (d / "img" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(d / "img" / cls / f"{i}.png")
    return d / "img"


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
            + chunk(b"IEND", b""))


# model files ------------------------------------------------------------------------------------------------
builder("pt_pickle_runs_code")(lambda d: ["--model", str(_evil_pt(d))])
builder("pt_pickle_as_weights")(lambda d: _weights(_evil_pt(d)))
# seeded: from os.urandom, about one file in a few hundred began with bytes that parse as a pickle naming a global
# ('c' + a module line), and was then refused as a hostile pickle rather than as garbage (a fresh clone hit it)
builder("pt_garbage")(lambda d: _model(_write(d, "g.pt", random.Random(0).randbytes(256))))
builder("pt2_garbage")(lambda d: ["--model", str(_write(d, "g.pt2", os.urandom(300)))])
builder("pt2_truncated")(lambda d: _model(_write(d, "t.pt2", _pt2(d)[:1000])))
builder("safetensors_header_len_huge")(lambda d: [
    "--model", "zoo:mlp", "--weights", str(_write(d, "bad.safetensors", struct.pack("<Q", 2**62) + _safetensors(d)[8:]))])
builder("safetensors_header_len_short")(
    lambda d: _weights(_write(d, "bad.safetensors", struct.pack("<Q", 5) + _safetensors(d)[8:])))
builder("safetensors_truncated")(lambda d: _weights(_write(d, "bad.safetensors", _safetensors(d)[:-10])))
builder("safetensors_bad_offsets")(
    lambda d: _weights(_safetensors_header(d, lambda t: t.update(data_offsets=[0, 10**12]))))
builder("safetensors_absurd_shape")(
    lambda d: _weights(_safetensors_header(d, lambda t: t.update(shape=[10**6, 10**6], data_offsets=[0, 4]))))
builder("onnx_garbage")(lambda d: _model(_write(d, "g.onnx", os.urandom(500))))
builder("onnx_truncated")(
    lambda d: _model(_write(d, "t.onnx", tiny_onnx(d / "full.onnx", weight_dims=(64, 10)).read_bytes()[:1400])))
builder("onnx_empty")(lambda d: _model(_write(d, "e.onnx", b"")))


def _outside(d: Path) -> Path:
    (d / "outside").mkdir()
    return _write(d / "outside", "secret.bin", np.ones(4, np.float32).tobytes())


def _external(d: Path, location: str, **extra: str) -> Path:
    (d / "model").mkdir(exist_ok=True)
    return tiny_onnx(d / "model" / "m.onnx", external={"location": location, **extra})


builder("onnx_external_dotdot")(lambda d: (_outside(d), ["--model", str(_external(d, "../outside/secret.bin"))])[1])
builder("onnx_external_absolute")(lambda d: _model(_external(d, str(_outside(d)))))


@builder("onnx_external_symlink")
def _symlink(d: Path) -> Attempt:
    (d / "model").mkdir()
    os.symlink(_outside(d), d / "model" / "w.bin")
    return _model(_external(d, "w.bin"))


builder("onnx_external_missing")(lambda d: _model(_external(d, "nothere.bin")))


@builder("onnx_external_too_long")
def _too_long(d: Path) -> Attempt:
    (d / "model").mkdir()
    (d / "model" / "w.bin").write_bytes(b"\0" * 64)
    path = tiny_onnx(d / "model" / "m.onnx", weight_dims=(10**6, 10**6), external={"location": "w.bin"})
    return _model(path)


builder("onnx_absurd_initializer")(lambda d: _model(tiny_onnx(d / "a.onnx", weight_dims=(10**6, 10**6),
                                                              raw=b"\0" * 16)))
builder("onnx_dims_overflow")(lambda d: _model(tiny_onnx(d / "a.onnx", weight_dims=(2**62, 2**62),
                                                         raw=b"\0" * 16)))


@builder("onnx_absurd_constant_of_shape")
def _constant_of_shape(d: Path) -> Attempt:
    from onnx import helper, numpy_helper

    shape = numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "shape")
    one = numpy_helper.from_array(np.array([1.0], np.float32))
    nodes = [helper.make_node("Constant", [], ["s"], value=shape),
             helper.make_node("ConstantOfShape", ["s"], ["big"], value=one),
             helper.make_node("Add", ["x", "big"], ["y"])]
    return _model(tiny_onnx(d / "c.onnx", weight_dims=(10**6, 1), nodes=nodes, out_dims=("a", "b")))


# datasets ---------------------------------------------------------------------------------------------------
@builder("folder_corrupt_image")
def _corrupt_image(d: Path) -> Attempt:
    root = _image_folder(d)
    _write(root / "a", "bad.png", b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    return _dataset(f"folder:{root}:size=8")


@builder("folder_truncated_image")
def _truncated_image(d: Path) -> Attempt:
    root = _image_folder(d)
    _write(root / "b", "cut.png", (root / "b" / "0.png").read_bytes()[:40])
    return _dataset(f"folder:{root}:size=8")


@builder("folder_decompression_bomb")
def _bomb(d: Path) -> Attempt:
    root = _image_folder(d)
    _write(root / "a", "bomb.png", _png_header_only(100_000, 100_000))
    return _dataset(f"folder:{root}:size=8")


def _spec(d: Path, kind: str, data: bytes | str) -> str:
    return f"{kind}:{_write(d, 'data.csv', data)}"


builder("csv_ragged")(lambda d: _dataset(_spec(d, "csv", "1,2,a\n3,b\n4,5,a\n")))
builder("csv_nan")(lambda d: _dataset(_spec(d, "csv", "1,2,a\n3,nan,b\n4,5,a\n")))
builder("csv_inf")(lambda d: _dataset(_spec(d, "csv", "1,2,a\n3,inf,b\n4,5,a\n")))
builder("csv_float32_overflow")(lambda d: _dataset(_spec(d, "csv", "1,2,a\n3,1e300,b\n4,5,a\n")))
builder("csv_not_a_number")(lambda d: _dataset(_spec(d, "csv", "1,2,a\n3,abc,b\n4,5,a\n")))
builder("csv_too_few_rows")(lambda d: _dataset(_spec(d, "csv", "1,2,a\n3,4,b\n")))
builder("text_invalid_utf8")(lambda d: ["--dataset", _spec(d, "text_csv", b"text,label\nhi \xff\xfe there,a\n")])
builder("text_ragged")(lambda d: _dataset(_spec(d, "text_csv", "hello,a\nbye\nhi,b\n")))


@builder("idx_truncated")
def _idx_truncated(d: Path) -> Attempt:
    root = write_mnist(d / "mnist")
    path = root / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    return _dataset(f"mnist:{root}")


@builder("idx_bad_magic")
def _idx_magic(d: Path) -> Attempt:
    root = write_mnist(d / "mnist")
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(0x803, (1, 1, 1), b"\0"))
    return _dataset(f"mnist:{root}")


# pipelines and job parameters ---------------------------------------------------------------------------------
builder("pipeline_unknown_key")(
    lambda d: ["--pipeline", str(_write(d, "p.toml", 'modle = "zoo:mlp"\n[[step]]\njob = "evaluate"\n'))])
builder("pipeline_wrong_type")(lambda d: _pipeline(_write(d, "p.toml", 'seed = "zero"\n')))
builder("pipeline_not_toml")(lambda d: _pipeline(_write(d, "p.toml", "[[step]\njob = train\n")))
builder("pipeline_invalid_utf8")(lambda d: _pipeline(_write(d, "p.toml", b'model = "\xff\xfe"\n')))
builder("pipeline_step_without_job")(lambda d: _pipeline(_write(d, "p.toml", "[[step]]\nepochs = 3\n")))
builder("pipeline_step_unknown_param")(
    lambda d: _pipeline(_write(d, "p.toml", '[[step]]\njob = "train"\nepochz = 3\n')))
builder("pipeline_step_wrong_type")(
    lambda d: _pipeline(_write(d, "p.toml", '[[step]]\njob = "train"\nepochs = [1, 2]\n')))
builder("param_below_min")(lambda d: ["--job", "train:epochs=0"])
builder("param_above_max")(lambda d: _job("train:lr=1e9"))
builder("param_nan")(lambda d: _job("train:lr=nan"))
builder("param_bad_choice")(lambda d: _job("train:optimizer=magic"))
builder("param_not_kv")(lambda d: _job("train:epochs"))
builder("job_unknown")(lambda d: _job("nosuchjob"))


def _keras_archive(d: Path, layer: dict, extra: dict[str, bytes] | None = None, link: str | None = None) -> Path:
    """A .keras zip written by hand (no Keras involved), its Sequential holding ``layer``."""
    import zipfile

    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "in"}},
        layer]}}
    path = d / "model.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", json.dumps(config))
        for name, data in (extra or {}).items():
            z.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16
            z.writestr(info, "/etc/passwd")
    return path


def _lambda_code(d: Path) -> str:
    import base64
    import marshal

    marker = str(d / MARKER)
    fn = eval(f"lambda t: (open({marker!r}, 'w').close(), t)[1]")  # noqa: S307 - the payload of a hostile file
    return base64.b64encode(marshal.dumps(fn.__code__)).decode()


@builder("keras_lambda_runs_code")
def _keras_lambda(d: Path) -> Attempt:
    layer = {"module": "keras.layers", "class_name": "Lambda", "config": {"name": "evil", "function": {
        "class_name": "__lambda__", "config": {"code": _lambda_code(d), "defaults": None, "closure": None}}}}
    return ["--model", str(_keras_archive(d, layer))]


@builder("keras_h5_lambda")
def _keras_h5_lambda(d: Path) -> Attempt:
    import h5py

    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Lambda", "config": {"name": "evil", "function": [_lambda_code(d), None, None],
                                            "function_type": "lambda"}}]}}
    path = d / "model.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
    return _model(path)


@builder("keras_custom_object")
def _keras_custom(d: Path) -> Attempt:
    return _model(_keras_archive(d, {"module": "evil.layers", "class_name": "Backdoor", "config": {"name": "bd"}}))


@builder("keras_archive_dotdot")
def _keras_dotdot(d: Path) -> Attempt:
    dense = {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 2}}
    return _model(_keras_archive(d, dense, {"../outside.txt": b"x"}))


@builder("keras_archive_symlink")
def _keras_symlink(d: Path) -> Attempt:
    dense = {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 2}}
    return _model(_keras_archive(d, dense, link="assets/passwd"))


@builder("keras_garbage")
def _keras_garbage(d: Path) -> Attempt:
    return _model(_write(d, "model.keras", np.random.default_rng(0).bytes(4096)))


def test_every_case_has_a_builder():
    assert sorted(BUILDERS) == sorted(c.id for c in HOSTILE)


LIBRARY = [c for c in HOSTILE if c.via == "library"]
CLI = [c for c in HOSTILE if c.via == "CLI"]


@pytest.mark.parametrize("case", LIBRARY, ids=[c.id for c in LIBRARY])
def test_hostile_input_library(case: Case, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    call = BUILDERS[case.id](files)
    assert callable(call)
    before = snapshot(tmp_path, tmp_path / "none")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError) as info:
        call()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mb < 200, f"refusing it took {grown_mb:.0f} MB more memory"
    message = str(info.value)
    assert re.search(case.match, message, re.IGNORECASE), message
    assert "\n" not in message
    assert not (files / MARKER).exists()
    assert snapshot(tmp_path, tmp_path / "none") == before


def _cli_args(flags: list[str], ws: Path) -> list[str]:
    args = ["--batch", "--device", "cpu", "--quiet", "--out", str(ws)]
    defaults = {"--model": "zoo:mlp:hidden=8", "--dataset": "digits:size=8", "--job": "evaluate"}
    for flag, value in defaults.items():
        if flag not in flags and "--pipeline" not in flags:
            args += [flag, value]
    return args + flags


@pytest.mark.parametrize("case", CLI, ids=[c.id for c in CLI])
def test_hostile_input_cli(case: Case, tmp_path: Path) -> None:
    """The real command: exit 2, exactly one line on stderr, no marker, nothing changed outside --out."""
    files, cwd, ws = tmp_path / "files", tmp_path / "cwd", tmp_path / "ws"
    files.mkdir()
    cwd.mkdir()
    flags = BUILDERS[case.id](files)
    assert isinstance(flags, list)
    before = snapshot(tmp_path, ws)
    proc = workbench(*_cli_args(flags, ws), cwd=cwd)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert re.search(case.match, lines[0], re.IGNORECASE), lines[0]
    assert not (files / MARKER).exists() and not (cwd / MARKER).exists()
    assert snapshot(tmp_path, ws) == before
