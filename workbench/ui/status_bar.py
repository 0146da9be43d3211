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


def gpu_memory_text(torch: Any, device: str) -> str | None:
    """Memory in use on the whole GPU, as nvidia-smi counts it: this process's PyTorch cache, onnxruntime's
    arena and the ranks of a multi-process job alike (PyTorch's own counter sees only the first). From the
    driver once this process uses CUDA, else from NVML; None when neither can tell without this process
    creating a CUDA context just to show a number."""
    index = torch.device(device).index or 0
    try:
        if torch.cuda.is_initialized():
            free, total = torch.cuda.mem_get_info(index)
            return f"GPU {(total - free) / 2**20:.0f} / {total / 2**20:.0f} MB"
        return f"GPU {torch.cuda.device_memory_used(index) / 2**20:.0f} MB"  # NVML (nvidia-ml-py): no context
    except Exception:  # noqa: BLE001 - no NVML library, a driver error: the status bar shows RAM instead
        return None


def memory_text(device: str) -> str:
    torch = sys.modules.get("torch")  # never import torch from the GUI thread just to show a number
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        text = gpu_memory_text(torch, device)
        if text is not None:
            return text
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
