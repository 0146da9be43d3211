"""Guards the PySide6 pin: 6.12.0 on Python 3.11 aborts (none_dealloc) after many QLabel.setText calls."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import os
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtWidgets import QApplication, QLabel
app = QApplication([])
label = QLabel()
for i in range(20000):
    label.setText(str(i))
app.processEvents()
print(label.text())
"""


def test_many_settext_calls_do_not_abort() -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, f"PySide6 aborted (exit {done.returncode}): {done.stderr[-500:]}"
    assert done.stdout.strip().splitlines()[-1] == "19999"
