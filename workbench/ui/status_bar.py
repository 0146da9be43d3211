"""The status bar: device, memory in use (GPU memory on CUDA), and the running job."""

from __future__ import annotations

import os
import sys
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QStatusBar, QWidget


def process_memory_mb() -> float:
    """Resident memory of this process, read from /proc where it exists (no psutil needed)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def memory_text(device: str) -> str:
    torch = sys.modules.get("torch")  # never import torch from the GUI thread just to show a number
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        used = torch.cuda.memory_allocated(torch.device(device)) / 2**20
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**20
        return f"GPU {used:.0f} / {total:.0f} MB"
    return f"RAM {process_memory_mb():.0f} MB"


class StatusBar(QStatusBar):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.device = QLabel("device: -")
        self.device.setObjectName("statusDevice")
        self.memory = QLabel("")
        self.memory.setObjectName("statusMemory")
        self.job = QLabel("idle")
        self.job.setObjectName("statusJob")
        for label in (self.job, self.device, self.memory):
            self.addPermanentWidget(label)
        self._device = "cpu"
        self._timer = QTimer(self)
        self._timer.setInterval(2000)
        self._timer.timeout.connect(self.update_memory)
        self._timer.start()
        self.update_memory()

    def set_device(self, device: str) -> None:
        self._device = device
        self.device.setText(f"device: {device}")
        self.update_memory()

    def update_memory(self) -> None:
        self.memory.setText(memory_text(self._device))

    def on_event(self, event: Any, queued: int) -> None:
        if event.kind == "started":
            self.job.setText(f"running {event.job} #{event.run_id}" + (f" (+{queued} queued)" if queued else ""))
        elif event.kind == "finished":
            self.job.setText(f"{event.job} #{event.run_id} {event.data.get('status')}"
                             + (f", {queued} queued" if queued else ""))
