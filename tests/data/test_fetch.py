"""``fetch``: download, verify, resume and offline behaviour against a local HTTP server.

The server runs on 127.0.0.1 (ephemeral port) in a thread and serves files placed in ``tmp_path``:
copies of the shared Los-loop files (checked against the real registry entry) when
``../shared/data/los_loop`` is present, and synthetic bytes with a registry entry built here (always).
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stmgt.data.fetch import DATASETS, Dataset, RemoteFile, fetch
from stmgt.errors import DataError
from stmgt.paths import sha256_file as sha256_of

SHARED = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
BLOB = bytes(range(256)) * 1000  # 256 kB, several read chunks
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
SYNTH = {
    "synth": Dataset(
        files=(
            RemoteFile("blob.bin", "http://example.invalid", "files/blob.bin", BLOB_SHA, len(BLOB)),
            RemoteFile("sub/small.txt", "http://example.invalid", "files/small.txt",
                       hashlib.sha256(b"hello\n").hexdigest(), 6),
        ),
        format=None,
        description="test bytes",
        license="none",
    )
}


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.root``; honours ``Range`` unless told not to; can drop or corrupt a response."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        f = srv.root / self.path.lstrip("/")
        if not f.is_file():
            self.send_error(404)
            return
        data = f.read_bytes()
        if srv.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        start = 0
        if rng and srv.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.drop_next:  # announce the full length, send half, hang up
            srv.drop_next -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    (root / "files").mkdir(parents=True)
    (root / "files" / "blob.bin").write_bytes(BLOB)
    (root / "files" / "small.txt").write_bytes(b"hello\n")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.root, srv.requests, srv.corrupt, srv.honour_range, srv.drop_next = root, [], False, True, 0
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _fetch(server, dest, **kw):
    kw.setdefault("progress", False)
    return fetch("synth", dest, base_url=server.url, datasets=SYNTH, timeout=5, **kw)


def _no_part(folder: Path) -> bool:
    return not any(p.name.endswith(".part") for p in folder.rglob("*"))


def test_good_download_and_skip_present(server, tmp_path):
    dest = tmp_path / "out"
    assert _fetch(server, dest, progress=True) == dest
    assert sha256_of(dest / "blob.bin") == BLOB_SHA
    assert (dest / "sub" / "small.txt").read_bytes() == b"hello\n"
    assert _no_part(dest) and len(server.requests) == 2
    _fetch(server, dest)  # already present with the right hash: no request
    assert len(server.requests) == 2
    (dest / "sub" / "small.txt").write_bytes(b"tampered")  # wrong hash: fetched again
    _fetch(server, dest)
    assert len(server.requests) == 3 and (dest / "sub" / "small.txt").read_bytes() == b"hello\n"


def test_corrupt_download_leaves_nothing(server, tmp_path):
    server.corrupt = True
    dest = tmp_path / "out"
    with pytest.raises(DataError) as e:
        _fetch(server, dest)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("blob.bin: sha256 mismatch")
    assert f"expected {BLOB_SHA}" in msg and "got " in msg
    assert not (dest / "blob.bin").exists() and _no_part(dest)


def test_dropped_connection_then_resume(server, tmp_path):
    dest = tmp_path / "out"
    server.drop_next = 1
    with pytest.raises(DataError, match="was interrupted after .* run fetch again to resume"):
        _fetch(server, dest, retries=0)
    part = dest / "blob.bin.part"
    assert part.stat().st_size == len(BLOB) // 2 and not (dest / "blob.bin").exists()
    _fetch(server, dest)
    assert sha256_of(dest / "blob.bin") == BLOB_SHA and _no_part(dest)
    assert server.requests[1] == ("/files/blob.bin", f"bytes={len(BLOB) // 2}-")


def test_dropped_connection_retried_in_one_call(server, tmp_path):
    server.drop_next = 1
    _fetch(server, tmp_path / "out")
    assert sha256_of(tmp_path / "out" / "blob.bin") == BLOB_SHA
    assert [r for _, r in server.requests[:2]] == [None, f"bytes={len(BLOB) // 2}-"]


def test_server_ignoring_range_restarts(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "blob.bin.part").write_bytes(b"x" * 1000)  # junk from an earlier attempt
    _fetch(server, dest)
    assert sha256_of(dest / "blob.bin") == BLOB_SHA and _no_part(dest)


def test_offline_message(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    dest = tmp_path / "out"
    with pytest.raises(DataError) as e:
        fetch("synth", dest, base_url=f"http://127.0.0.1:{port}", datasets=SYNTH, progress=False, timeout=2)
    msg = str(e.value)
    assert "\n" not in msg and "offline" in msg and "download by hand" in msg
    assert "http://example.invalid/files/blob.bin -> " in msg and str(dest / "blob.bin") in msg
    assert not (dest / "blob.bin").exists()


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'nope'; available: los_loop"):
        fetch("nope", tmp_path)


def test_registry_pins_commits_and_hashes():
    for name, ds in DATASETS.items():
        for f in ds.files:
            assert f.url.startswith("https://raw.githubusercontent.com/"), name
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0
            assert any(len(part) == 40 for part in f.host.split("/")), f"{name}: URL not pinned to a commit"
    urls = {f.name: f.url for f in DATASETS["los_loop"].files}
    commit = "219a2346f5bf68d54d91a948e7a41a08f9edc46b"
    assert urls["los_speed.csv"] == f"https://raw.githubusercontent.com/lehaifeng/T-GCN/{commit}/data/los_speed.csv"


@pytest.mark.shared_data
def test_real_los_loop_registry_entry(server, tmp_path):
    src = SHARED / "los_loop"
    if not src.is_dir():
        pytest.skip("../shared/data/los_loop not present (real dataset; see shared/data/README.md)")
    (server.root / "data").mkdir()
    for f in DATASETS["los_loop"].files:
        shutil.copy(src / f.name, server.root / f.path)  # the copies live in tmp_path only
    dest = fetch("los_loop", tmp_path / "los", base_url=server.url, progress=False, timeout=5)
    for f in DATASETS["los_loop"].files:
        assert sha256_of(dest / f.name) == f.sha256 == sha256_of(src / f.name)
    assert _no_part(dest)
