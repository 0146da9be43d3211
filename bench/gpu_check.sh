#!/usr/bin/env bash
# The GPU check in one go, for a machine with CUDA (target: under 5 minutes on one H200):
#   1. a Python with CUDA torch and this project importable, offline (the device machine cannot download):
#      the repo's .venv if it sees a GPU, else the system python3 with `pip install --no-deps --target` of this
#      project (and of wheels in .whl/, if carried) into a folder put on PYTHONPATH;
#   2. the CUDA tests (tests/core/test_cuda.py: worker thread on cuda, AMP bf16/fp16, onnxruntime's CUDA
#      execution provider, torchrun + nccl with DDP and FSDP2);
#   3. GPU figures measured in the same run: train-job throughput fp32 vs bf16 vs fp16, batch-64 latency through
#      onnxruntime (CPU and CUDA providers) and PyTorch, and the launcher's cost (in-process vs one nccl rank).
# Writes the "## GPU" section of bench/RESULTS.md (the rest of the file is kept) and copies the log, the test
# report and RESULTS.md into $OUT (the device tool's folder of files that come back; bench/gpu_out otherwise).
#
#   bash bench/gpu_check.sh
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/bench/gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 QT_QPA_PLATFORM=offscreen
exec > >(tee "$OUT/gpu_check.log") 2>&1
T0=$(date +%s)
step() { echo "== [$(($(date +%s) - T0))s] $*"; }

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PY=""
for cand in "$ROOT/.venv/bin/python" "$(command -v python3)"; do
  if [ -x "$cand" ] && "$cand" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    PY="$cand"; break
  fi
done
[ -n "$PY" ] || { echo "no Python here has a CUDA build of torch"; exit 1; }
PLUGINS_FOUND="from importlib.metadata import entry_points; import workbench, workbench_plugins; \
assert any(e.name == 'train' for e in entry_points(group='workbench.plugins'))"
if ! "$PY" -c "$PLUGINS_FOUND" 2>/dev/null; then
  # The device image's python3 lives in a venv (/opt/torch/.venv): a venv made from it with
  # --system-site-packages would see the base interpreter's packages, not its torch. Install into a folder on
  # PYTHONPATH instead: the package, its entry points (how the runner finds the jobs) and any carried wheels.
  SITE=/tmp/wb-gpu-site
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl \
      || echo "warning: the carried wheels did not install"
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" . || exit 1
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "$PLUGINS_FOUND" || { echo "the workbench's jobs are not importable"; exit 1; }
fi
"$PY" - <<'EOF'
import onnxruntime, torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.device_count()} GPU(s): "
      f"{torch.cuda.get_device_name(0)}; onnxruntime {onnxruntime.__version__} {onnxruntime.get_available_providers()}")
EOF

step "CUDA tests"
timeout 170 "$PY" -m pytest -q -rs -p no:cacheprovider tests/core/test_cuda.py --junitxml "$OUT/cuda-tests.xml" \
  2>&1 | tee "$OUT/cuda-tests.txt"
TESTS_RC=${PIPESTATUS[0]}
TEST_SUMMARY=$(grep -E "passed|failed|skipped|error" "$OUT/cuda-tests.txt" | tail -1)
SKIPS=$(grep -E "^SKIPPED" "$OUT/cuda-tests.txt" || true)

step "GPU figures"
timeout 150 "$PY" - >"$OUT/gpu-figures.md" 2>"$OUT/gpu-figures.err" <<'EOF'
"""Figures printed as markdown; every ratio is between numbers measured in this same run."""
import os, tempfile, time
from pathlib import Path

import onnxruntime as ort
import torch

from workbench.core.batch import open_session
from workbench.core.distributed import LaunchingRegistry, LaunchOptions
from workbench.core.export import export_onnx
from workbench.core.jobs.runner import JobRequest, Runner
from workbench.core.variants.measure import bench_batch, latency_onnx_ms, latency_torch_ms
from workbench.core.models import build_zoo_model
from workbench.core.pipeline import Pipeline

tmp = Path(tempfile.mkdtemp())
dataset = "synthetic:kind=image,n=4096,classes=10,shape=3x32x32"


def train(amp="off", plugins=None, tag=""):
    pipe = Pipeline(model="zoo:resnet18:width=0.5", dataset=dataset, seed=0, device="cuda", out=str(tmp / f"ws{tag}"))
    session, root = open_session(pipe)
    runner = Runner(session, plugins=plugins)
    start = time.perf_counter()
    outcome = runner.run(JobRequest("train", {"epochs": 3, "batch_size": 256, "amp": amp}, root, "cuda"))
    wall = time.perf_counter() - start
    runner.shutdown()
    session.workspace.close()
    if outcome.status != "ok":
        return f"failed: {outcome.error}", 0.0, wall
    rates = [m["samples_per_s"] for _, m in outcome.history if "samples_per_s" in m]
    return outcome.metrics["accuracy"], sorted(rates)[len(rates) // 2], wall


print("### Train job on the GPU (resnet18 width 0.5, synthetic 3x32x32, batch 256, 3 epochs)\n")
print("| run | samples/s (median epoch) | vs fp32 | test accuracy | wall s (job incl. measuring) |")
print("| --- | --- | --- | --- | --- |")
base = None
for amp in ("off", "bf16", "fp16"):
    acc, rate, wall = train(amp, tag=amp)
    base = base or rate
    shown = f"{acc:.4f}" if isinstance(acc, float) else acc
    print(f"| amp={amp} | {rate:,.0f} | {rate / base:.2f}x | {shown} | {wall:.1f} |")
acc, rate, wall = train("off", LaunchingRegistry(options=LaunchOptions(launch_single=True)), "rank")
shown = f"{acc:.4f}" if isinstance(acc, float) else acc
print(f"| amp=off, one torchrun rank (nccl, DDP) | {rate:,.0f} | {rate / base:.2f}x | {shown} | {wall:.1f} |")

print("\n### Batch-64 latency, median ms (same timers as the report)\n")
print("| model | onnxruntime CPU EP | onnxruntime CUDA EP | PyTorch CUDA | PyTorch CUDA bf16 |")
print("| --- | --- | --- | --- | --- |")
cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
for spec, shape in (("resnet18", (3, 32, 32)), ("seed_cnn", (1, 28, 28)), ("mobilenet_v2", (3, 32, 32))):
    torch.manual_seed(0)
    model = build_zoo_model(spec, shape, 10).eval()
    batch = torch.randn(64, *shape)
    path = tmp / f"{spec}.onnx"
    export_onnx(model, batch[:2], path, verify_batches=[batch])
    cpu_ms = latency_onnx_ms(path, batch, "cpu")
    gpu_ms = f"{latency_onnx_ms(path, batch, 'cuda'):.3f}" if cuda_ep else "n/a (no onnxruntime-gpu)"
    torch_ms = latency_torch_ms(model.cuda(), batch, "cuda")
    bf16_ms = latency_torch_ms(model.to(torch.bfloat16), batch.to(torch.bfloat16), "cuda")
    print(f"| {spec} | {cpu_ms:.3f} | {gpu_ms} | {torch_ms:.3f} | {bf16_ms:.3f} |")
print(f"\nGPU memory peak in this process: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
EOF
FIG_RC=$?

step "bench/RESULTS.md"
{
  echo "## GPU"
  echo
  echo "Written by \`bench/gpu_check.sh\` on $(date -u +%Y-%m-%d) in $(($(date +%s) - T0)) s."
  echo
  echo "Machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1);" \
       "$(nproc) CPU cores; $("$PY" -c 'import torch, onnxruntime; print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")')"
  echo
  echo "CUDA tests (tests/core/test_cuda.py): ${TEST_SUMMARY:-no summary} (exit $TESTS_RC)"
  [ -n "$SKIPS" ] && { echo; echo '```'; echo "$SKIPS"; echo '```'; }
  echo
  if [ "$FIG_RC" -eq 0 ]; then cat "$OUT/gpu-figures.md"; else echo "GPU figures failed (exit $FIG_RC):"; echo '```'; tail -20 "$OUT/gpu-figures.err"; echo '```'; fi
} >"$OUT/gpu-section.md"
"$PY" - "$OUT/gpu-section.md" <<'EOF'
import sys
from pathlib import Path

results = Path("bench/RESULTS.md")
old = results.read_text() if results.exists() else "# Benchmark results\n"
head = old[:old.index("## GPU")] if "## GPU" in old else old.rstrip() + "\n\n"
results.write_text(head + Path(sys.argv[1]).read_text().rstrip() + "\n")
EOF
cp bench/RESULTS.md "$OUT/RESULTS.md"
cat "$OUT/gpu-section.md"
step "done"
[ "$TESTS_RC" -eq 0 ] && [ "$FIG_RC" -eq 0 ]
