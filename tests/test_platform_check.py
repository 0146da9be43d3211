"""The check before Qt starts: no display, or a system library Qt's platform plugin needs, gives one line and
exit 2 instead of Qt's abort. Environments and library lookups are faked; two tests run the real command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from workbench import platform_check as pc
from workbench.platform_check import NO_DISPLAY, check_platform

ROOT = Path(__file__).resolve().parents[1]
LINUX = "linux"


def nothing_missing(_platform: str) -> list[str]:
    return []


def test_no_display_on_linux_is_one_line_naming_the_display() -> None:
    assert check_platform({}, LINUX, nothing_missing) == NO_DISPLAY
    assert check_platform({"QT_QPA_PLATFORM": "xcb"}, LINUX, nothing_missing) == NO_DISPLAY
    assert "\n" not in NO_DISPLAY and "DISPLAY" in NO_DISPLAY and "--batch" in NO_DISPLAY


@pytest.mark.parametrize("platform", ["offscreen", "minimal", "vnc", "eglfs", "linuxfb", "offscreen:fontengine=freetype",
                                      "Offscreen"])
def test_headless_platforms_need_no_display_and_no_x_libraries(platform: str) -> None:
    def every_library_missing(_p: str) -> list[str]:
        return ["libxcb-cursor.so.0"]

    assert check_platform({"QT_QPA_PLATFORM": platform}, LINUX, every_library_missing) is None


def test_other_systems_are_not_checked() -> None:
    assert check_platform({}, "win32", nothing_missing) is None
    assert check_platform({}, "darwin", nothing_missing) is None


def test_a_display_with_every_library_passes() -> None:
    assert check_platform({"DISPLAY": ":0"}, LINUX, nothing_missing) is None


def test_missing_xcb_libraries_name_the_debian_and_fedora_packages() -> None:
    asked: list[str] = []

    def lookup(platform: str) -> list[str]:
        asked.append(platform)
        return ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxkbcommon-x11.so.0", "libxcb-xinerama.so.0"]

    line = check_platform({"DISPLAY": ":0"}, LINUX, lookup)
    assert asked == ["xcb"]
    assert line is not None and "\n" not in line
    apt = re.search(r"apt-get install ([^(]+)\(Debian/Ubuntu\)", line)
    dnf = re.search(r"dnf install ([^(]+)\(Fedora\)", line)
    assert apt and apt.group(1).split() == ["libxcb-cursor0", "libxcb-icccm4", "libxkbcommon-x11-0",
                                            "libxcb-xinerama0"]
    assert dnf and dnf.group(1).split() == ["xcb-util-cursor", "xcb-util-wm", "libxkbcommon-x11", "libxcb"]
    assert "libxcb-cursor.so.0" in line and "QT_QPA_PLATFORM=offscreen" in line


def test_an_unknown_library_is_named_as_it_is() -> None:
    line = pc.missing_message("xcb", ["libxcb-keysyms.so.1", "libfancy.so.3"])
    assert "apt-get install libxcb-keysyms1 (Debian/Ubuntu)" in line
    assert "a package that provides libfancy.so.3" in line
    only_unknown = pc.missing_message("xcb", ["libfancy.so.3"])
    assert "apt-get" not in only_unknown and "libfancy.so.3" in only_unknown


def test_each_package_is_named_once() -> None:
    debian, fedora, unknown = pc.packages_for(["libGL.so.1", "libGLX.so.0", "libglib-2.0.so.0",
                                               "libgthread-2.0.so.0"])
    assert debian == ["libgl1", "libglx0", "libglib2.0-0"]
    assert fedora == ["libglvnd-glx", "glib2"] and unknown == []


def test_wayland_session_falls_back_to_xcb_like_qt() -> None:
    env = {"XDG_SESSION_TYPE": "wayland", "DISPLAY": ":0"}  # no WAYLAND_DISPLAY: Qt goes on to xcb
    asked: list[str] = []
    assert check_platform(env, LINUX, lambda p: asked.append(p) or []) is None
    assert asked == ["xcb"]
    assert check_platform({"QT_QPA_PLATFORM": "wayland"}, LINUX, nothing_missing).startswith("no display: set WAYLAND")
    assert check_platform({"XDG_SESSION_TYPE": "wayland"}, LINUX, nothing_missing) == NO_DISPLAY  # neither display
    assert check_platform({"QT_QPA_PLATFORM": "wayland", "WAYLAND_DISPLAY": "wayland-0"}, LINUX,
                          nothing_missing) is None


def test_a_missing_library_is_reported_over_a_missing_display() -> None:
    env = {"QT_QPA_PLATFORM": "wayland;xcb", "WAYLAND_DISPLAY": "wayland-1"}
    line = check_platform(env, LINUX, lambda p: ["libwayland-cursor.so.0"] if p == "wayland" else [])
    assert line is not None and line.startswith("missing system libraries for Qt's wayland platform")
    assert "libwayland-cursor0" in line


def test_an_unknown_platform_is_left_to_qt() -> None:
    assert check_platform({"QT_QPA_PLATFORM": "wayland-egl"}, LINUX, nothing_missing) is None


def test_the_check_can_be_skipped() -> None:
    assert check_platform({"WORKBENCH_SKIP_PLATFORM_CHECK": "1"}, LINUX, nothing_missing) is None
    assert check_platform({"WORKBENCH_SKIP_PLATFORM_CHECK": "0"}, LINUX, nothing_missing) == NO_DISPLAY


def test_ldd_of_the_plugin_gives_the_missing_libraries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = tmp_path / "platforms"
    plugins.mkdir()
    (plugins / "libqxcb.so").write_bytes(b"\x7fELF")
    fake_ldd = tmp_path / "ldd"
    fake_ldd.write_text("#!/bin/sh\nprintf '\\tlibxcb-cursor.so.0 => not found\\n\\tlibxcb.so.1 => /lib/libxcb.so.1 "
                        "(0x1)\\n\\tlibxcb-icccm.so.4 => not found\\n\\tlibxcb-cursor.so.0 => not found\\n'\n")
    fake_ldd.chmod(0o755)
    monkeypatch.setattr(pc.shutil, "which", lambda name: str(fake_ldd) if name == "ldd" else None)
    env = {"QT_QPA_PLATFORM_PLUGIN_PATH": str(plugins)}
    assert pc.missing_libraries("xcb", env) == ["libxcb-cursor.so.0", "libxcb-icccm.so.4"]


def test_without_ldd_the_known_libraries_are_loaded_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pc.shutil, "which", lambda _name: None)
    monkeypatch.setattr(pc, "_loadable", lambda soname: soname not in ("libxcb-keysyms.so.1", "libEGL.so.1"))
    assert pc.missing_libraries("xcb", {}) == ["libxcb-keysyms.so.1", "libEGL.so.1"]
    assert pc.missing_libraries("wayland", {}) == []  # nothing known to try: Qt judges


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PySide6 has the xcb plugin on Linux only")
def test_the_real_plugin_is_found() -> None:
    dirs = pc.plugin_dirs({})
    assert any((d / "libqxcb.so").is_file() for d in dirs), dirs


def _workbench(args: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, timeout=60,
                          env=clean, cwd=ROOT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is for Linux")
def test_the_app_without_a_display_exits_2_with_one_line() -> None:
    out = _workbench([], QT_QPA_PLATFORM="xcb")
    assert (out.returncode, out.stderr.strip().splitlines()) == (2, [NO_DISPLAY])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is for Linux")
def test_the_smoke_test_runs_the_same_check() -> None:
    out = _workbench(["--smoke-test"], QT_QPA_PLATFORM="xcb")
    assert (out.returncode, out.stderr.strip().splitlines()) == (2, [NO_DISPLAY])


def test_the_readme_gives_the_apt_get_line_with_known_packages() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"apt-get install ([a-z0-9.+ -]+)", readme)
    assert match, "README has no apt-get install line"
    named = match.group(1).split()
    debian = {deb for deb, _fedora in pc.PACKAGES.values()} | {"python3-venv"}
    assert {"libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1", "libxkbcommon-x11-0"} <= set(named)
    assert [n for n in named if n not in debian and not re.fullmatch(r"libxcb-[a-z0-9-]+\d", n)] == []
