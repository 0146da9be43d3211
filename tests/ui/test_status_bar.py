"""The status bar's memory figure: RAM on the CPU; on CUDA the whole GPU's use, never by creating a context."""

from types import SimpleNamespace

import torch

from workbench.ui import status_bar
from workbench.ui.status_bar import StatusBar, gpu_memory_text, memory_text


def _fake_torch(initialized: bool, nvml_error: Exception | None = None, calls: list | None = None):
    calls = calls if calls is not None else []

    def mem_get_info(index):
        calls.append(("mem_get_info", index))
        return 30 * 2**30, 140 * 2**30

    def device_memory_used(index):
        calls.append(("nvml", index))
        if nvml_error is not None:
            raise nvml_error
        return 5 * 2**30

    cuda = SimpleNamespace(is_initialized=lambda: initialized, mem_get_info=mem_get_info,
                           device_memory_used=device_memory_used)
    return SimpleNamespace(device=torch.device, cuda=cuda)


def test_a_process_using_cuda_shows_the_whole_device_from_the_driver():
    calls = []
    assert gpu_memory_text(_fake_torch(True, calls=calls), "cuda:1") == "GPU 112640 / 143360 MB"
    assert calls == [("mem_get_info", 1)]


def test_before_cuda_is_initialised_nvml_is_read_and_no_context_is_made():
    calls = []
    assert gpu_memory_text(_fake_torch(False, calls=calls), "cuda") == "GPU 5120 MB"
    assert calls == [("nvml", 0)]


def test_without_nvml_the_bar_falls_back_to_ram(monkeypatch):
    fake = _fake_torch(False, nvml_error=ModuleNotFoundError("pynvml"))
    assert gpu_memory_text(fake, "cuda") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(status_bar, "gpu_memory_text", lambda t, d: None)
    assert memory_text("cuda").startswith("RAM ")
    monkeypatch.setattr(status_bar, "gpu_memory_text", lambda t, d: "GPU 1 / 2 MB")
    assert memory_text("cuda") == "GPU 1 / 2 MB"
    assert memory_text("cpu").startswith("RAM ")


def test_the_label_follows_the_device(qtbot, monkeypatch):
    bar = StatusBar()
    qtbot.addWidget(bar)
    assert bar.memory.text().startswith("RAM ") and float(bar.memory.text().split()[1]) > 10
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(status_bar, "gpu_memory_text", lambda t, d: f"GPU 7 / 9 MB on {d}")
    bar.set_device("cuda:0")
    assert bar.device.text() == "device: cuda:0" and bar.memory.text() == "GPU 7 / 9 MB on cuda:0"
