"""`resnet-edge fetch` and resnet_edge/fetch.py against a real HTTP server on 127.0.0.1 (an ephemeral port)
serving files the tests make. Nothing here reaches outside this machine."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import ROOT, needs_torch, run_cli
from test_torch_free import BLOCK_TORCH  # noqa: E402
from resnet_edge import fetch as fetch_module
from resnet_edge.errors import UserError
from resnet_edge.fetch import DownloadCancelled, DownloadError, cache_dir, download, part_path
from resnet_edge.modelzoo import find_model, user_models_dir
from resnet_edge.sources import redact_url
from resnet_edge.weights import PUBLISHED, preset


class FileServer:
    """Serves ``files`` (path -> bytes) with Range support, and acts as a forward proxy when a request names
    an absolute URL. Knobs: ``range_support``; ``cut_next[path] = n`` sends the full Content-Length but only n
    bytes, then closes (once); ``delay_s`` sleeps between 16 KiB pieces."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.range_support = True
        self.cut_next: dict[str, int] = {}
        self.delay_s = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet test output
                pass

            def do_CONNECT(self) -> None:  # an HTTPS tunnel request: recorded, then refused (nothing leaves)
                server.requests.append((f"CONNECT {self.path}", dict(self.headers)))
                self.send_error(403, "Forbidden")

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers)))
                path = urlsplit(self.path).path  # an absolute URL when we are used as a proxy
                data = server.files.get(path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted and server.range_support:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if path in server.cut_next:
                    body = body[: server.cut_next.pop(path)]
                for i in range(0, len(body), 16384):
                    try:
                        self.wfile.write(body[i : i + 16384])
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    if server.delay_s:
                        time.sleep(server.delay_s)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, name: str, data: bytes) -> tuple[str, str]:
        """Serve ``data`` as /models/<name>-<sha256 prefix>.pth; returns (url, full sha256)."""
        digest = hashlib.sha256(data).hexdigest()
        path = f"/models/{name}-{digest[:8]}.pth"
        self.files[path] = data
        return self.url(path), digest

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = FileServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_proxy_from_outside(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy",
                 "ALL_PROXY", "RESNET_EDGE_CACHE", "RESNET_EDGE_MODELS", "RESNET_EDGE_PRESETS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(fetch_module, "RETRY_WAIT_S", 0.0)


def payload(size: int = 300_000, seed: int = 1) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def quiet_download(url: str, dest: Path, **kwargs) -> tuple[Path, list[str]]:
    lines: list[str] = []
    path = download(url, dest, show_progress=False, chunk_bytes=32768, log=lines.append, **kwargs)
    return path, lines


# --- the presets ------------------------------------------------------------------------------------------


def test_presets_are_torchvisions_published_files():
    archs = {p.arch for p in PUBLISHED}
    assert archs == {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}
    for p in PUBLISHED:
        assert p.url == f"https://download.pytorch.org/models/{p.filename}"
        assert len(p.hash_prefix) == 8 and p.filename == f"{p.arch}-{p.hash_prefix}.pth"
        assert (p.resize_size, p.crop_size) == ((232, 224) if p.version == "v2" else (256, 224))
        assert p.mean == (0.485, 0.456, 0.406) and p.std == (0.229, 0.224, 0.225) and p.categories == "imagenet"
        assert 69 < p.acc1 < 83 and 89 < p.acc5 < 97 and p.acc5 > p.acc1
    assert {p.version for p in PUBLISHED if p.arch in ("resnet18", "resnet34")} == {"v1"}
    assert {p.version for p in PUBLISHED if p.arch in ("resnet50", "resnet101", "resnet152")} == {"v1", "v2"}
    # torchvision's DEFAULT: V2 where it exists
    assert preset("resnet50").filename == "resnet50-11ad3fa6.pth" and preset("resnet50").acc1 == 80.858
    assert preset("resnet18").sha256 == "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"
    assert preset("resnet50", "v1").model_name == "imagenet-resnet50-v1"
    assert preset("imagenet-resnet50-v1") == preset("resnet50", "v1")
    assert preset("imagenet-resnet152").version == "v2"
    assert len({p.model_name for p in PUBLISHED}) == len(PUBLISHED)


def test_unknown_presets_are_one_line_errors():
    with pytest.raises(UserError, match="torchvision publishes v1 only"):
        preset("resnet18", "v2")
    with pytest.raises(UserError, match="no published weights for 'resnet20'"):
        preset("resnet20")


def test_redact_url_masks_passwords_bare_tokens_and_secret_query_values():
    assert redact_url("https://user:hunter2@host/x.pth") == "https://user:***@host/x.pth"
    assert redact_url("https://ghp_abcdef@host/x.pth") == "https://***@host/x.pth"
    shown = redact_url("https://h/x.pth?X-Amz-Signature=abc123&pwd=pw&api_key=k1&size=3&token=t0k")
    assert "abc123" not in shown and "pw&" not in shown and "k1" not in shown and "t0k" not in shown
    assert "size=3" in shown
    assert redact_url("https://download.pytorch.org/models/resnet50-11ad3fa6.pth").endswith("11ad3fa6.pth")


# --- the download -----------------------------------------------------------------------------------------


def test_download_checks_the_hash_and_writes_no_partial_file(server, tmp_path):
    data = payload()
    url, digest = server.add("net", data)
    dest = tmp_path / "cache" / url.rsplit("/", 1)[-1]
    path, lines = quiet_download(url, dest, hash_prefix=digest[:8])
    assert path.read_bytes() == data and not part_path(dest).exists()
    assert "direct" in lines[0] and "checked" in lines[-1]


def test_wrong_hash_is_refused_and_the_file_removed(server, tmp_path):
    url, digest = server.add("net", payload())
    dest = tmp_path / "net.pth"
    with pytest.raises(DownloadError, match="wrong sha256") as error:
        quiet_download(url, dest, sha256="0" * 64)
    assert "\n" not in str(error.value)
    assert not dest.exists() and not part_path(dest).exists()
    with pytest.raises(DownloadError, match="wrong sha256"):  # the 8-digit prefix alone, as torchvision checks it
        quiet_download(url, dest, hash_prefix="deadbeef")
    assert not dest.exists() and not part_path(dest).exists()


def test_a_download_without_any_hash_to_check_is_refused(server, tmp_path):
    url, _ = server.add("net", payload())
    with pytest.raises(DownloadError, match="no sha256 or hash prefix"):
        quiet_download(url, tmp_path / "net.pth")
    assert server.requests == []


def test_404_is_one_line(server, tmp_path):
    with pytest.raises(DownloadError, match=r"HTTP 404") as error:
        quiet_download(server.url("/models/missing-12345678.pth"), tmp_path / "missing.pth", hash_prefix="12345678")
    assert "\n" not in str(error.value) and not (tmp_path / "missing.pth").exists()


def test_connection_refused_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot connect to 127.0.0.1"):
        quiet_download(f"http://127.0.0.1:{port}/x-12345678.pth", tmp_path / "x.pth", hash_prefix="12345678")


def test_connection_closed_mid_file_resumes_with_a_range_request(server, tmp_path):
    data = payload()
    url, digest = server.add("net", data)
    path = urlsplit(url).path
    dest = tmp_path / "net.pth"
    server.cut_next[path] = 100_000
    # without retries: one line, the .part kept with what arrived
    with pytest.raises(DownloadError, match=r"connection closed after 100,000 of 300,000 bytes.*run the same"):
        quiet_download(url, dest, hash_prefix=digest[:8], retries=0)
    assert part_path(dest).stat().st_size == 100_000 and not dest.exists()
    # the next run asks for the rest only
    path_done, _ = quiet_download(url, dest, sha256=digest)
    assert server.requests[-1][1].get("Range") == "bytes=100000-"
    assert hashlib.sha256(path_done.read_bytes()).hexdigest() == digest and not part_path(dest).exists()
    # within one run, a lost connection is resumed by itself
    dest.unlink()
    server.cut_next[path] = 50_000
    _, lines = quiet_download(url, dest, sha256=digest)
    assert any("resuming" in line for line in lines) and server.requests[-1][1].get("Range") == "bytes=50000-"
    assert dest.read_bytes() == data


def test_a_server_without_range_support_starts_over(server, tmp_path):
    data = payload()
    url, digest = server.add("net", data)
    dest = tmp_path / "net.pth"
    server.cut_next[urlsplit(url).path] = 70_000
    with pytest.raises(DownloadError):
        quiet_download(url, dest, sha256=digest, retries=0)
    server.range_support = False
    _, lines = quiet_download(url, dest, sha256=digest)
    assert server.requests[-1][1].get("Range") == "bytes=70000-"  # asked, but got the whole file
    assert any("does not resume" in line for line in lines)
    assert dest.read_bytes() == data


def test_ctrl_c_mid_download_keeps_the_part_and_a_rerun_resumes(server, tmp_path):
    data = payload()
    url, digest = server.add("net", data)
    dest = tmp_path / "net.pth"

    def interrupt(done, total):
        if done >= 65536:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quiet_download(url, dest, sha256=digest, on_progress=interrupt)
    kept = part_path(dest).stat().st_size
    assert 65536 <= kept < len(data) and not dest.exists()
    quiet_download(url, dest, sha256=digest)
    assert server.requests[-1][1].get("Range") == f"bytes={kept}-" and dest.read_bytes() == data


def test_cancel_flag_stops_the_download_and_keeps_the_part(server, tmp_path):
    url, digest = server.add("net", payload())
    dest = tmp_path / "net.pth"
    seen = []
    with pytest.raises(DownloadCancelled):
        quiet_download(url, dest, sha256=digest, on_progress=lambda d, t: seen.append(d), cancelled=lambda: bool(seen))
    assert part_path(dest).stat().st_size == seen[0] and not dest.exists()


def test_disk_full_is_one_line_and_keeps_what_was_written(server, tmp_path, monkeypatch):
    url, digest = server.add("net", payload())
    dest = tmp_path / "net.pth"
    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, chunk):
            if self.written >= 65536:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(chunk)
            return self.handle.write(chunk)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(fetch_module, "open", lambda *a, **k: FullDisk(real_open(*a, **k)), raising=False)
    with pytest.raises(DownloadError, match="disk full while writing .*net.pth.part") as error:
        quiet_download(url, dest, sha256=digest)
    assert "\n" not in str(error.value) and not dest.exists()
    kept = part_path(dest).stat().st_size
    assert 65536 <= kept < 300_000
    monkeypatch.undo()
    monkeypatch.setattr(fetch_module, "RETRY_WAIT_S", 0.0)
    quiet_download(url, dest, sha256=digest)  # space freed: it resumes
    assert server.requests[-1][1].get("Range") == f"bytes={kept}-"


def test_a_second_download_of_the_same_file_at_once_is_refused(server, tmp_path):
    fcntl = pytest.importorskip("fcntl")  # POSIX: the lock is flock

    url, digest = server.add("net", payload())
    dest = tmp_path / "net.pth"
    with open(part_path(dest), "ab") as other:  # another process holding the download
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DownloadError, match="being downloaded by another resnet-edge process"):
            quiet_download(url, dest, sha256=digest)
    assert server.requests == []
    quiet_download(url, dest, sha256=digest)  # the other one gone: the lock went with it
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest


def test_an_unwritable_cache_is_one_line(server, tmp_path):
    url, digest = server.add("net", payload())
    dest = tmp_path / "net.pth"
    part_path(dest).mkdir()  # something in the way of the .part
    with pytest.raises(DownloadError, match="cannot write .*net.pth.part"):
        quiet_download(url, dest, sha256=digest)
    part_path(dest).rmdir()
    dest.mkdir()  # and of the final name
    with pytest.raises(DownloadError, match="cannot rename net.pth.part"):
        quiet_download(url, dest, sha256=digest)


def test_too_little_free_space_is_refused_before_the_first_byte(server, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    url, digest = server.add("net", payload())
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DownloadError, match="not enough space"):
        quiet_download(url, tmp_path / "net.pth", sha256=digest)
    assert not part_path(tmp_path / "net.pth").exists() or part_path(tmp_path / "net.pth").stat().st_size == 0


def test_an_existing_file_with_the_right_hash_is_used_without_a_request(server, tmp_path):
    data = payload()
    url, digest = server.add("net", data)
    dest = tmp_path / "net.pth"
    dest.write_bytes(data)
    _, lines = quiet_download(url, dest, sha256=digest)
    assert server.requests == [] and "already downloaded" in lines[0]
    dest.write_bytes(data[:-1] + b"x")  # damaged: replaced by a fresh download
    quiet_download(url, dest, sha256=digest)
    assert len(server.requests) == 1 and dest.read_bytes() == data


def test_http_proxy_from_the_environment_is_used_and_named_without_its_password(server, tmp_path, monkeypatch):
    data = payload()
    server.files["/models/net-00000000.pth"] = data
    # an address that refuses connections: only the proxy (our server) can answer it
    url = "http://127.0.0.2:9/models/net-00000000.pth?token=s3cr3t"
    monkeypatch.setenv("HTTP_PROXY", f"http://proxyuser:pr0xypass@127.0.0.1:{server.port}")
    monkeypatch.setenv("http_proxy", f"http://proxyuser:pr0xypass@127.0.0.1:{server.port}")
    _, lines = quiet_download(url, tmp_path / "net.pth", sha256=hashlib.sha256(data).hexdigest())
    assert server.requests[0][0] == url  # the absolute URL: a request to a proxy
    assert "Proxy-Authorization" in server.requests[0][1]
    text = "\n".join(lines)
    assert f"via proxy http://proxyuser:***@127.0.0.1:{server.port}" in text
    assert "pr0xypass" not in text and "s3cr3t" not in text
    assert (tmp_path / "net.pth").read_bytes() == data


def test_https_proxy_from_the_environment_carries_the_published_url(server, tmp_path, monkeypatch):
    """HTTPS_PROXY: the published https URL goes to the proxy as a CONNECT tunnel (our local server refuses
    it, so nothing leaves this machine) and the refusal is one line naming the proxy without its password."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://me:pr0xypass@127.0.0.1:{server.port}")
    monkeypatch.setenv("https_proxy", f"http://me:pr0xypass@127.0.0.1:{server.port}")
    published = preset("resnet18")
    assert fetch_module.proxy_for(published.url) == f"http://me:pr0xypass@127.0.0.1:{server.port}"
    with pytest.raises(DownloadError) as error:
        quiet_download(published.url, tmp_path / published.filename, sha256=published.sha256, retries=0)
    assert server.requests[0][0] == "CONNECT download.pytorch.org:443"
    assert f"proxy http://me:***@127.0.0.1:{server.port}" in str(error.value) and "pr0xypass" not in str(error.value)
    assert "\n" not in str(error.value) and not (tmp_path / published.filename).exists()
    monkeypatch.setenv("NO_PROXY", "download.pytorch.org")
    monkeypatch.setenv("no_proxy", "download.pytorch.org")
    assert fetch_module.proxy_for(published.url) is None  # NO_PROXY is honoured too


def test_cache_and_models_folders_follow_flags_then_environment_then_the_platform(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xc"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xd"))
    if sys.platform.startswith("linux"):
        assert cache_dir() == tmp_path / "xc" / "resnet-edge" / "weights"
        assert user_models_dir() == tmp_path / "xd" / "resnet-edge" / "models"
    monkeypatch.setenv("RESNET_EDGE_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("RESNET_EDGE_MODELS", str(tmp_path / "m"))
    assert cache_dir() == tmp_path / "c" and user_models_dir() == tmp_path / "m"
    assert cache_dir(tmp_path / "flag") == tmp_path / "flag" and user_models_dir("d") == Path("d")


def test_models_in_the_user_folder_are_found_by_name_beside_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    folder = tmp_path / "resnet-edge" / "models"
    folder.mkdir(parents=True)
    (folder / "imagenet-resnet50.onnx").write_bytes(b"x")
    (folder / "imagenet-resnet50.int8.onnx").write_bytes(b"x")
    assert find_model("imagenet-resnet50") == folder / "imagenet-resnet50.onnx"
    assert find_model("imagenet-resnet50", "int8") == folder / "imagenet-resnet50.int8.onnx"
    assert find_model().name == "cifar10-resnet20.onnx"  # the shipped default still comes first
    with pytest.raises(UserError, match="resnet-edge fetch imagenet-resnet18"):
        find_model("imagenet-resnet18")


# --- the command ------------------------------------------------------------------------------------------


def fetch_env(tmp_path: Path, presets: Path | None = None) -> dict[str, str]:
    """Cache and models in the test's own per-user folders (XDG), no proxy, our presets file."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "RESNET_EDGE_CACHE": "", "RESNET_EDGE_MODELS": "", "RESNET_EDGE_PRESETS": str(presets or ""),
           "PYTHONPATH": str(ROOT)}
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env[name] = ""
    return env


def test_fetch_list_shows_every_preset(tmp_path):
    result = run_cli("fetch", "--list", env=fetch_env(tmp_path))
    assert result.returncode == 0, result.stderr
    for p in PUBLISHED:
        assert p.model_name in result.stdout and p.tag in result.stdout
    assert "80.86" in result.stdout and str(tmp_path / "cache") in result.stdout


def test_fetch_mistakes_are_one_line_exit_2(tmp_path, server):
    env = fetch_env(tmp_path)
    for args, needle in ((["resnet18", "--weights", "v2"], "no v2 weights"),
                         (["resnet50", "--int8"], "--int8 needs --calib"),
                         (["resnet50", "--int8", "--calib", str(tmp_path / "nope")], "no such folder"),
                         ([], "name a model to fetch")):
        result = run_cli("fetch", *args, env=env)
        assert result.returncode == 2 and needle in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert server.requests == []


def test_fetch_into_another_models_dir_names_the_file_and_does_nothing_twice(tmp_path, server):
    url, digest = server.add("net", payload())
    presets = tmp_path / "presets.json"
    presets.write_text(json.dumps([{"name": "some-net", "arch": "resnet20", "url": url, "sha256": digest}]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "some-net.onnx").write_bytes(b"exported before")
    result = run_cli("fetch", "some-net", "--models-dir", str(elsewhere), env=fetch_env(tmp_path, presets))
    assert result.returncode == 0, result.stderr
    assert "already there" in result.stdout and f"--model {elsewhere / 'some-net.onnx'}" in result.stdout
    assert server.requests == []  # nothing to do: no download either


@pytest.fixture()
def tiny_preset(tmp_path, server):
    """A small resnet20 checkpoint in torchvision's layout (a bare state_dict), served by the local server and
    named in a presets file, as a user's own mirror would be."""
    torch = pytest.importorskip("torch")
    from resnet_edge.training.nets import create_model

    torch.manual_seed(0)
    checkpoint = tmp_path / "r20.pth"
    torch.save(create_model("resnet20", num_classes=10).state_dict(), checkpoint)
    url, digest = server.add("resnet20", checkpoint.read_bytes())
    url += "?token=t0psecret"  # a signed mirror URL: the token must not be shown or stored
    presets = tmp_path / "presets.json"
    presets.write_text(json.dumps([{
        "name": "test-resnet20", "arch": "resnet20", "url": url, "sha256": digest, "categories": "cifar10",
        "resize_size": 36, "crop_size": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26],
        "acc1": 91.5, "acc5": 99.7, "file_size_mib": 1.1}]))
    return presets, url, digest


@needs_torch
@pytest.mark.torch
@pytest.mark.slow
def test_fetch_end_to_end_downloads_exports_quantizes_and_every_command_finds_it(
        tiny_preset, server, tmp_path, color_folder, image_dir):
    presets, url, digest = tiny_preset
    env = fetch_env(tmp_path, presets)
    result = run_cli("fetch", "test-resnet20", "--int8", "--calib", str(color_folder), "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    cached = tmp_path / "cache" / "resnet-edge" / "weights" / urlsplit(url).path.rsplit("/", 1)[-1]
    models = tmp_path / "data" / "resnet-edge" / "models"
    assert cached.is_file() and (models / "test-resnet20.onnx").is_file() and (models / "test-resnet20.int8.onnx").is_file()
    assert "ready: resnet-edge classify --model test-resnet20 --precision int8" in result.stdout
    assert "t0psecret" not in result.stdout + result.stderr
    assert b"t0psecret" not in (models / "test-resnet20.onnx").read_bytes()

    for precision in ("fp32", "int8"):
        info = run_cli("info", "--json", str(find_in(models, precision)), env=env)
        metadata = json.loads(info.stdout)["metadata"]
        assert metadata["weights"]["sha256"] == digest and metadata["weights"]["url"] == redact_url(url)
        assert metadata["weights"]["acc1"] == 91.5 and metadata["weights"]["resize_size"] == 36
        assert metadata["resize"]["crop_ratio"] == pytest.approx(32 / 36) and metadata["labels"][0] == "airplane"
        assert metadata["mean"] == [0.49, 0.48, 0.45] and metadata["precision"] == precision

    classified = run_cli("classify", "--model", "test-resnet20", "--precision", "int8", "--source", str(image_dir),
                         "--provider", "cpu", env=env)
    assert classified.returncode == 0, classified.stderr
    assert "summary: 5 frames" in classified.stdout and str(models / "test-resnet20.int8.onnx") in classified.stdout

    requests = len(server.requests)
    again = run_cli("fetch", "test-resnet20", "--int8", "--calib", str(color_folder), env=env)
    assert again.returncode == 0 and "already there" in again.stdout and len(server.requests) == requests
    (models / "test-resnet20.int8.onnx").unlink()
    cached.unlink()  # the int8 model is made from the fp32 one: no download needed
    again = run_cli("fetch", "test-resnet20", "--int8", "--calib", str(color_folder), "--no-progress", env=env)
    assert again.returncode == 0, again.stderr
    assert (models / "test-resnet20.int8.onnx").is_file() and len(server.requests) == requests
    listed = run_cli("fetch", "--list", env=env)
    row = next(line for line in listed.stdout.splitlines() if line.startswith("test-resnet20"))
    assert " no " in row and "fp32, int8" in row


def find_in(models: Path, precision: str) -> Path:
    return models / ("test-resnet20.onnx" if precision == "fp32" else "test-resnet20.int8.onnx")


CLI_WITHOUT_TORCH = BLOCK_TORCH + """
from resnet_edge.cli import main
code = main(sys.argv[1:])
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
sys.exit(code)
"""


@needs_torch
@pytest.mark.torch
def test_without_torch_the_download_completes_and_one_line_asks_for_the_train_extra(tiny_preset, tmp_path):
    presets, url, digest = tiny_preset
    result = subprocess.run([sys.executable, "-c", CLI_WITHOUT_TORCH, "fetch", "test-resnet20", "--no-progress"],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, **fetch_env(tmp_path, presets)},
                            timeout=120)
    assert result.returncode == 2, result.stderr
    cached = tmp_path / "cache" / "resnet-edge" / "weights" / urlsplit(url).path.rsplit("/", 1)[-1]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    assert len(result.stderr.strip().splitlines()) == 1 and "pip install -e '.[train]'" in result.stderr


def test_ctrl_c_during_fetch_exits_130_with_one_line_and_the_rerun_resumes(server, tmp_path):
    data = payload(2_000_000)
    url, digest = server.add("resnet20", data)
    presets = tmp_path / "presets.json"
    presets.write_text(json.dumps([{"name": "slow-net", "arch": "resnet20", "url": url, "sha256": digest}]))
    env = {**os.environ, **fetch_env(tmp_path, presets)}
    server.delay_s = 0.1  # about 12 s for the whole file: a loaded CI machine still interrupts it midway
    # Ctrl-C as a terminal delivers it: a shell's background job inherits SIGINT ignored, so the child puts
    # Python's own handler back first (else this test would pass or fail with how pytest was started)
    restore_ctrl_c = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                      "from resnet_edge.cli import main; sys.exit(main())")
    process = subprocess.Popen([sys.executable, "-c", restore_ctrl_c, "fetch", "slow-net", "--download-only"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = tmp_path / "cache" / "resnet-edge" / "weights" / (url.rsplit("/", 1)[-1] + ".part")
    deadline = time.monotonic() + 60
    while not (part.is_file() and part.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("interrupted:") and "Traceback" not in err
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    server.delay_s = 0.0
    result = run_cli("fetch", "slow-net", "--download-only", "--no-progress", env=fetch_env(tmp_path, presets))
    assert result.returncode == 0, result.stderr
    assert server.requests[-1][1].get("Range") == f"bytes={kept}-"
    assert hashlib.sha256(part.with_suffix("").read_bytes()).hexdigest() == digest
