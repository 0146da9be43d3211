"""What the desktop app needs from the operating system, checked before Qt starts.

Without a display, or with a library missing that Qt's platform plugin links against (on Debian, libxcb-cursor0
and friends are not installed by default), Qt prints a paragraph and aborts the process (exit 134). This module
finds those cases first and turns each into one line that says what to do. It never imports Qt, so the check
costs a few milliseconds and works even where importing Qt's GUI libraries would fail.

``WORKBENCH_SKIP_PLATFORM_CHECK=1`` skips it, for a setup it misjudges.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

NO_DISPLAY = "no display: set DISPLAY, use --batch, or QT_QPA_PLATFORM=offscreen"
NO_WAYLAND = "no display: set WAYLAND_DISPLAY (or DISPLAY with QT_QPA_PLATFORM=xcb), use --batch, or " \
             "QT_QPA_PLATFORM=offscreen"

# Platform plugins that draw into memory or straight onto a framebuffer: no display server needed.
HEADLESS = frozenset({"offscreen", "minimal", "minimalegl", "vnc", "eglfs", "linuxfb", "vkkhrdisplay"})

# soname -> (Debian/Ubuntu package, Fedora package), for the libraries Qt's GUI and its xcb and wayland plugins
# link against beyond glibc.
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libXau.so.6": ("libxau6", "libXau"),
    "libXdmcp.so.6": ("libxdmcp6", "libXdmcp"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libGLX.so.0": ("libglx0", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libGLdispatch.so.0": ("libglvnd0", "libglvnd"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl"),
}

# What libqxcb.so (Qt 6.5 and later) needs beyond Qt itself: checked one by one when ldd cannot tell.
XCB_LIBRARIES = (
    "libxcb.so.1", "libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-image.so.0", "libxcb-keysyms.so.1",
    "libxcb-render-util.so.0", "libxcb-util.so.1", "libxcb-randr.so.0", "libxcb-shape.so.0", "libxcb-shm.so.0",
    "libxcb-sync.so.1", "libxcb-xfixes.so.0", "libxcb-render.so.0", "libxcb-xkb.so.1", "libxkbcommon.so.0",
    "libxkbcommon-x11.so.0", "libX11.so.6", "libX11-xcb.so.1", "libEGL.so.1", "libGL.so.1", "libfontconfig.so.1",
)

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)
_XCB_EXTENSION = re.compile(r"^libxcb-([a-z0-9]+)\.so\.(\d+)$")

MissingLookup = Callable[[str], list[str]]


def packages_for(sonames: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Debian packages, Fedora packages and sonames of no known package, for the missing libraries."""
    debian: list[str] = []
    fedora: list[str] = []
    unknown: list[str] = []
    for soname in sonames:
        known = PACKAGES.get(soname)
        extension = _XCB_EXTENSION.match(soname)
        if known is None and extension is not None:  # libxcb's own extensions: libxcb-NAME0 / libxcb
            known = (f"libxcb-{extension.group(1)}{extension.group(2)}", "libxcb")
        if known is None:
            unknown.append(soname)
            continue
        for names, name in ((debian, known[0]), (fedora, known[1])):
            if name not in names:
                names.append(name)
    return debian, fedora, unknown


def missing_message(platform: str, sonames: Sequence[str]) -> str:
    """One line: what is missing and the install commands for Debian/Ubuntu and Fedora."""
    debian, fedora, unknown = packages_for(sonames)
    parts = []
    if debian:
        parts.append(f"sudo apt-get install {' '.join(debian)} (Debian/Ubuntu) or "
                     f"sudo dnf install {' '.join(fedora)} (Fedora)")
    if unknown:
        parts.append(f"install a package that provides {', '.join(unknown)}")
    return (f"missing system libraries for Qt's {platform} platform ({', '.join(sonames)}): "
            f"{'; and '.join(parts)}; or use --batch, or QT_QPA_PLATFORM=offscreen")


def plugin_dirs(env: Mapping[str, str]) -> list[Path]:
    """Where Qt looks for platform plugins: the environment's overrides, then PySide6's own (also in a bundle)."""
    dirs = []
    if env.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
        dirs.append(Path(env["QT_QPA_PLATFORM_PLUGIN_PATH"]))
    dirs += [Path(p) / "platforms" for p in env.get("QT_PLUGIN_PATH", "").split(os.pathsep) if p]
    roots: list[Path] = []
    if getattr(sys, "frozen", False) and hasattr(sys, "_MEIPASS"):
        roots.append(Path(sys._MEIPASS) / "PySide6")
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        roots += [Path(p) for p in spec.submodule_search_locations]
    dirs += [root / "Qt" / "plugins" / "platforms" for root in roots]
    return dirs


def _loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_libraries(platform: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Sonames Qt's ``platform`` plugin links against that the dynamic loader cannot find.

    Asks ldd about the plugin itself (exact for the installed Qt, and it honours the plugin's RPATH and a bundle's
    LD_LIBRARY_PATH); without ldd or the plugin file, tries to load the libraries the xcb plugin is known to need.
    """
    env = os.environ if env is None else env
    plugin = next((d / f"libq{platform}.so" for d in plugin_dirs(env) if (d / f"libq{platform}.so").is_file()), None)
    ldd = shutil.which("ldd")
    if plugin is not None and ldd is not None:
        try:
            out = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            out = None
        if out is not None and out.returncode == 0:
            return list(dict.fromkeys(_NOT_FOUND.findall(out.stdout)))
    if platform != "xcb":
        return []
    return [soname for soname in XCB_LIBRARIES if not _loadable(soname)]


def candidate_platforms(env: Mapping[str, str]) -> list[str]:
    """The platform plugins Qt will try, in order (QT_QPA_PLATFORM may list several, ``wayland;xcb``)."""
    chosen = env.get("QT_QPA_PLATFORM", "").strip()
    if chosen:
        names = [part.split(":", 1)[0].strip().lower() for part in chosen.split(";")]
        return [n for n in names if n] or ["xcb"]
    if env.get("XDG_SESSION_TYPE", "").lower() == "wayland":
        return ["wayland", "xcb"]  # what Qt 6 does on a Wayland session
    return ["xcb"]


def _has_wayland(env: Mapping[str, str]) -> bool:
    if env.get("WAYLAND_DISPLAY"):
        return True
    runtime = env.get("XDG_RUNTIME_DIR")
    return bool(runtime) and Path(runtime, "wayland-0").exists()


def check_platform(env: Mapping[str, str] | None = None, system: str | None = None,
                   missing: MissingLookup | None = None) -> str | None:
    """None when Qt can start its platform plugin here, else the one line that says what is missing.

    ``env``, ``system`` (``sys.platform``) and ``missing`` (platform name -> missing sonames) default to this
    machine's; tests pass fakes.
    """
    env = os.environ if env is None else env
    system = sys.platform if system is None else system
    if not system.startswith("linux") or env.get("WORKBENCH_SKIP_PLATFORM_CHECK", "") not in ("", "0"):
        return None  # Windows and macOS ship what Qt needs
    lookup = missing or (lambda name: missing_libraries(name, env))
    problems: list[str] = []
    for name in candidate_platforms(env):
        if name in HEADLESS:
            return None
        if name == "xcb" and not env.get("DISPLAY"):
            problems.append(NO_DISPLAY)
            continue
        if name == "wayland" and not _has_wayland(env):
            problems.append(NO_WAYLAND)
            continue
        if name not in ("xcb", "wayland"):
            return None  # a platform this check does not know: let Qt judge it
        absent = lookup(name)
        if not absent:
            return None
        problems.append(missing_message(name, absent))
    # a missing library says more than a missing display; with no display at all, the xcb line names DISPLAY
    missing_libs = [p for p in problems if p.startswith("missing")]
    if missing_libs:
        return missing_libs[0]
    return NO_DISPLAY if NO_DISPLAY in problems else (problems[0] if problems else None)


def explain_unusable(env: Mapping[str, str] | None = None) -> int:
    """Before anything starts Qt: 0 when it can start, else print the problem on stderr and return 2 (the exit
    code for bad input), so the caller exits with one line instead of Qt's abort."""
    problem = check_platform(env)
    if problem is None:
        return 0
    print(problem, file=sys.stderr)
    return 2
