"""``make bench``: run every benchmark in bench/ and rewrite bench/RESULTS.md with the figures, date and machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py", "screenshots.py", "graph_screenshot.py", "graph_diff_screenshot.py"}
GPU_SECTION = "## GPU"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} logical cores, GPU: {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def main() -> int:
    results = HERE / "RESULTS.md"
    old = results.read_text() if results.exists() else ""
    gpu_part = old[old.index(GPU_SECTION):] if GPU_SECTION in old else ""
    lines = ["# Benchmark results", "", f"Written by `make bench` on {dt.date.today().isoformat()}.", "",
             f"Machine: {machine()}", ""]
    status = 0
    for script in sorted(HERE.glob("*.py")):
        if script.name in SKIP:
            continue
        print(f"== {script.name}", flush=True)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
        out = (proc.stdout.strip() or "(no output)") + (f"\n[exit {proc.returncode}] {proc.stderr.strip()[-500:]}"
                                                           if proc.returncode else "")
        print(out, flush=True)
        status |= proc.returncode != 0
        lines += [f"## {script.stem}", "", "```", out, "```", ""]
    if gpu_part:
        lines.append(gpu_part.rstrip() + "\n")
    results.write_text("\n".join(lines))
    print(f"wrote {results}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
