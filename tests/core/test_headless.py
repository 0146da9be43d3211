"""The core must import and run without Qt: batch mode and these tests never need a display."""

import subprocess
import sys

SCRIPT = r"""
import sys, importlib, pkgutil
for name in ("PySide6", "pyqtgraph", "superqt", "magicgui", "qtpy"):
    sys.modules[name] = None  # any import of them now raises ImportError
import workbench.core as core, workbench.plugin, workbench.cli
for info in pkgutil.walk_packages(core.__path__, "workbench.core."):
    importlib.import_module(info.name)
from workbench.cli import main
sys.exit(main(["--batch", "--model", "zoo:mlp:hidden=8", "--dataset", "digits:size=8",
               "--job", "train:epochs=1", "--out", sys.argv[1], "--quiet"]))
"""


def test_core_imports_and_runs_a_batch_without_qt(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "ws")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "ws" / "report.json").exists()


def test_listing_plugins_imports_neither_torch_nor_plugin_code():
    code = ("import sys; from workbench.cli import main; main(['--list-plugins']); "
            "bad = [m for m in ('torch', 'workbench_plugins.train', 'PySide6') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
