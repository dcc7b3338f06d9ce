"""The asset store: files on disk named by the sha256 of their bytes.

Layout under the store root::

    objects/ab/ab12...ef.wav     one file per distinct content (first two hex digits fan out)
    tmp/<random>.part            writes in progress

- Content-addressed and deduplicated: the same bytes are stored once, whoever adds them.
- Atomic: bytes go to a temp file in the same filesystem, are fsynced, then `os.replace`d into place,
  so a reader (or a process killed mid-write) never sees a partial file under a final name.
- Hostile names are harmless: the stored name is `<sha256><ext>` where `ext` is a short
  `[a-z0-9]` suffix or nothing; the original name survives only as metadata (`safe_display_name`).
- Size limits: a write over `max_bytes` is stopped as soon as it crosses the limit.
- Garbage collection (`sweep`) removes files whose hash the caller no longer references.

The store knows nothing of the database; `storage.projects` records an `Asset` row per file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .errors import AssetError, AssetTooLargeError
from .settings import DEFAULT_MAX_ASSET_BYTES

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_EXT_RE = re.compile(r"^\.[a-z0-9]{1,10}$")
_CHUNK = 1 << 20
# Files younger than this are never collected: a render or an import may have written them and
# not yet committed the database row that references them.
DEFAULT_GRACE_S = 3600.0


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    ext: str
    size: int
    path: Path


@dataclass(frozen=True)
class SweepReport:
    files_removed: int
    bytes_freed: int
    temp_removed: int


def safe_ext(name: str | os.PathLike | None) -> str:
    """The suffix of `name` if it is short and plain (".wav", ".json"), else "" (hostile or odd)."""
    if not name:
        return ""
    base = re.split(r"[\\/]", str(name))[-1]
    dot = base.rfind(".")
    if dot <= 0:
        return ""
    ext = base[dot:].lower()
    return ext if _EXT_RE.match(ext) else ""


def safe_display_name(name: str | os.PathLike | None, limit: int = 255) -> str:
    """An original file name fit to keep as metadata: last path component only, no control or
    format characters, NFC, at most `limit` characters. Never used to build a path."""
    text = unicodedata.normalize("NFC", str(name or ""))
    text = re.split(r"[\\/]", text)[-1]
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("C"))
    text = text.strip().strip(".") or "unnamed"
    return text[:limit]


def check_sha256(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA_RE.match(sha):
        raise AssetError(f"not a sha256 hex digest: {sha!r}")
    return sha


class AssetStore:
    """Content-addressed files under `root`. Thread- and process-safe for writers: two writers of
    the same content both succeed and leave one file."""

    def __init__(self, root: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_ASSET_BYTES, durable: bool = True):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.root = Path(root).expanduser().resolve()
        self.max_bytes = max_bytes
        self.durable = durable  # fsync files and folders (off only in benchmarks/tests that need speed)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"AssetStore({str(self.root)!r}, max_bytes={self.max_bytes})"

    # ---------------------------------------------------------------- paths
    def path_for(self, sha256: str, ext: str = "") -> Path:
        check_sha256(sha256)
        if ext and not _EXT_RE.match(ext):
            raise AssetError(f"unsafe file extension {ext!r}")
        return self.objects / sha256[:2] / f"{sha256}{ext}"

    def exists(self, sha256: str, ext: str = "") -> bool:
        return self.path_for(sha256, ext).is_file()

    # ---------------------------------------------------------------- writing
    def put_bytes(self, data: bytes, ext: str = "") -> StoredFile:
        return self.put_stream(io.BytesIO(data), ext)

    def put_file(self, path: str | os.PathLike, ext: str | None = None) -> StoredFile:
        """Copy a file in. `ext` defaults to the file's own (safe) suffix."""
        path = Path(path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise AssetError(f"{path}: file not found") from None
        if not path.is_file():
            raise AssetError(f"{path}: not a regular file")
        self._check_size(size, str(path))
        with open(path, "rb") as f:
            return self.put_stream(f, safe_ext(path.name) if ext is None else ext)

    def put_stream(self, src: BinaryIO, ext: str = "", *, expected_sha256: str | None = None,
                   expected_size: int | None = None) -> StoredFile:
        """Stream `src` into the store, hashing as it goes; stops at `max_bytes` (or `expected_size`,
        when given) so an endless or lying source cannot fill the disk."""
        if ext and not _EXT_RE.match(ext):
            raise AssetError(f"unsafe file extension {ext!r}")
        if expected_size is not None:
            self._check_size(expected_size, "asset")
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        h, size = hashlib.sha256(), 0
        try:
            with open(tmp, "xb") as out:
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    if expected_size is not None and size > expected_size:
                        raise AssetError(f"asset is larger than its declared {expected_size} bytes")
                    self._check_size(size, "asset")
                    h.update(chunk)
                    out.write(chunk)
                if self.durable:
                    out.flush()
                    os.fsync(out.fileno())
            sha = h.hexdigest()
            if expected_size is not None and size != expected_size:
                raise AssetError(f"asset has {size} bytes, expected {expected_size}")
            if expected_sha256 is not None and sha != expected_sha256:
                raise AssetError(f"asset content does not match its sha256 (expected {expected_sha256[:12]}..., "
                                 f"got {sha[:12]}...): the file is corrupt")
            final = self.path_for(sha, ext)
            if _same_size(final, size) and _touch(final):
                # Dedup: the existing file stays; its mtime is refreshed so a concurrent sweep spares it.
                tmp.unlink()
            else:
                final.parent.mkdir(exist_ok=True)
                os.replace(tmp, final)
                if self.durable:
                    _fsync_dir(final.parent)
            return StoredFile(sha256=sha, ext=ext, size=size, path=final)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _check_size(self, size: int, what: str) -> None:
        if size > self.max_bytes:
            raise AssetTooLargeError(
                f"{what}: {size} bytes or more, over the asset limit of {self.max_bytes} bytes "
                f"(SVI_MAX_ASSET_BYTES)")

    # ---------------------------------------------------------------- reading
    def read_bytes(self, sha256: str, ext: str = "") -> bytes:
        path = self.path_for(sha256, ext)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise AssetError(f"asset {sha256[:12]}... is missing from the store ({path})") from None

    def verify(self, sha256: str, ext: str = "") -> bool:
        """Re-hash a stored file: False when missing or corrupt."""
        path = self.path_for(sha256, ext)
        if not path.is_file():
            return False
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        return h.hexdigest() == sha256

    def iter_files(self) -> Iterator[tuple[str, Path]]:
        """(sha256, path) of every stored file."""
        for sub in sorted(self.objects.iterdir()):
            if not sub.is_dir():
                continue
            for p in sub.iterdir():
                sha = p.name[:64]
                if _SHA_RE.match(sha) and p.is_file():
                    yield sha, p

    # ---------------------------------------------------------------- garbage collection
    def sweep(self, keep: Iterable[str], *, grace_s: float = DEFAULT_GRACE_S, now: float | None = None) -> SweepReport:
        """Delete stored files whose sha256 is not in `keep` and left-over temp files, sparing
        anything modified in the last `grace_s` seconds (it may belong to a write in flight)."""
        keep = set(keep)
        cutoff = (time.time() if now is None else now) - grace_s
        removed = freed = temps = 0
        for sha, path in list(self.iter_files()):
            if sha in keep:
                continue
            try:
                st = path.stat()
                if st.st_mtime > cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
            freed += st.st_size
        for p in self.tmp.iterdir():
            try:
                if p.stat().st_mtime <= cutoff:
                    p.unlink()
                    temps += 1
            except FileNotFoundError:
                continue
        return SweepReport(files_removed=removed, bytes_freed=freed, temp_removed=temps)


def _same_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _touch(path: Path) -> bool:
    try:
        os.utime(path)
        return True
    except FileNotFoundError:
        return False


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
