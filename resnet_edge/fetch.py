"""Downloading published weights (stdlib urllib, no torch): streaming, resumable, hash-checked.

    path = download(url, cache_dir() / "resnet50-11ad3fa6.pth", hash_prefix="11ad3fa6")

What it promises:
- the bytes go to NAME.part; only a file whose hash matched is fsynced and renamed to NAME, so NAME is
  never partial and nothing reads a file before its hash was checked;
- an interrupted download (connection lost, Ctrl-C, disk full) keeps NAME.part, and the next run asks
  for the rest with an HTTP Range request (a server without Range support sends it all again);
- a file already in the cache with the right hash is used as it is, with no request at all;
- one process at a time downloads a file (a lock on the open .part; two would interleave their bytes);
- a download whose hash is wrong is refused and removed;
- HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured (urllib's ProxyHandler from the environment) and the
  proxy in use is named, its credentials masked; every URL shown goes through sources.redact_url;
- failures are one line (DownloadError, a UserError: exit 2).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from .errors import UserError
from .modelzoo import user_dir
from .sources import redact_url

CACHE_ENV = "RESNET_EDGE_CACHE"  # overrides the per-user cache folder
CHUNK_BYTES = 1 << 20  # the most read/written at once; the bar moves and a cancel is seen once per read
TIMEOUT_S = 30.0  # a connect or a read silent this long fails (and is retried)
RETRIES = 3  # a connection lost mid-file is resumed this many times within one run
RETRY_WAIT_S = 1.0  # before the first retry; doubles per retry

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


class DownloadError(UserError):
    """A download that could not complete: one line, exit 2."""


class DownloadCancelled(Exception):
    """The caller's cancel flag was set (the app's Cancel button); NAME.part is kept for a resume."""


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where downloaded weights are kept: ``override`` (--cache-dir), else $RESNET_EDGE_CACHE, else the
    per-user cache folder (e.g. ~/.cache/resnet-edge/weights on Linux)."""
    if override:
        return Path(override)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return user_dir("cache") / "weights"


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_matches(digest: str, sha256: str | None, hash_prefix: str | None) -> bool:
    """The full sha256 where one is known, else torchvision's check: the digest starts with the prefix."""
    if sha256:
        return digest == sha256.lower()
    if hash_prefix:
        return digest.startswith(hash_prefix.lower())
    return False


def proxy_for(url: str) -> str | None:
    """The proxy urllib will use for ``url`` from the environment (None: a direct connection)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def opener() -> urllib.request.OpenerDirector:
    """urllib with the environment's proxies (explicit: what `fetch` says it uses is what it uses)."""
    return urllib.request.build_opener(urllib.request.ProxyHandler(urllib.request.getproxies()))


def describe_route(url: str) -> str:
    proxy = proxy_for(url)
    return f"via proxy {redact_url(proxy)}" if proxy else "direct"


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, hash_prefix: str | None = None,
             show_progress: bool = True, on_progress: Progress | None = None,
             cancelled: Callable[[], bool] | None = None, retries: int = RETRIES, chunk_bytes: int = CHUNK_BYTES,
             log: Callable[[str], None] = print) -> Path:
    """Download ``url`` to ``dest`` (see the module docstring); returns ``dest``. ``on_progress`` is called
    after every chunk; ``cancelled`` is polled as often and raises DownloadCancelled when it returns True.
    KeyboardInterrupt passes through with NAME.part kept."""
    dest = Path(dest)
    shown = redact_url(url)
    if not (sha256 or hash_prefix):  # nothing would vouch for the bytes: never download blind
        raise DownloadError(f"{shown}: no sha256 or hash prefix to check the file against; not downloading it")
    if dest.is_file():
        if hash_matches(file_sha256(dest), sha256, hash_prefix):
            log(f"using {dest} (already downloaded, hash checked)")
            return dest
        log(f"{dest} does not have the expected hash (damaged?): removing it and downloading again")
        dest.unlink()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create the cache folder {dest.parent}: {error.strerror or error}") from None
    part = part_path(dest)
    log(f"downloading {shown} ({describe_route(url)})")
    try:
        # held, and locked, until the file is complete or the run gives up; unbuffered, so a full disk fails
        # in our write, never later in a close that flushes
        handle = open(part, "ab", buffering=0)
    except OSError as error:  # a read-only cache, a folder in the way
        raise _write_error(error, part) from None
    try:
        with handle:
            _lock(handle, part)
            attempt = 0
            while True:
                try:
                    _fetch_once(url, handle, part, show_progress, on_progress, cancelled, chunk_bytes, log)
                    break
                except _Retryable as problem:
                    if attempt >= retries:
                        raise DownloadError(f"{problem}; {part.name} kept: run the same command again to "
                                            "resume") from None
                    attempt += 1
                    wait = RETRY_WAIT_S * 2 ** (attempt - 1)
                    log(f"{problem}; resuming in {wait:g} s (try {attempt} of {retries})")
                    time.sleep(wait)
    except BaseException:
        if part.is_file() and part.stat().st_size == 0:  # nothing arrived: nothing to resume
            part.unlink(missing_ok=True)
        raise
    digest = file_sha256(part)
    if not hash_matches(digest, sha256, hash_prefix):
        part.unlink(missing_ok=True)
        expected = sha256 or f"{hash_prefix}..."
        raise DownloadError(f"{shown}: wrong sha256 {digest[:16]}... (expected {expected}); the file was removed "
                            "(a changed or tampered file, or a proxy that rewrote it)")
    try:
        os.replace(part, dest)
    except OSError as error:  # e.g. a folder of that name in the way
        raise DownloadError(f"cannot rename {part.name} to {dest}: {error.strerror or error} ({part.name} kept)") from None
    _fsync_dir(dest.parent)
    log(f"saved {dest} ({dest.stat().st_size / 2**20:.1f} MiB, sha256 {digest[:16]}... checked)")
    return dest


class _Retryable(Exception):
    """A connection that failed or ended early: the .part is kept and the rest is asked for again."""


def _fetch_once(url: str, handle, part: Path, show_progress: bool, on_progress: Progress | None,
                cancelled: Callable[[], bool] | None, chunk_bytes: int, log: Callable[[str], None]) -> None:
    """One request: append the rest of the file to ``handle`` (``part``, opened for appending); returns when
    the file is complete, raises _Retryable when the connection ended early."""
    offset = os.fstat(handle.fileno()).st_size
    request = urllib.request.Request(url, headers={"User-Agent": "resnet-edge-fetch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    shown = redact_url(url)
    try:
        response = opener().open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # asked for bytes past the end: the .part already holds it all
            return
        if error.code in (408, 429) or error.code >= 500:
            raise _Retryable(f"{shown}: HTTP {error.code} {error.reason}") from None
        raise DownloadError(f"{shown}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        reason = getattr(error.reason, "strerror", None) or str(error.reason)
        proxy = proxy_for(url)
        where = f"proxy {redact_url(proxy)}" if proxy else urlsplit(url).netloc.rpartition("@")[2]
        raise DownloadError(f"{shown}: cannot connect to {where} ({reason})") from None
    except (OSError, ValueError) as error:  # a timeout, a reset during the handshake, a malformed URL
        raise _Retryable(f"{shown}: {error.strerror if isinstance(error, OSError) and error.strerror else error}") from None
    with response:
        if offset and response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:  # a range we did not ask for: take the whole file again
                _truncate(handle, part)
                raise _Retryable(f"{shown}: the server answered the resume with bytes from {start}, not {offset}")
        else:
            if offset:
                log(f"{shown}: the server does not resume downloads (no Range support): starting over")
                _truncate(handle, part)
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        _check_free_space(part.parent, (total - offset) if total else None)
        done = offset
        bar = _bar(show_progress, total, offset, part.name.removesuffix(".part"))
        try:
            while True:
                if cancelled is not None and cancelled():
                    raise DownloadCancelled(f"cancelled; {part.name} kept for a resume")
                try:
                    # read1: what has arrived, up to chunk_bytes; a slow link still moves the bar and sees a cancel
                    chunk = response.read1(chunk_bytes)
                except (OSError, ValueError, http.client.HTTPException) as error:  # reset, timeout, IncompleteRead
                    raise _Retryable(f"{shown}: connection lost after {done:,} bytes ({error})") from None
                if not chunk:
                    break
                try:
                    view = memoryview(chunk)
                    while view:  # a raw file may take part of a write
                        view = view[handle.write(view):]
                except OSError as error:
                    raise _write_error(error, part) from None
                done += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                if on_progress is not None:
                    on_progress(done, total)
            try:
                os.fsync(handle.fileno())
            except OSError as error:
                raise _write_error(error, part) from None
        finally:
            if bar is not None:
                bar.close()
    if total is not None and done < total:
        raise _Retryable(f"{shown}: connection closed after {done:,} of {total:,} bytes")
    if total is not None and done > total:
        _truncate(handle, part)
        raise DownloadError(f"{shown}: the server sent {done:,} bytes, more than the {total:,} it announced; removed")


def _truncate(handle, part: Path) -> None:
    """Empty the .part to start over (appends then go to its start again)."""
    try:
        handle.seek(0)
        handle.truncate(0)
    except OSError as error:
        raise _write_error(error, part) from None


def _lock(handle, part: Path) -> None:
    """One download per file at a time (two would interleave their bytes): an advisory lock on the open
    .part, released by the system when the process ends, so a crash leaves no stale lock. POSIX only."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; two downloads at once there end in a failed hash check
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise DownloadError(f"{part} is being downloaded by another resnet-edge process: wait for it to "
                                "finish, or stop it") from None
        # a file system without locks (some network mounts): go on unlocked


def _content_range(header: str | None) -> tuple[int, int | None]:
    """'bytes 100-199/200' -> (100, 200); total None when the server says '*'."""
    try:
        unit, _, spec = (header or "").partition(" ")
        span, _, size = spec.partition("/")
        start = int(span.split("-")[0])
        if unit != "bytes":
            raise ValueError(unit)
        return start, int(size) if size.isdigit() else None
    except ValueError:
        raise _Retryable(f"unreadable Content-Range {header!r} in a resumed download") from None


def _write_error(error: OSError, part: Path) -> DownloadError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(f"disk full while writing {part}: free some space and run the same command again "
                             "to resume")
    return DownloadError(f"cannot write {part}: {error.strerror or error}")


def _check_free_space(folder: Path, needed: int | None) -> None:
    """Refuse before the first byte when the rest of the file cannot fit (a full disk mid-file also ends in
    one line, through _write_error)."""
    if not needed:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < needed:
        raise DownloadError(f"not enough space in {folder}: {needed / 2**20:.1f} MiB needed, "
                            f"{free / 2**20:.1f} MiB free (--cache-dir or {CACHE_ENV} picks another folder)")


def _bar(show: bool, total: int | None, initial: int, name: str):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                file=sys.stderr, dynamic_ncols=True, leave=False)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); Windows has no directory handles to sync."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
