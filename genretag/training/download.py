"""Download, verify and extract the official FMA archives (stdlib ``urllib`` only).

Downloads resume from a ``.part`` file with an HTTP ``Range`` request (restarting cleanly when the
server ignores it), are checked against the SHA-1 sums published in the FMA README, and are
unzipped into a temporary folder that is renamed into place only once complete; a ``.complete``
marker inside the extracted folder makes re-runs a no-op.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm
from genretag.core.errors import FatalError
from genretag.core.fma.layout import SUBSETS

log = logging.getLogger(__name__)

#: Where the FMA archives live (from https://github.com/mdeff/fma README).
FMA_BASE_URL = "https://os.unil.cloud.switch.ch/fma/"
#: SHA-1 of each official archive (from the same README).
FMA_SHA1: dict[str, str] = {
    "fma_metadata.zip": "f0df49ffe5f2a6008d7dc83c6915b31835dfe733",
    "fma_small.zip": "ade154f733639d52e35e32f5593efe5be76c6d70",
    "fma_medium.zip": "c67b69ea232021025fca9231fc1c7c1a063ab50b",
    "fma_large.zip": "497109f4dd721066b5ce5e5f250ec604dc78939e",
}
#: Name of the marker written into an extracted folder once extraction has finished.
COMPLETE_MARKER = ".complete"

_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


class DownloadError(FatalError):
    """A download failed (HTTP error, connection lost after all retries, bad archive)."""


class ChecksumError(DownloadError):
    """A downloaded file's SHA-1 is not the published one."""

    def __init__(self, name: str, expected: str, actual: str, moved_to: Path | None) -> None:
        self.name, self.expected, self.actual, self.moved_to = name, expected, actual, moved_to
        where = f"; the bad file was moved to {moved_to}" if moved_to else ""
        super().__init__(
            f"{name}: SHA-1 mismatch: expected {expected}, got {actual}{where}. "
            "Nothing was extracted; run again to download it afresh.")


def archive_name(subset: str) -> str:
    """``'small'`` → ``'fma_small.zip'``; ``'metadata'`` → ``'fma_metadata.zip'``."""
    if subset not in (*SUBSETS, "metadata"):
        raise ValueError(f"unknown FMA subset {subset!r}; expected metadata or "
                         f"{', '.join(SUBSETS)}")
    return f"fma_{subset}.zip"


def is_complete(folder: str | Path) -> bool:
    """True if ``folder`` was fully extracted (its ``.complete`` marker exists)."""
    return (Path(folder) / COMPLETE_MARKER).is_file()


def download_fma(
    subset: str,
    dest: str | Path,
    base_url: str = FMA_BASE_URL,
    checksums: Mapping[str, str] | None = None,
    metadata: bool = True,
    keep_archives: bool = False,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Fetch, verify and extract ``fma_metadata`` (unless ``metadata=False``) and ``fma_<subset>``
    into ``dest``; returns ``{'fma_metadata': path, 'fma_small': path}`` for what was asked.

    Already-complete folders are left alone (no network). ``checksums`` overrides
    ``FMA_SHA1`` per archive file name (tests use it).
    """
    if subset not in SUBSETS:
        raise ValueError(f"unknown FMA subset {subset!r}; expected {', '.join(SUBSETS)}")
    sums = {**FMA_SHA1, **(checksums or {})}
    names = (["fma_metadata.zip"] if metadata else []) + [archive_name(subset)]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for name in names:
        out[name.removesuffix(".zip")] = fetch_archive(
            urllib.parse.urljoin(_dir_url(base_url), name), dest, sums[name],
            keep_archive=keep_archives, progress=progress, retries=retries, timeout=timeout)
    return out


def fetch_archive(
    url: str,
    dest: Path,
    sha1: str,
    keep_archive: bool = False,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Download one zip from ``url``, verify its SHA-1 and extract it as ``dest/<stem>``.

    Returns the extracted folder. Skips everything when it is already marked complete and
    reuses an already verified zip left in ``dest``.
    """
    name = Path(urllib.parse.urlparse(url).path).name
    stem = name.removesuffix(".zip")
    target = dest / stem
    if is_complete(target):
        log.info("%s already extracted in %s; nothing to do", name, target)
        return target
    archive = dest / name
    if archive.is_file():
        actual = file_sha1(archive, progress=progress)
        if actual != sha1.lower():
            _reject(archive, sha1, actual)
        log.info("reusing verified %s", archive)
    else:
        download(url, archive, sha1, progress=progress, retries=retries, timeout=timeout)
    extract_zip(archive, target, sha1=sha1, url=url, progress=progress)
    if not keep_archive:
        archive.unlink()
    return target


def download(
    url: str,
    path: Path,
    sha1: str | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 60.0,
    chunk_size: int = _CHUNK,
) -> Path:
    """Download ``url`` to ``path`` via ``path.part``, resuming it; verify ``sha1`` if given.

    Transient network errors are retried (resuming) up to ``retries`` times. On a checksum
    mismatch the file is moved to ``path.bad`` and ``ChecksumError`` is raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    attempt = 0
    while True:
        try:
            digest = _transfer(url, part, progress=progress, timeout=timeout,
                               chunk_size=chunk_size)
            break
        except _TRANSIENT as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code < 500:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            attempt += 1
            if attempt > retries:
                raise DownloadError(
                    f"{url}: {exc!r} after {retries} retries; the partial file {part} is kept "
                    "and the next run resumes it") from exc
            wait = min(30.0, 0.5 * 2 ** (attempt - 1))
            log.warning("%s: %r; resuming in %.1fs (retry %d/%d)", url, exc, wait, attempt,
                        retries)
            time.sleep(wait)
    if sha1 is not None and digest != sha1.lower():
        _reject(part, sha1, digest, name=path.name, bad=path.with_name(path.name + ".bad"))
    os.replace(part, path)
    log.info("downloaded %s (%d bytes, sha1 %s)", path, path.stat().st_size, digest)
    return path


def _transfer(url: str, part: Path, progress: bool, timeout: float, chunk_size: int) -> str:
    """One HTTP attempt appending to ``part``; returns the SHA-1 of the whole file."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "genretag-fma-download"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # asked past the end: the .part may be complete already
            exc.close()
            total = _total_from_content_range(exc.headers.get("Content-Range", ""))
            if total is not None and total == offset:
                log.info("%s: %s already holds all %d bytes", url, part, total)
                return file_sha1(part, progress=progress)
            log.warning("%s: server refused to resume at byte %d; starting over", url, offset)
            part.unlink()
            return _transfer(url, part, progress, timeout, chunk_size)
        raise
    with response:
        status = response.status
        if offset and status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                raise DownloadError(f"{url}: asked to resume at byte {offset}, server sent "
                                    f"Content-Range {response.headers.get('Content-Range')!r}")
            mode = "ab"
            log.info("%s: resuming at byte %d", url, offset)
        elif status == 200:
            if offset:
                log.warning("%s: server ignored the Range request; restarting from byte 0", url)
            offset, mode = 0, "wb"
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {status}")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        hasher = hashlib.sha1()
        if offset:
            _hash_into(part, hasher, progress, desc=f"{part.name} (check)")
        received = 0
        with part.open(mode) as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
        ) as bar:
            while True:
                chunk = response.read(chunk_size)
                if not chunk:
                    break
                f.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if length and length.isdigit() and received != int(length):
            raise http.client.IncompleteRead(b"", int(length) - received)
    return hasher.hexdigest()


def extract_zip(archive: Path, target: Path, sha1: str = "", url: str = "",
                progress: bool = True) -> Path:
    """Unzip ``archive`` so its top folder becomes ``target``, atomically, then mark it complete.

    Extraction goes to a temporary folder next to ``target``; only a fully extracted tree is
    renamed into place, with its ``.complete`` marker already inside. A stale, incomplete
    ``target`` (no marker) is replaced.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}-*"):
        if stale.is_dir():
            log.warning("removing %s, left by an interrupted extraction", stale)
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                for member in tqdm(members, desc=f"unzip {archive.name}", unit="file",
                                   disable=not progress, leave=False):
                    zf.extract(member, tmp)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{archive}: not a valid zip archive: {exc}") from exc
        tops = {m.filename.split("/", 1)[0] for m in members if m.filename.strip("/")}
        root = tmp / target.name if tops == {target.name} and (tmp / target.name).is_dir() else tmp
        marker = {"archive": archive.name, "sha1": sha1, "url": url, "files": len(members),
                  "extracted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (root / COMPLETE_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        if target.exists():
            log.warning("%s exists without a %s marker (an earlier, interrupted extraction); "
                        "replacing it", target, COMPLETE_MARKER)
            shutil.rmtree(target)
        os.replace(root, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("extracted %s into %s (%d entries)", archive.name, target, len(members))
    return target


def file_sha1(path: Path, progress: bool = False) -> str:
    """Hex SHA-1 of a file, read in 1 MiB chunks."""
    hasher = hashlib.sha1()
    _hash_into(path, hasher, progress, desc=f"sha1 {path.name}")
    return hasher.hexdigest()


def _hash_into(path: Path, hasher: Any, progress: bool, desc: str) -> None:
    with path.open("rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                    unit_divisor=1024, desc=desc, disable=not progress,
                                    leave=False) as bar:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
            bar.update(len(chunk))


def _reject(path: Path, expected: str, actual: str, name: str | None = None,
            bad: Path | None = None) -> None:
    """Move a file that failed verification aside (``.bad``) and raise ``ChecksumError``."""
    bad = bad or path.with_name(path.name + ".bad")
    try:
        os.replace(path, bad)
    except OSError:
        path.unlink(missing_ok=True)
        bad = None
    raise ChecksumError(name or path.name, expected.lower(), actual, bad)


def _start_from_content_range(value: str) -> int | None:
    match = _CONTENT_RANGE.match(value.strip())
    return int(match.group(1)) if match else None


def _total_from_content_range(value: str) -> int | None:
    match = re.match(r"bytes\s+\*/(\d+)", value.strip())
    return int(match.group(1)) if match else None


def _dir_url(base_url: str) -> str:
    return base_url if base_url.endswith("/") else base_url + "/"
