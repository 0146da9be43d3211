"""The foundation's bar, end to end through the command: seed_cnn on digits, 15 epochs, >= 0.97, deterministic,
and the saved variant reproduces its accuracy when evaluated from its folder."""

import json

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_seed_cnn_reaches_the_bar_deterministically_and_reloads(tmp_path):
    reports = []
    for name in ("a", "b"):
        proc = run_cli("--batch", "--model", "zoo:seed_cnn", "--dataset", "digits", "--job", "train:epochs=15",
                       "--seed", "0", "--out", str(tmp_path / name), "--quiet", timeout=900)
        assert proc.returncode == 0, proc.stderr
        reports.append(json.loads((tmp_path / name / "report.json").read_text()))
    first, second = (r["steps"][-1]["metrics"] for r in reports)
    assert first["accuracy"] >= 0.97
    assert first["accuracy"] == second["accuracy"] and first["loss"] == second["loss"]
    variant = reports[0]["steps"][-1]["variant"]
    proc = run_cli("--batch", "--model", str(tmp_path / "a" / "variants" / variant), "--dataset", "digits",
                   "--job", "evaluate", "--out", str(tmp_path / "c"), "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads((tmp_path / "c" / "report.json").read_text())["steps"][-1]["metrics"]
    assert evaluated["accuracy"] == first["accuracy"]
