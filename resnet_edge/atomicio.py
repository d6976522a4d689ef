"""Atomic file output: write to a temp file beside the target, then link or rename it into place.

A reader (or a crash) never sees a half-written file, and an existing file is never replaced unless the caller
passes ``force=True``. Without ``force`` the final name is created with ``os.link``, which fails when the name
exists, so of two writers racing for one name exactly one wins (an exists-check followed by a rename would let
both "win", the second silently replacing the first). With ``force`` only a regular file is replaced: a
symlink, device node, FIFO, socket or folder at the target is refused (as root, ``--json /dev/null --force``
must not replace /dev/null).

Temp files and folders are registered while they exist; :func:`install_cleanup_handlers` makes SIGTERM and
SIGHUP remove them before the process ends the way the signal would have ended it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from .errors import UserError

_TEMPS: set[str] = set()  # temp files and folders of outputs being written, removed on SIGTERM/SIGHUP
_TEMPS_LOCK = threading.Lock()
CLEANUP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def os_error_line(error: OSError) -> str:
    """One line for an OSError: 'NAME: errno ENOSPC (No space left on device)'."""
    name = errno.errorcode.get(error.errno or 0, "")
    reason = error.strerror or str(error) or type(error).__name__
    where = error.filename if error.filename is not None else ""
    hint = {errno.ENOSPC: "; free some space or write elsewhere", errno.EROFS: "; write to another folder",
            errno.EACCES: "; check the permissions", errno.EPERM: "; check the permissions",
            errno.EDQUOT: "; the disk quota is used up"}.get(error.errno or 0, "")
    return f"{where}: {reason} ({name}){hint}" if where else f"{reason} ({name}){hint}" if name else f"{reason}{hint}"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _existing_ancestor(folder: Path) -> Path:
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_folder_writable(folder: str | os.PathLike) -> Path:
    """Refuse (one line, before any long work) a folder we could not create files in: read-only file system,
    no write permission, or a file where the folder should be. A folder that does not exist yet is judged by
    the nearest one that does (it will be created there)."""
    folder = Path(folder)
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise UserError(f"{folder}: {base} is not a folder")
    try:
        read_only = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # Windows has no statvfs: os.access below still answers
        read_only = False
    if read_only:
        raise UserError(f"{folder}: the file system is read-only (EROFS); write to another folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{folder}: no permission to write in {base} (EACCES)")
    return folder


def check_writable(path: str | os.PathLike, force: bool) -> Path:
    """Refuse early (before any work): an existing target without ``force``, a target that is not a regular
    file (even with ``force``), or a folder we cannot write in."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:  # a path through a file ("x.txt/out.json"), a name too long...
        error.filename = None  # named once, in front
        raise UserError(f"{path}: cannot write there: {os_error_line(error)}") from None
    if mode is not None:
        if not stat.S_ISREG(mode):
            raise UserError(f"{path} is {_kind(mode)}; refusing to replace it (outputs replace regular files only, "
                            f"even with --force)")
        if not force:
            raise UserError(f"{path} already exists; pass --force to overwrite it")
    check_folder_writable(path.parent)
    return path


def _register(path: str) -> None:
    with _TEMPS_LOCK:
        _TEMPS.add(path)


def _unregister(path: str) -> None:
    with _TEMPS_LOCK:
        _TEMPS.discard(path)


def remove_temps() -> None:
    """Remove every registered temp file and folder (the signal handler's work; safe to call twice)."""
    with _TEMPS_LOCK:
        paths = list(_TEMPS)
        _TEMPS.clear()
    for path in paths:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        except OSError:
            pass


def _on_signal(signum: int, frame) -> None:
    remove_temps()
    signal.signal(signum, signal.SIG_DFL)  # then end as the signal would have: the parent sees "killed by SIGTERM"
    os.kill(os.getpid(), signum)


def install_cleanup_handlers() -> None:
    """SIGTERM and SIGHUP remove registered temp files, then end the process with that signal. Only where no
    one else handles them (the default action), and only from the main thread (Python's rule for handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in CLEANUP_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _on_signal)


@contextlib.contextmanager
def temp_folder_beside(path: str | os.PathLike, prefix: str = "") -> Iterator[Path]:
    """A scratch folder beside ``path`` (same file system, cleaned on exit and on SIGTERM): where tools that
    want file names (ONNX Runtime's quantizer) work on an output before it is written atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f".{prefix or target.name}.", suffix=".tmp", dir=target.parent)
    _register(folder)
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _unregister(folder)


def _link_into_place(tmp: Path, path: Path) -> None:
    """Create ``path`` from ``tmp`` without ever replacing an existing name."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise UserError(f"{path} already exists; pass --force to overwrite it") from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS):
            raise
    # a file system without hard links (FAT, some network shares): O_EXCL creates the name or fails, then copy
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except FileExistsError:
        raise UserError(f"{path} already exists; pass --force to overwrite it") from None
    try:
        with os.fdopen(fd, "wb") as out, open(tmp, "rb") as source:
            shutil.copyfileobj(source, out)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        os.unlink(path)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temp path in the target's folder; on success fsync it and link (or, with ``force``, rename) it
    to ``path``."""
    path = check_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    _register(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp makes the file owner-only (0600); give it the mode a plain open() would have
        os.chmod(tmp, 0o666 & ~_current_umask())
        if force:
            check_writable(path, force=True)  # what is there now is still a regular file (or nothing)
            os.replace(tmp, path)
        else:
            _link_into_place(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        _unregister(tmp_name)


def _current_umask() -> int:
    try:  # Linux reports it without changing it (setting and restoring it races with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes, force: bool = False) -> Path:
    with atomic_path(path, force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, force: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), force)
