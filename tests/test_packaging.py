"""Packaging: the wheel's contents, the PyInstaller spec's frozen-app wiring, the Linux desktop files and icons.

Fast checks only; `make package-test` builds and starts the real wheel and bundle.
"""

from __future__ import annotations

import configparser
import os
import runpy
import shutil
import struct
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from workbench import __version__

ROOT = Path(__file__).resolve().parents[1]
APP_ID = "io.github.workbench_nn.Workbench"
LINUX = ROOT / "packaging" / "linux"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def _sources(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """Build the wheel from a copy of the sources (offline, no build isolation), as `python -m build` would."""
    src = tmp_path_factory.mktemp("src")
    for name in ("workbench", "plugins", "resources"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "examples"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(out), str(src)], check=True, capture_output=True, timeout=300)
    (path,) = out.glob("workbench_nn-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def test_wheel_holds_the_app_plugins_resources_and_pytest_plugin(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for path in _sources(ROOT / "workbench"):
        if path.suffix == ".py":
            assert path.relative_to(ROOT).as_posix() in names, path
    for path in _sources(ROOT / "plugins"):
        if path.suffix == ".py" and "examples" not in path.parts:
            assert "workbench_plugins/" + path.relative_to(ROOT / "plugins").as_posix() in names, path
    resources = _sources(ROOT / "resources")
    assert any(p.suffix == ".qss" for p in resources) and any(p.suffix == ".png" for p in resources)
    for path in resources:  # every resource, in every subfolder, ships as workbench/resources/...
        assert "workbench/resources/" + path.relative_to(ROOT / "resources").as_posix() in names, path
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    eps = configparser.ConfigParser(interpolation=None)
    eps.read_string(wheel.read(entry_points).decode())
    assert eps["pytest11"]["workbench"] == "workbench.testing.fixtures"
    assert eps["console_scripts"]["workbench"] == "workbench.cli:main"
    from workbench_plugins import BUILTIN_JOBS

    assert dict(eps["workbench.plugins"]) == BUILTIN_JOBS  # the frozen fallback lists the same jobs


def test_resources_dir_prefers_the_packaged_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import workbench.paths as paths

    assert paths.resources_dir() == ROOT / "resources"  # a checkout
    assert paths.resource_path("themes", "light.qss").is_file()
    packaged = tmp_path / "workbench" / "resources"
    packaged.mkdir(parents=True)
    monkeypatch.setattr(paths, "_PACKAGE", tmp_path / "workbench")  # an installed wheel or a frozen bundle
    assert paths.resources_dir() == packaged
    assert paths.resource_path("icons", "workbench.svg") == packaged / "icons" / "workbench.svg"


class _Recorder:
    """Stands in for PyInstaller's Analysis/PYZ/EXE/COLLECT/BUNDLE and keeps what the spec passed."""

    calls: dict[str, tuple[tuple, dict]] = {}

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, *args: object, **kwargs: object) -> types.SimpleNamespace:
        _Recorder.calls[self.kind] = (args, kwargs)
        return types.SimpleNamespace(pure=[], scripts=[], binaries=[], datas=[])


def test_spec_registers_builtin_jobs_resources_and_entry_script(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = lambda package, filter=None: [f"{package}.collected"]  # noqa: A002
    for name in ("PyInstaller", "PyInstaller.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = ROOT / "packaging" / "pyinstaller" / "workbench.spec"
    names = {k: _Recorder(k) for k in ("Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE")}
    runpy.run_path(str(spec), init_globals={"SPECPATH": str(spec.parent), "workpath": str(tmp_path), **names})

    (scripts,), analysis = _Recorder.calls["Analysis"]
    assert scripts == [str(ROOT / "workbench" / "__main__.py")]
    assert (tmp_path / "src" / "workbench_plugins" / "train.py").is_file()  # found by folder name when frozen
    assert analysis["pathex"][0] == str(tmp_path / "src")
    from workbench_plugins import BUILTIN_JOBS

    for target in BUILTIN_JOBS.values():
        assert target.partition(":")[0] in analysis["hiddenimports"], target
    assert analysis["datas"] == [(str(ROOT / "resources"), "workbench/resources")]
    assert "pytest" in analysis["excludes"]
    _args, exe = _Recorder.calls["EXE"]
    assert exe["name"] == "workbench" and exe["console"] is True and exe["upx"] is False
    assert "freeze_support()" in (ROOT / "workbench" / "__main__.py").read_text()


def test_frozen_registry_finds_builtin_jobs_without_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata as md

    from workbench.core.jobs.registry import Registry
    from workbench_plugins import BUILTIN_JOBS

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(md, "entry_points", lambda **_kw: [])  # a bundle may carry no distribution metadata
    reg = Registry()
    assert {p.job: p.origin for p in reg.plugins()} == dict.fromkeys(BUILTIN_JOBS, "built-in")
    assert reg.load("evaluate").name == "evaluate"


def test_desktop_entry_and_metainfo_agree() -> None:
    desktop = configparser.ConfigParser(interpolation=None)
    desktop.optionxform = str  # keys are case-sensitive
    desktop.read(LINUX / f"{APP_ID}.desktop", encoding="utf-8")
    entry = desktop["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Exec"].split()[0] == "workbench"
    assert entry["Icon"] == APP_ID and entry["Terminal"] == "false"
    assert entry["Categories"].endswith(";")

    root = ET.parse(LINUX / f"{APP_ID}.metainfo.xml").getroot()
    assert root.tag == "component" and root.get("type") == "desktop-application"
    assert root.findtext("id") == APP_ID
    assert root.find("launchable").text == f"{APP_ID}.desktop"
    assert root.findtext("name") == entry["Name"]
    assert root.find("provides/binary").text == "workbench"
    assert root.find("releases/release").get("version") == __version__
    assert root.find("description/p") is not None and root.findtext("metadata_license") == "CC0-1.0"


def test_icons_svg_and_every_png_size() -> None:
    icons = ROOT / "resources" / "icons"
    svg = ET.parse(icons / "workbench.svg").getroot()
    assert svg.tag.endswith("svg") and svg.get("viewBox")
    for size in ICON_SIZES:
        data = (icons / f"workbench-{size}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        assert struct.unpack(">II", data[16:24]) == (size, size)


def test_linux_install_script_lays_out_the_desktop_files(tmp_path: Path) -> None:
    subprocess.run(["bash", str(LINUX / "install.sh"), "--prefix", str(tmp_path)], check=True, capture_output=True,
                   timeout=60, env={**os.environ, "PATH": "/usr/bin:/bin"})
    share = tmp_path / "share"
    assert (share / "applications" / f"{APP_ID}.desktop").is_file()
    assert (share / "metainfo" / f"{APP_ID}.metainfo.xml").is_file()
    assert (share / "icons/hicolor/scalable/apps" / f"{APP_ID}.svg").is_file()
    for size in ICON_SIZES:
        assert (share / f"icons/hicolor/{size}x{size}/apps" / f"{APP_ID}.png").is_file()


def test_python_dash_m_and_the_smoke_test_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "workbench", "--version"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == f"workbench {__version__}"
    from workbench.cli import build_parser

    assert build_parser().parse_args(["--smoke-test"]).smoke_test is True
    assert "--smoke-test" in build_parser().format_help()


@pytest.mark.slow
def test_smoke_test_reports_a_timeout_in_one_line() -> None:
    code = "from workbench.smoke import run_smoke_test; raise SystemExit(run_smoke_test(timeout=0.2))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: smoke test: timed out while loading the demo model"]


@pytest.mark.slow
def test_smoke_test_trains_the_demo_through_the_window() -> None:
    out = subprocess.run([sys.executable, "-m", "workbench", "--smoke-test"], capture_output=True, text=True,
                         timeout=600, cwd=ROOT, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "smoke test passed: window opened, train 1 epoch -> v0002 accuracy" in out.stdout
