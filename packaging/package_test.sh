#!/usr/bin/env bash
# Check what `make package` built, the way a user on a clean machine would meet it:
#   1. the wheel in a fresh virtual environment (no editable install, no repo on sys.path, its own site-packages):
#      --version, the built-in plugins, the packaged resources, the pytest plugin, --batch on the demo (1 epoch),
#      and --smoke-test (the window offscreen, one training epoch through the job panel);
#   2. the PyInstaller bundle, run with an emptied environment: the same --version, plugins, --batch, --smoke-test.
#
#   packaging/package_test.sh [wheel|bundle]...     (default: both)
# Env: PYTHON (interpreter for the fresh venv, default python3), PACKAGE_TEST_DIR (default build/package-test),
#      PACKAGE_TEST_REUSE_VENV=1 (reinstall only the wheel into the last run's venv: minutes faster, not clean).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
WORK="${PACKAGE_TEST_DIR:-$ROOT/build/package-test}"
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(wheel bundle)
DEMO=(--batch --model zoo:seed_cnn --dataset digits --job train:epochs=1 --seed 0 --quiet --json)
BUILTINS=(train evaluate export prune prune_sensitivity quantize distill fuse)

fail() { echo "package-test FAILED: $*" >&2; exit 1; }
step() { echo "== $* ($(date +%T))"; }
seconds_since() { echo $(( $(date +%s) - $1 )); }

# A workbench command run the way a clean machine would: from an empty folder, nothing of ours in the environment.
clean_run() {
    local home="$WORK/home"
    mkdir -p "$home" "$WORK/cwd"
    (cd "$WORK/cwd" && env -i HOME="$home" PATH="/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8 \
        QT_QPA_PLATFORM=offscreen XDG_RUNTIME_DIR="$home" "$@")
}

check_cli() {  # $1: the workbench executable
    local exe="$1" out
    out="$(clean_run "$exe" --version)" || fail "$exe --version exited $?"
    [ "$out" = "workbench $(sed -n 's/^__version__ = "\(.*\)"/\1/p' workbench/__init__.py)" ] \
        || fail "$exe --version printed '$out'"
    echo "   --version: $out"
    out="$(clean_run "$exe" --list-plugins)" || fail "$exe --list-plugins exited $?"
    for job in "${BUILTINS[@]}"; do
        grep -Eq "^$job +.*built-in" <<<"$out" || fail "built-in job $job missing from --list-plugins:
$out"
    done
    echo "   --list-plugins: ${#BUILTINS[@]} built-in jobs"
    local t0; t0=$(date +%s)
    rm -rf "$WORK/demo"
    clean_run "$exe" "${DEMO[@]}" --out "$WORK/demo" >"$WORK/demo.json" || fail "$exe --batch exited $?"
    "$PYTHON" - "$WORK/demo.json" <<'EOF' || fail "--batch report is wrong: $(head -c 400 "$WORK/demo.json")"
import json, sys
report = json.load(open(sys.argv[1]))
(step,) = report["steps"]
assert step["job"] == "train" and step["status"] == "ok", step
assert 0.0 <= step["metrics"]["accuracy"] <= 1.0 and step["metrics"]["size_bytes"] > 0, step["metrics"]
print(f"   --batch demo: train 1 epoch ok, accuracy {step['metrics']['accuracy']:.3f}")
EOF
    [ -s "$WORK/demo/report.md" ] || fail "--batch wrote no report.md"
    echo "   --batch took $(seconds_since "$t0") s"
    t0=$(date +%s)
    out="$(clean_run "$exe" --smoke-test 2>&1)" || fail "$exe --smoke-test: $(tail -3 <<<"$out")"
    echo "   $(grep 'smoke test passed' <<<"$out") (total $(seconds_since "$t0") s)"
}

test_wheel() {
    local wheel venv t0
    wheel="$(ls -t dist/workbench_nn-*.whl 2>/dev/null | head -1)"
    [ -n "$wheel" ] || fail "no wheel in dist/ (run make package)"
    step "wheel $wheel in a fresh venv"
    venv="$WORK/venv"
    t0=$(date +%s)
    if [ "${PACKAGE_TEST_REUSE_VENV:-0}" = 1 ] && [ -x "$venv/bin/workbench" ]; then
        "$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
    else
        rm -rf "$venv"
        env -u PYTHONPATH -u VIRTUAL_ENV "$PYTHON" -m venv "$venv"
        env -u PYTHONPATH -u VIRTUAL_ENV "$venv/bin/python" -m pip install -q "$wheel" 2>&1 \
            | grep -v "is ignored: it is neither" || true
    fi
    "$venv/bin/python" -c "import workbench" 2>/dev/null || fail "pip install $wheel failed"
    echo "   fresh venv + pip install: $(seconds_since "$t0") s, $(du -sh "$venv" | cut -f1)"
    clean_run "$venv/bin/python" - <<'EOF' || fail "the installed wheel is incomplete"
import importlib.metadata as md
import workbench, workbench_plugins
from workbench.paths import resources_dir
res = resources_dir()
assert "site-packages" in workbench.__file__ and "site-packages" in workbench_plugins.__file__, workbench.__file__
assert res.parent.name == "workbench" and "site-packages" in str(res), res
for name in ("themes/light.qss", "themes/dark.qss", "icons/workbench.svg", "icons/workbench-256.png"):
    assert (res / name).is_file(), f"resource {name} missing"
assert list(res.glob("pipelines/*.toml")), "no example pipelines"
assert any(ep.value == "workbench.testing.fixtures" for ep in md.entry_points(group="pytest11")), "pytest plugin"
from pathlib import Path
assert (Path(workbench.__file__).parent / "testing" / "fixtures.py").is_file(), "the pytest plugin is missing"
print("   installed from site-packages: resources, built-in plugins and the pytest plugin present")
EOF
    check_cli "$venv/bin/workbench"
}

test_bundle() {
    local exe="$ROOT/dist/workbench/workbench"
    [ -x "$exe" ] || fail "no bundle at dist/workbench (run make package)"
    step "bundle dist/workbench ($(du -sh dist/workbench | cut -f1))"
    check_cli "$exe"
}

mkdir -p "$WORK"
START=$(date +%s)
for s in "${STEPS[@]}"; do
    case "$s" in
        wheel) test_wheel ;;
        bundle) test_bundle ;;
        *) fail "unknown step $s (wheel, bundle)" ;;
    esac
done
rm -rf "$WORK/demo" "$WORK/cwd" "$WORK/home"
echo "package-test passed: ${STEPS[*]} in $(seconds_since "$START") s"
