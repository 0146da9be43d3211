"""Time from process start to a shown main window (target: under 1.5 s; torch is loaded after the window shows).

    python bench/startup.py [--runs 3]

Each run is a fresh interpreter (imports are what start-up costs), after one warm-up run that writes the
byte-code caches an installed app has (PYTHONDONTWRITEBYTECODE is dropped for the child). Prints one line per
run and the best.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import os, sys, time
t0 = time.perf_counter()
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
app = QApplication([])
from workbench.app import create_main_window
w = create_main_window(workspace=sys.argv[1])
w.show()
torch_before_show = 'torch' in sys.modules
app.processEvents()
shown = time.perf_counter() - t0
print(f"{shown:.3f} {torch_before_show}", flush=True)
os._exit(0)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    times = []
    for i in range(-1, args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", CHILD, os.path.join(tmp, "ws")], capture_output=True,
                                 text=True, env=env, timeout=120)
        if out.returncode != 0 or not out.stdout.strip():
            print(out.stderr[-800:], file=sys.stderr)
            return 1
        seconds, torch_loaded = out.stdout.split()
        if i < 0:
            continue  # warm-up
        times.append(float(seconds))
        print(f"run {i + 1}: window shown after {float(seconds):.2f} s (torch imported on the GUI path: "
              f"{torch_loaded})")
    best = min(times)
    print(f"startup: best {best:.2f} s, median {sorted(times)[len(times) // 2]:.2f} s (target < 1.50 s) "
          f"{'OK' if best < 1.5 else 'SLOW'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
