"""The system libraries Qt's xcb platform plugin needs, found before Qt aborts without them.

On a minimal Linux, creating the QApplication with libxcb-cursor0 (and friends) missing kills the process
with SIGABRT (exit 134) and a message about "xcb" plugins. :func:`missing_system_libs` looks the libraries up
first, with no Qt and no torch imported, and :func:`install_command` names the one command that installs
them, so the app (and scripts/run-app.sh) can say so and exit 2 instead.

    python -m gui.qtdeps          # prints what is missing and the command, exit 2; nothing missing: exit 0
"""

from __future__ import annotations

import ctypes.util
import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class SystemLib:
    soname: str  # what ctypes.util.find_library is asked for ("xcb-cursor" finds libxcb-cursor.so.0)
    apt: str  # Debian / Ubuntu package
    dnf: str  # Fedora / RHEL package


# what the xcb platform plugin of PySide6 6.x loads (Qt's "Platform Notes - X11 Requirements")
XCB_LIBS = (
    SystemLib("xcb-cursor", "libxcb-cursor0", "xcb-util-cursor"),
    SystemLib("xcb-icccm", "libxcb-icccm4", "xcb-util-wm"),
    SystemLib("xcb-keysyms", "libxcb-keysyms1", "xcb-util-keysyms"),
    SystemLib("xcb-image", "libxcb-image0", "xcb-util-image"),
    SystemLib("xcb-render-util", "libxcb-render-util0", "xcb-util-renderutil"),
    SystemLib("xcb-xkb", "libxcb-xkb1", "libxcb"),
    SystemLib("xkbcommon-x11", "libxkbcommon-x11-0", "libxkbcommon-x11"),
    SystemLib("EGL", "libegl1", "libglvnd-egl"),
    SystemLib("GL", "libgl1", "libglvnd-glx"),
    # Qt Gui links QtDBus, which needs the system's D-Bus library (the packaged app leaves it to the system)
    SystemLib("dbus-1", "libdbus-1-3", "dbus-libs"),
)

Finder = Callable[[str], "str | None"]


def ldconfig_names() -> set[str]:
    """Library file names the dynamic linker's cache knows (``ldconfig -p``); empty where that is unavailable."""
    ldconfig = shutil.which("ldconfig") or ("/sbin/ldconfig" if os.path.exists("/sbin/ldconfig") else None)
    if ldconfig is None:
        return set()
    try:
        listing = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}


@functools.lru_cache(maxsize=1)
def _cached_ldconfig_names() -> frozenset[str]:
    return frozenset(ldconfig_names())


def default_finder(name: str) -> str | None:
    """ctypes' search (ldconfig, gcc, ld), then the cache listing: the library's file name, or None."""
    found = ctypes.util.find_library(name)
    if found:
        return found
    prefix = f"lib{name}.so"
    return next((entry for entry in sorted(_cached_ldconfig_names()) if entry.startswith(prefix)), None)


def missing_system_libs(finder: Finder = default_finder, libs: Sequence[SystemLib] = XCB_LIBS) -> list[SystemLib]:
    """The libraries of ``libs`` that ``finder`` cannot find (empty: Qt's xcb plugin can start)."""
    return [lib for lib in libs if not finder(lib.soname)]


def package_manager(which: Callable[[str], "str | None"] = shutil.which) -> str | None:
    """apt-get or dnf (or yum), whichever this system has."""
    return next((tool for tool in ("apt-get", "dnf", "yum") if which(tool)), None)


def install_command(missing: Sequence[SystemLib], manager: str | None, root: bool | None = None) -> str:
    """The one command that installs ``missing`` with ``manager`` (apt-get's names when unknown)."""
    root = (hasattr(os, "geteuid") and os.geteuid() == 0) if root is None else root
    sudo = "" if root else "sudo "
    if manager in ("dnf", "yum"):
        packages = sorted({lib.dnf for lib in missing})
        return f"{sudo}{manager} install -y {' '.join(packages)}"
    packages = sorted({lib.apt for lib in missing})
    return f"{sudo}apt-get install -y {' '.join(packages)}"


def has_display() -> bool:
    """False on a Linux/BSD machine with no X11 or Wayland display and no Qt platform chosen."""
    if sys.platform in ("win32", "darwin") or os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def needs_xcb(platform: str | None = None, environ: dict | None = None) -> bool:
    """Whether Qt will use its xcb plugin: on Linux unless QT_QPA_PLATFORM names another (offscreen, wayland)."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return False
    chosen = environ.get("QT_QPA_PLATFORM", "")
    if chosen:
        return chosen.split(":")[0].split(";")[0] == "xcb"
    return not environ.get("WAYLAND_DISPLAY")  # Qt 6 prefers wayland where a compositor runs


def check_qt_system_libs(finder: Finder | None = None, manager: str | None = None, out=None) -> int:
    """0 if Qt's xcb plugin will find its libraries (or is not used); else print what is missing, return 2."""
    if not needs_xcb():
        return 0
    missing = missing_system_libs(finder or default_finder)
    if not missing:
        return 0
    out = out or sys.stderr
    names = ", ".join(f"lib{lib.soname}" for lib in missing)
    print(f"resnet-edge: Qt cannot open a window: missing system libraries {names}. Install them with:\n"
          f"  {install_command(missing, manager or package_manager())}", file=out)
    return 2


if __name__ == "__main__":
    sys.exit(check_qt_system_libs())
