"""Batch mode through the installed command: exit codes, one-line errors, the report."""

import json
import os
import pickle

import pytest

from tests.conftest import run_cli

FAST = ["--model", "zoo:mlp:hidden=32", "--dataset", "digits:size=8"]


def _one_line_error(proc):
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert lines, "no error message"
    assert lines[-1].startswith("error: ")
    assert "Traceback" not in proc.stderr
    return lines[-1]


def test_version_and_listings():
    assert run_cli("--version").stdout.startswith("workbench ")
    plugins = run_cli("--list-plugins").stdout
    for job in ("train", "evaluate", "export"):
        assert job in plugins
    assert "seed_cnn" in run_cli("--list-models").stdout
    assert "digits" in run_cli("--list-datasets").stdout


def test_train_writes_report_markdown_and_plots(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("--batch", *FAST, "--job", "train:epochs=2", "--job", "evaluate", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert [s["job"] for s in report["steps"]] == ["train", "evaluate"]
    train, evaluate = report["steps"]
    assert train["parent"] == "v0001" and train["variant"] == "v0002" and evaluate["variant"] == "v0002"
    for key in ("accuracy", "loss", "params", "nonzero_params", "size_bytes", "macs", "latency_ms", "latency_torch_ms"):
        assert key in train["metrics"], key
    assert train["metrics"]["accuracy"] == evaluate["metrics"]["accuracy"]
    assert train["metrics"]["accuracy"] > 0.5
    assert (out / "report.md").read_text().count("| train |") == 1
    assert (out / "training_curves.png").stat().st_size > 1000
    assert (out / "plots" / "step1_train.png").exists()
    for name in ("model.onnx", "meta.json", "model.safetensors", "recipe.json"):
        assert (out / "variants" / "v0002" / name).exists()


def test_reopening_a_workspace_adds_variants(tmp_path):
    out = tmp_path / "ws"
    assert run_cli("--batch", *FAST, "--job", "train:epochs=1", "--out", str(out), "--quiet").returncode == 0
    proc = run_cli("--batch", "--dataset", "digits:size=8", "--job", "train:epochs=1", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["steps"][0]["parent"] == "v0002" and report["steps"][0]["variant"] == "v0003"


@pytest.mark.parametrize("args, fragment", [
    (["--model", "/no/such/model.onnx"], "no such file"),
    (["--model", "zoo:nosuchmodel"], "unknown model"),
    (["--model", "zoo:seed_cnn"], "seed_cnn needs images of at least"),  # digits:size=8 is too small
    (["--job", "nosuchjob"], "unknown job"),
    (["--job", "train:epochs=-1"], "below the minimum"),
    (["--job", "train:lr=abc"], "not a valid float"),
    (["--dataset", "nosuch"], "unknown dataset"),
    (["--device", "tpu"], "device"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, fragment):
    base = {"--model": "zoo:mlp:hidden=32", "--dataset": "digits:size=8", "--job": "train:epochs=1"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    proc = run_cli("--batch", *flat, "--out", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr
    assert fragment in _one_line_error(proc)


def test_corrupt_onnx_is_refused(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(os.urandom(2048))
    proc = run_cli("--batch", "--model", str(bad), "--dataset", "digits:size=8", "--job", "evaluate",
                   "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "ONNX" in _one_line_error(proc)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_pickle_does_not_run(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Evil(marker)))
    proc = run_cli("--batch", "--model", str(evil), "--dataset", "digits:size=8", "--job", "evaluate",
                   "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "refused" in _one_line_error(proc)
    assert not marker.exists()


def test_non_finite_loss_fails_the_step_with_exit_1(tmp_path):
    out = tmp_path / "o"
    proc = run_cli("--batch", *FAST, "--job", "train:epochs=2,lr=1e6,optimizer=sgd,diverge_factor=0", "--out", str(out))
    assert proc.returncode == 1
    assert "non-finite loss" in _one_line_error(proc)
    step = json.loads((out / "report.json").read_text())["steps"][-1]
    assert step["status"] == "failed" and "epoch 1" in step["error"]
    assert [p.name for p in (out / "variants").iterdir() if not p.name.startswith(".")] == ["v0001"]


def test_pipeline_file_and_flags_override(tmp_path):
    pipe = tmp_path / "p.toml"
    pipe.write_text('model = "zoo:mlp:hidden=32"\ndataset = "digits:size=8"\n[[step]]\njob = "train"\nepochs = 1\n'
                    '[[step]]\njob = "evaluate"\n')
    out = tmp_path / "o"
    proc = run_cli("--batch", "--pipeline", str(pipe), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [s["job"] for s in report["steps"]] == ["train", "evaluate"]
    assert report["steps"][0]["params"]["epochs"] == 1
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "zoo:mlp"\nbogus = 1\n')
    proc = run_cli("--batch", "--pipeline", str(bad), "--out", str(tmp_path / "o2"))
    assert proc.returncode == 2 and "unknown key 'bogus'" in _one_line_error(proc)


def test_a_reader_that_stops_early_is_not_an_error():
    """``workbench --list-models | grep -q x``: the closed pipe once printed 'error: BrokenPipeError'."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "workbench"
    proc = subprocess.Popen([str(exe), "--list-models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the listing is written
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and err.decode().strip() == "", err.decode()
