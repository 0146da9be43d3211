"""Property-based fuzzing (hypothesis) of the model loaders, the dataset readers and the pipeline parser.

The property everywhere: any bytes or text give a clean result or an ``InputError``, never another exception
and never code run. Inputs are random bytes and mutations of valid files (byte flips, cuts, splices), so the
fuzzer gets past the first magic-number check. ``WORKBENCH_FUZZ_EXAMPLES`` sets the examples per target
(50 in ``make test``, 2000 in ``make fuzz``).
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.builders import idx_bytes, tiny_onnx
from tests.reliability.cases import FUZZ
from workbench.core.errors import InputError

FUZZ_SETTINGS = settings(max_examples=int(os.environ.get("WORKBENCH_FUZZ_EXAMPLES", 50)), deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """Valid files of each format, the starting points for mutations."""
    from safetensors.torch import save

    d = tmp_path_factory.mktemp("seeds")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    torch.export.save(torch.export.export(model, (torch.rand(1, 1, 8, 8),)), d / "m.pt2")
    torch.save(model.state_dict(), d / "m.pt")
    return {
        "onnx": tiny_onnx(d / "m.onnx", weight_dims=(4, 3)).read_bytes(),
        "pt2": (d / "m.pt2").read_bytes(),
        "pt": (d / "m.pt").read_bytes(),
        "pickle": pickle.dumps({"w": [1.0, 2.0]}, protocol=2),
        "safetensors": save(model.state_dict()),
        "idx": idx_bytes(0x803, (3, 2, 2), bytes(range(12))),
    }


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """A valid file with a few bytes overwritten, then maybe cut short or spliced with random bytes."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 8))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=64))
    return bytes(data)


def _fuzz_input(seeds: dict[str, bytes], key: str):
    return st.one_of(st.binary(max_size=512), mutated(seeds[key]))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _check_model_file(scratch: Path, name: str, data: bytes) -> None:
    from workbench.core.models.loading import load_model_file

    path = scratch / name
    path.write_bytes(data)
    try:
        model = load_model_file(path)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert model is not None


def test_every_fuzz_target_has_a_test():
    assert all(f"test_{c.id}" in globals() for c in FUZZ)


def test_fuzz_onnx(seeds, scratch):
    @FUZZ_SETTINGS
    @given(data=_fuzz_input(seeds, "onnx"))
    def run(data: bytes) -> None:
        _check_model_file(scratch, "f.onnx", data)

    run()


def test_fuzz_pt2(seeds, scratch):
    @FUZZ_SETTINGS
    @given(data=_fuzz_input(seeds, "pt2"))
    def run(data: bytes) -> None:
        _check_model_file(scratch, "f.pt2", data)

    run()


def test_fuzz_pt(seeds, scratch):
    """A .pt holds no architecture, so loading it as a model is always refused; what matters is how."""
    from workbench.core.models.loading import load_model_file

    @FUZZ_SETTINGS
    @given(data=st.one_of(_fuzz_input(seeds, "pt"), mutated(seeds["pickle"])))
    def run(data: bytes) -> None:
        path = scratch / "f.pt"
        path.write_bytes(data)
        with pytest.raises(InputError):
            load_model_file(path)

    run()


def test_fuzz_safetensors(seeds, scratch):
    from workbench.core.models.loading import load_weights

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    @FUZZ_SETTINGS
    @given(data=_fuzz_input(seeds, "safetensors"))
    def run(data: bytes) -> None:
        path = scratch / "f.safetensors"
        path.write_bytes(data)
        try:
            load_weights(model, path)
        except InputError:
            pass

    run()


def test_fuzz_idx(seeds, scratch):
    from workbench.core.data.idx import IMAGE_MAGIC, read_idx

    @FUZZ_SETTINGS
    @given(data=_fuzz_input(seeds, "idx"))
    def run(data: bytes) -> None:
        path = scratch / "f-idx3-ubyte"
        path.write_bytes(data)
        try:
            array = read_idx(path, IMAGE_MAGIC)
        except InputError:
            return
        assert array.ndim == 3 and array.size == len(data) - 16

    run()


_cells = st.one_of(st.integers(-5, 5).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["a", "b", "c", "", " ", '"', "x,y", "nan", "1e400"]),
                   st.text(max_size=6))


@st.composite
def csv_text(draw) -> bytes:
    """Mostly well-formed CSVs with a few ragged rows, odd cells and quotes; sometimes raw bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=256))
    width = draw(st.integers(1, 4))
    rows = []
    for _ in range(draw(st.integers(0, 14))):
        ragged = draw(st.integers(0, 9)) == 0
        n = draw(st.integers(0, 6)) if ragged else width
        cells = draw(st.lists(_cells, min_size=n, max_size=n))
        cells = cells[:-1] + [draw(st.sampled_from(["a", "b", "c"]))] if cells else cells
        rows.append(",".join(cells))
    return "\n".join(rows).encode("utf-8", "surrogatepass")


def _check_dataset(scratch: Path, kind: str, data: bytes) -> None:
    from workbench.core.data import load_dataset

    path = scratch / "f.csv"
    path.write_bytes(data)
    try:
        bundle = load_dataset(f"{kind}:{path}", download=False)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    for split in ("train", "val", "test"):
        x, y = bundle.tensors(split)
        assert len(x) == len(y)
        if x.is_floating_point():
            assert bool(torch.isfinite(x).all()), split


def test_fuzz_csv(scratch):
    @FUZZ_SETTINGS
    @given(data=csv_text())
    def run(data: bytes) -> None:
        _check_dataset(scratch, "csv", data)

    run()


def test_fuzz_text_csv(scratch):
    @FUZZ_SETTINGS
    @given(data=csv_text())
    def run(data: bytes) -> None:
        _check_dataset(scratch, "text_csv", data)

    run()


_toml_values = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True), st.booleans(),
                         st.text(max_size=8), st.lists(st.integers(-3, 3), max_size=3))


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


@st.composite
def pipeline_text(draw) -> bytes:
    """TOML pipelines with random keys, types and steps (train's real parameters among them); or raw bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=256))
    keys = st.sampled_from(["model", "dataset", "seed", "device", "bench_batch", "weights", "modle", "out"])
    lines = [f"{k} = {_toml(draw(_toml_values))}" for k in draw(st.lists(keys, max_size=4, unique=True))]
    params = st.sampled_from(["epochs", "lr", "optimizer", "batch_size", "freeze", "resume", "amount", "x"])
    for _ in range(draw(st.integers(0, 3))):
        lines.append("[[step]]")
        if draw(st.integers(0, 5)):
            lines.append(f"job = {_toml(draw(st.sampled_from(['train', 'evaluate', 'prune', 'nosuch', 3])))}")
        lines += [f"{k} = {_toml(draw(_toml_values))}" for k in draw(st.lists(params, max_size=3, unique=True))]
    return "\n".join(lines).encode()


def test_fuzz_pipeline(scratch):
    from workbench.core.pipeline import load_pipeline_file, validate_steps

    @FUZZ_SETTINGS
    @given(data=pipeline_text())
    def run(data: bytes) -> None:
        path = scratch / "p.toml"
        path.write_bytes(data)
        try:
            pipe = load_pipeline_file(path)
            typed = validate_steps(pipe.steps)
        except InputError as exc:
            assert "\n" not in str(exc).strip()
            return
        assert len(typed) == len(pipe.steps)
        assert isinstance(pipe.seed, int) and isinstance(pipe.bench_batch, int)

    run()


def test_fuzz_idx_control(tmp_path):
    """A control for the IDX property: a valid file reads back exactly."""
    from workbench.core.data.idx import IMAGE_MAGIC, read_idx

    data = np.arange(24, dtype=np.uint8)
    (tmp_path / "ok").write_bytes(idx_bytes(IMAGE_MAGIC, (2, 3, 4), data.tobytes()))
    assert (read_idx(tmp_path / "ok", IMAGE_MAGIC) == data.reshape(2, 3, 4)).all()
