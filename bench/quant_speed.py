"""fp32 vs int8 (each format and type) latency and size through onnxruntime, as ratios measured in one run.

    .venv/bin/python bench/quant_speed.py [--threads 2] [--full-width]

Models: zoo resnet18 (width 0.5 by default, to keep the run to a few minutes on 2 cores; --full-width for 1.0)
and mobilenet_v2, 1-channel inputs at 28x28 and 64x64, batches 1 and 64. Weights are untrained and the inputs
random: only speed and size are compared here (accuracy is the quantize job's business). Ratios below 1.0 mean
int8 is faster/smaller than fp32.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from workbench.core.models.zoo import build_zoo_model
from workbench.core.variants.export import export_onnx
from workbench_plugins import _quant_ort as qo
from workbench_plugins._quant_ort import Candidate

FORMATS = [Candidate("static", "qdq", "uint8", "int8", False), Candidate("static", "qdq", "int8", "int8", False),
           Candidate("static", "qoperator", "uint8", "int8", False),
           Candidate("static", "qoperator", "int8", "int8", False)]


def make_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-width", action="store_true", help="resnet18 at width 1.0 (slow on 2 cores)")
    args = parser.parse_args()
    width = 1.0 if args.full_width else 0.5
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(f"onnxruntime CPU, {args.threads} threads; resnet18 width {width}; ratio = int8 / fp32 "
          "(latency median of a few runs; 'x' = gave up after one run over 4x fp32)")
    header = f"{'model':<22}{'input':>7}{'batch':>6}{'fp32 ms':>9}{'fp32 MB':>9}  " + "  ".join(
        f"{c.label:>16}" for c in FORMATS)
    print(header)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, options in (("resnet18", {"width": width}), ("mobilenet_v2", {})):
            for side in (28, 64):
                model = build_zoo_model(name, (1, side, side), 10, options).eval()
                example = torch.rand(2, 1, side, side)
                fp32 = export_onnx(model, example, work / "fp32.onnx").path
                pre, _ = qo.preprocess(fp32, work / "pre.onnx")
                calib = [rng.random((16, 1, side, side), dtype=np.float32) for _ in range(2)]
                paths = []
                for i, cand in enumerate(FORMATS):
                    paths.append(qo.quantize(pre, work / f"q{i}.onnx", cand, calib))
                size = qo.file_size(fp32)
                for batch in (1, 64):
                    x = rng.random((batch, 1, side, side), dtype=np.float32)
                    base = qo.latency_ms(make_session(fp32, args.threads), x, budget_s=0.5, max_runs=7)
                    cells = []
                    for path in paths:
                        ms = qo.latency_ms(make_session(path, args.threads), x, give_up_above_ms=4 * base,
                                           budget_s=0.5, max_runs=7)
                        ratio = ms / base
                        flag = "x" if ratio > 4 else " "
                        cells.append(f"{ratio:5.2f}t{flag} {qo.file_size(path) / size:4.2f}s")
                    label = f"{name}" + (f" w{width}" if name == "resnet18" else "")
                    print(f"{label:<22}{side:>5}px{batch:>6}{base:>9.1f}{size / 1e6:>9.2f}  "
                          + "  ".join(f"{c:>16}" for c in cells), flush=True)
    print(f"(t = latency ratio, s = size ratio; {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
