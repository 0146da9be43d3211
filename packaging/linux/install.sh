#!/usr/bin/env bash
# Install Workbench's desktop integration (menu entry, icons, AppStream metadata) and, optionally, the
# PyInstaller bundle, for one user (default prefix ~/.local) or system-wide (--prefix /usr/local, as root).
#
#   packaging/linux/install.sh [--prefix DIR] [--bundle dist/workbench]
#
# Without --bundle the `workbench` command must already be on PATH (pip install of the wheel).
set -euo pipefail

ID=io.github.workbench_nn.Workbench
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PREFIX="$HOME/.local"
BUNDLE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="$2"; shift 2 ;;
        --bundle) BUNDLE="$2"; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ -n "$BUNDLE" ]; then
    [ -x "$BUNDLE/workbench" ] || { echo "error: $BUNDLE/workbench is not a built bundle (run make package)" >&2; exit 2; }
    rm -rf "$PREFIX/lib/workbench"
    mkdir -p "$PREFIX/lib" "$PREFIX/bin"
    cp -a "$BUNDLE" "$PREFIX/lib/workbench"
    ln -sf "$PREFIX/lib/workbench/workbench" "$PREFIX/bin/workbench"
fi

install -Dm644 "$HERE/$ID.desktop" "$PREFIX/share/applications/$ID.desktop"
install -Dm644 "$HERE/$ID.metainfo.xml" "$PREFIX/share/metainfo/$ID.metainfo.xml"
install -Dm644 "$ROOT/resources/icons/workbench.svg" "$PREFIX/share/icons/hicolor/scalable/apps/$ID.svg"
for png in "$ROOT"/resources/icons/workbench-*.png; do
    size="$(basename "$png" .png)"; size="${size#workbench-}"
    install -Dm644 "$png" "$PREFIX/share/icons/hicolor/${size}x${size}/apps/$ID.png"
done
command -v update-desktop-database >/dev/null && update-desktop-database -q "$PREFIX/share/applications" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -qtf "$PREFIX/share/icons/hicolor" || true
echo "installed $ID under $PREFIX"
