"""FMA downloader against a real local HTTP server: verify, extract, resume, mismatch, no-op."""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import genretag.training.download as dl
from genretag.training import fma_cli
from genretag.training.download import COMPLETE_MARKER, ChecksumError, DownloadError, download_fma


@dataclass
class Served:
    """What the test server serves and what it saw."""

    files: dict[str, bytes]
    honour_range: bool = True
    drop_first_after: int | None = None  # cut the first response after this many bytes
    requests: list[dict[str, object]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    served: Served

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        served = self.server.served  # type: ignore[attr-defined]
        name = self.path.rsplit("/", 1)[-1]
        entry: dict[str, object] = {"name": name, "range": self.headers.get("Range")}
        served.requests.append(entry)
        body = served.files.get(name)
        if body is None:
            entry["status"] = 404
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and served.honour_range:
            start = int(match.group(1))
            if start >= len(body):
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            entry["status"] = 206
        else:
            self.send_response(200)
            entry["status"] = 200
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Content-Type", "application/zip")
        self.end_headers()
        if served.drop_first_after is not None and len(served.requests) == 1:
            chunk = chunk[: served.drop_first_after]  # then the connection closes early
        self.wfile.write(chunk)
        entry["sent"] = len(chunk)


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served(files={})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.served = served  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/fma/", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def archives() -> dict[str, bytes]:
    rng = random.Random(0)
    clip = rng.randbytes(300_000)
    return {
        "fma_metadata.zip": _zip({
            "fma_metadata/tracks.csv": b",set\n,subset\ntrack_id,\n2,small\n",
            "fma_metadata/genres.csv":
                b"genre_id,#tracks,parent,title,top_level\n21,1,0,Hip-Hop,21\n",
        }),
        "fma_small.zip": _zip({
            "fma_small/README.txt": b"fixture",
            "fma_small/000/000002.mp3": clip,
            "fma_small/001/001039.mp3": clip[::-1],
        }),
    }


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _sums(archives: dict[str, bytes]) -> dict[str, str]:
    return {name: _sha1(data) for name, data in archives.items()}


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()
                  if p.suffix in (".part", ".zip", ".bad") or p.name.startswith("."))


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl.time, "sleep", lambda s: None)


def test_full_download_verify_extract_and_marker(server, archives, tmp_path: Path) -> None:
    url, served = server
    served.files.update(archives)
    dest = tmp_path / "fma"
    paths = download_fma("small", dest, base_url=url, checksums=_sums(archives), progress=False)
    assert paths == {"fma_metadata": dest / "fma_metadata", "fma_small": dest / "fma_small"}
    with zipfile.ZipFile(io.BytesIO(archives["fma_small.zip"])) as zf:
        expected = zf.read("fma_small/000/000002.mp3")
    assert (dest / "fma_small/000/000002.mp3").read_bytes() == expected
    assert (dest / "fma_metadata/genres.csv").read_text().endswith("Hip-Hop,21\n")
    for folder in paths.values():
        assert (folder / COMPLETE_MARKER).is_file()
    assert _sums(archives)["fma_small.zip"] in (dest / "fma_small" / COMPLETE_MARKER).read_text()
    assert _leftovers(dest) == []  # no .part, zip, tmp dir left behind
    assert [r["status"] for r in served.requests] == [200, 200]

    # re-running is a no-op: no request, files untouched
    mtime = (dest / "fma_small/000/000002.mp3").stat().st_mtime_ns
    assert download_fma("small", dest, base_url=url, checksums=_sums(archives),
                        progress=False) == paths
    assert len(served.requests) == 2
    assert (dest / "fma_small/000/000002.mp3").stat().st_mtime_ns == mtime


def test_resume_from_partial_download(server, archives, tmp_path: Path) -> None:
    url, served = server
    served.files.update(archives)
    dest = tmp_path / "fma"
    dest.mkdir()
    data = archives["fma_small.zip"]
    (dest / "fma_small.zip.part").write_bytes(data[:100_000])
    download_fma("small", dest, base_url=url, checksums=_sums(archives), metadata=False,
                 progress=False)
    assert served.requests == [
        {"name": "fma_small.zip", "range": "bytes=100000-", "status": 206,
         "sent": len(data) - 100_000},
    ]
    assert (dest / "fma_small" / COMPLETE_MARKER).is_file()
    assert (dest / "fma_small/001/001039.mp3").stat().st_size == 300_000
    assert not (dest / "fma_metadata").exists()


def test_server_ignoring_range_restarts_cleanly(server, archives, tmp_path: Path) -> None:
    url, served = server
    served.files.update(archives)
    served.honour_range = False
    dest = tmp_path / "fma"
    dest.mkdir()
    # garbage in the .part: appending the full body to it would fail the checksum
    (dest / "fma_small.zip.part").write_bytes(b"\0" * 50_000)
    download_fma("small", dest, base_url=url, checksums=_sums(archives), metadata=False,
                 progress=False)
    assert [(r["range"], r["status"]) for r in served.requests] == [("bytes=50000-", 200)]
    assert (dest / "fma_small" / COMPLETE_MARKER).is_file()


def test_dropped_connection_is_resumed(server, archives, tmp_path: Path) -> None:
    url, served = server
    served.files.update(archives)
    served.drop_first_after = 123_456
    dest = tmp_path / "fma"
    download_fma("small", dest, base_url=url, checksums=_sums(archives), metadata=False,
                 progress=False, retries=2)
    assert [(r["range"], r["status"]) for r in served.requests] == [
        (None, 200), ("bytes=123456-", 206)]
    assert (dest / "fma_small" / COMPLETE_MARKER).is_file()


def test_complete_part_file_answered_416_is_verified(server, archives, tmp_path: Path) -> None:
    url, served = server
    served.files.update(archives)
    dest = tmp_path / "fma"
    dest.mkdir()
    (dest / "fma_small.zip.part").write_bytes(archives["fma_small.zip"])
    download_fma("small", dest, base_url=url, checksums=_sums(archives), metadata=False,
                 progress=False)
    assert [r["status"] for r in served.requests] == [416]
    assert (dest / "fma_small" / COMPLETE_MARKER).is_file()


def test_checksum_mismatch_is_clear_and_leaves_nothing_complete(
    server, archives, tmp_path: Path
) -> None:
    url, served = server
    served.files.update(archives)
    dest = tmp_path / "fma"
    wrong = {**_sums(archives), "fma_small.zip": "0" * 40}
    with pytest.raises(ChecksumError) as err:
        download_fma("small", dest, base_url=url, checksums=wrong, progress=False)
    message = str(err.value)
    assert "fma_small.zip" in message
    assert f"expected {'0' * 40}" in message
    assert f"got {_sha1(archives['fma_small.zip'])}" in message
    assert not (dest / "fma_small").exists()  # nothing extracted, nothing marked complete
    assert not (dest / "fma_small.zip").exists() and not (dest / "fma_small.zip.part").exists()
    assert (dest / "fma_small.zip.bad").read_bytes() == archives["fma_small.zip"]
    assert (dest / "fma_metadata" / COMPLETE_MARKER).is_file()  # the good archive is fine

    # the next run downloads afresh (not resuming the bad bytes) and succeeds
    download_fma("small", dest, base_url=url, checksums=_sums(archives), progress=False)
    assert served.requests[-1]["range"] is None
    assert (dest / "fma_small" / COMPLETE_MARKER).is_file()


def test_incomplete_extraction_is_replaced(server, archives, tmp_path: Path) -> None:
    url, served = server
    served.files.update(archives)
    dest = tmp_path / "fma"
    junk = dest / "fma_small" / "000" / "half-written.mp3"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"junk")
    (dest / ".fma_small-leftover").mkdir()  # temp dir of an interrupted extraction
    download_fma("small", dest, base_url=url, checksums=_sums(archives), metadata=False,
                 progress=False)
    assert not junk.exists()
    assert (dest / "fma_small" / COMPLETE_MARKER).is_file()
    assert _leftovers(dest) == []


def test_http_error_is_reported(server, tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(DownloadError, match=r"fma_small\.zip: HTTP 404"):
        download_fma("small", tmp_path, base_url=url, metadata=False, progress=False)
    with pytest.raises(ValueError, match="unknown FMA subset 'tiny'"):
        download_fma("tiny", tmp_path)


def test_cli_download_reports_checksum_mismatch(
    server, archives, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, served = server
    served.files.update(archives)  # these zips do not have the official checksums
    parser = argparse.ArgumentParser()
    fma_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fma", "download", "--subset", "small", "--dest",
                              str(tmp_path / "fma"), "--base-url", url.rstrip("/")])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "fma_metadata.zip: SHA-1 mismatch" in err
    assert dl.FMA_SHA1["fma_metadata.zip"] in err
    assert not (tmp_path / "fma" / "fma_metadata").exists()
