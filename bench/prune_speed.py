"""Measured latency against structured pruning ratio, beside the MAC ratio, so the gap between the two shows.

    python bench/prune_speed.py [--model resnet18] [--width 1.0] [--size 32] [--batch 64] [--device cpu]
                                [--ratios 0,0.25,0.5,0.75] [--importance l1]

Each ratio prunes a fresh copy of the same (randomly initialised, seeded) model with the prune job's own code
(Torch-Pruning, uniform scope, the classifier kept), exports it to ONNX (verified), and times one batch through
onnxruntime and through PyTorch with the same timers the report uses. Ratios are relative to the unpruned model
measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

from workbench.core.execution.session import resolve_device
from workbench.core.models import build_zoo_model
from workbench.core.variants.export import export_onnx
from workbench.core.variants.measure import count_macs, count_params, latency_onnx_ms, latency_torch_ms
from workbench_plugins import _pruning as P


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18", help="zoo model name (image models)")
    ap.add_argument("--width", type=float, default=1.0, help="zoo width multiplier")
    ap.add_argument("--size", type=int, default=32, help="input height and width (3 channels)")
    ap.add_argument("--batch", type=int, default=64, help="batch size timed")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--ratios", default="0,0.25,0.5,0.75", help="structured pruning ratios")
    ap.add_argument("--importance", default="l1", choices=P.IMPORTANCES[:2], help="channel ranking")
    return ap.parse_args(argv)


def measure(model: torch.nn.Module, batch: torch.Tensor, device: str, folder: Path) -> dict[str, float]:
    """Params, MACs and median latency (onnxruntime, torch) of one model on ``device``."""
    path = folder / "model.onnx"
    export_onnx(model.cpu().eval(), batch[:2], path, verify_batches=[batch[:8]])
    params, _ = count_params(model)
    macs = count_macs(model, batch)
    onnx_ms = latency_onnx_ms(path, batch, device)
    torch_ms = latency_torch_ms(model.to(device), batch, device)
    return {"params": params, "macs": macs, "onnx_ms": onnx_ms, "torch_ms": torch_ms}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    ratios = [float(r) for r in args.ratios.split(",")]
    torch.manual_seed(0)
    shape = (3, args.size, args.size)
    base = build_zoo_model(args.model, shape, 10, {"width": args.width}).eval()
    batch = torch.rand(args.batch, *shape)
    example = batch[:2]
    print(f"{args.model} width={args.width:g}, input {shape}, batch {args.batch}, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in ratios:
            model = copy.deepcopy(base)
            if ratio > 0:
                pruner, _ = P.build_pruner(model, example, args.importance, ignore=["classifier"],
                                           default_ignore=["classifier"], amount=ratio)
                pruner.step()
            start = time.perf_counter()
            rows.append((ratio, measure(model, batch, device, Path(tmp))))
            print(f"  measured ratio {ratio:g} in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
    ref = rows[0][1]
    header = f"{'ratio':>6} {'params':>10} {'params x':>8} {'MACs x':>7} {'ORT ms':>9} {'ORT x':>6} " \
             f"{'torch ms':>9} {'torch x':>7}"
    print(header)
    print("-" * len(header))
    for ratio, m in rows:
        print(f"{ratio:>6.2f} {m['params']:>10,} {m['params'] / ref['params']:>8.3f} {m['macs'] / ref['macs']:>7.3f} "
              f"{m['onnx_ms']:>9.2f} {m['onnx_ms'] / ref['onnx_ms']:>6.3f} "
              f"{m['torch_ms']:>9.2f} {m['torch_ms'] / ref['torch_ms']:>7.3f}")
    print("x = relative to ratio 0 in this run; latency is the median of timed batches after warm-up.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
