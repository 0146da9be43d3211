"""GUI responsiveness while a job trains: gaps between ticks of a 5 ms QTimer, from the job's start to its end.

    python bench/ui_latency.py [--model zoo:seed_cnn] [--dataset digits] [--epochs 3]

Targets: largest gap at most 50 ms, p99 at most 16 ms. Also prints the same figures for an idle window (the
machine's own noise floor), measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def measure(app: QApplication, until, limit_s: float) -> list[float]:  # noqa: ANN001
    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    timer.start()
    deadline = time.perf_counter() + limit_s
    while not until() and time.perf_counter() < deadline:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
    timer.stop()
    return sorted(gaps)


def figures(gaps: list[float]) -> tuple[float, float]:
    if not gaps:
        return float("nan"), float("nan")
    return gaps[-1] * 1000, gaps[int(0.99 * (len(gaps) - 1))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:seed_cnn")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    from workbench.app import create_main_window

    with tempfile.TemporaryDirectory() as tmp:
        w = create_main_window(workspace=os.path.join(tmp, "ws"), model=args.model, dataset=args.dataset)
        w.show()
        ready = measure(app, lambda: w.controller.session is not None and len(w.variants) == 1, 300)
        if w.controller.session is None:
            print("the model did not load", file=sys.stderr)
            return 1
        idle = measure(app, lambda: False, 1.0)
        w.job_panel.select_job("train")
        w.job_panel.form.editors["epochs"].setValue(args.epochs)
        started = [False]
        w.controller.job_event.connect(lambda e: started.__setitem__(0, started[0] or e.kind == "started"))
        w.job_panel.run_button.click()
        measure(app, lambda: started[0], 60)
        busy = measure(app, lambda: not w.controller.busy(), 600)
        measure(app, lambda: len(w.variants) == 2, 30)  # the new variant's row arrives as a queued signal
        ok = len(w.variants) == 2
        w.controller.shutdown(wait=True)
        w.close()
    for name, gaps in (("loading the model", ready), ("idle", idle), ("training", busy)):
        mx, p99 = figures(gaps)
        print(f"{name:18s}: loop gap max {mx:6.1f} ms, p99 {p99:5.1f} ms over {len(gaps)} ticks")
    mx, p99 = figures(busy)
    verdict = "OK" if mx <= 50 and p99 <= 16 else "OVER TARGET"
    print(f"ui_latency: training max {mx:.1f} ms (target <= 50), p99 {p99:.1f} ms (target <= 16): {verdict}; "
          f"cpu cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; variant added: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
