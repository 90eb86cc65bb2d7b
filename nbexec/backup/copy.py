"""Copy files with their sha256 computed on the fly, verify, then publish them atomically.

Each file is written to a hidden temporary name beside its final one
(``.<name>.<random>.nbexec-tmp``), flushed to disk, and only then renamed
into place. A killed copy leaves at most a temporary file, which the next
backup removes; a file under its final name is always a complete, verified copy.

The source is read from disk once, in chunks, and each chunk is hashed as it
arrives; the bytes themselves are moved by the kernel (``copy_file_range``,
from the page cache the read just filled), which is several times faster here
than writing them from Python; where the kernel cannot (another filesystem,
another OS) the hashed buffer itself is written. Each chunk is then read
back from the destination and compared with the bytes that were hashed, so
the copy's sha256 is the one recorded (a byte compare, not a second sha256
pass: the hashing is the cost that matters). Hashing a chunk overlaps writing
and checking the previous one (a writer thread), and a file's fsync and
rename (a publishing thread) overlap hashing the next file; ``hashlib`` and
file I/O release the GIL. :func:`nbexec.hashing.file_sha256` re-hashes a whole file
(``verify_backup``, restores).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nbexec.errors import BackupError

CHUNK = 8 << 20  # 8 MiB: few syscalls; the hashing speed hardly depends on it
TMP_SUFFIX = ".nbexec-tmp"
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ETXTBSY}


@dataclass(frozen=True)
class CopiedFile:
    """A published copy: its size, sha256 and the destination's stat after the rename."""

    size: int
    sha256: str
    dest_mtime_ns: int
    dest_ctime_ns: int


def tmp_name(dest: Path) -> Path:
    """A fresh hidden temporary name beside ``dest``."""
    return dest.with_name(f".{dest.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def is_tmp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def remove_stale_tmp(root: Path) -> int:
    """Delete temporary files a killed copy left under ``root``; returns how many."""
    removed = 0
    if not root.is_dir():
        return 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if is_tmp_name(name):
                Path(dirpath, name).unlink(missing_ok=True)
                removed += 1
    return removed


def _discard(path: Path) -> None:
    """Remove a temporary file; never raises (its folder may be what failed)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _fsync_file(path: Path) -> None:
    """Flush a written file's data to disk (fsync acts on the file, whichever descriptor wrote it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every filesystem allows it)."""
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


class _Mismatch(Exception):
    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class Copier:
    """Copies files one after the other (see the module docstring).

    Use as a context manager; :meth:`copy` returns a future per file that
    resolves once the verified file is published (or raises BackupError).
    """

    def __init__(self, *, durable: bool = True) -> None:
        self.durable = durable
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="nbexec-backup-write")
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="nbexec-backup-publish")
        self._bufs = (bytearray(CHUNK), bytearray(CHUNK))
        self._check_buf = bytearray(CHUNK)
        self._kernel_copy = hasattr(os, "copy_file_range")

    def __enter__(self) -> Copier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._publisher.shutdown(wait=True)

    def copy(
        self,
        src: Path,
        dest: Path,
        *,
        label: str,
        expected_sha256: str | None = None,
        on_published: Callable[[CopiedFile], None] | None = None,
    ) -> Future[CopiedFile]:
        """Copy ``src`` to ``dest`` (see the module docstring).

        Args:
            label: how errors name the file (its path in the backup).
            expected_sha256: the source must hash to this (a restore checks the
                backup against its manifest this way).
            on_published: called in the publishing thread after the rename.

        Returns:
            A future of the :class:`CopiedFile`; it raises BackupError when the
            source cannot be read, the destination written, or a hash differs.
        """
        tmp = tmp_name(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            size, digest = self._copy_hashed(src, tmp)
        except BaseException as err:
            _discard(tmp)
            if isinstance(err, _Mismatch):
                raise BackupError(
                    f"verification failed for {label}: the copy at {dest} reads back different bytes at offset "
                    f"{err.offset} than were read from {src}; the destination is not storing data faithfully "
                    "(check the disk or Drive), then back up again"
                ) from None
            if isinstance(err, OSError):
                raise BackupError(f"cannot copy {label} ({src} -> {dest}): {err.strerror or err}") from err
            raise
        if expected_sha256 is not None and digest != expected_sha256:
            _discard(tmp)
            raise BackupError(
                f"{label}: {src} does not match the manifest (sha256 {digest[:16]}..., "
                f"expected {expected_sha256[:16]}...); this copy is damaged"
            )
        return self._publisher.submit(self._publish, tmp, dest, size, digest, label, on_published)

    def _copy_hashed(self, src: Path, tmp: Path) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        pending: Future[None] | None = None
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with open(src, "rb", buffering=0) as fsrc:
                i = 0
                while True:
                    buf = self._bufs[i % 2]  # the other buffer may still be being written
                    n = fsrc.readinto(buf)
                    if not n:
                        break
                    view = memoryview(buf)[:n]
                    digest.update(view)  # overlaps the previous chunk's write
                    if pending is not None:
                        pending.result()
                    pending = self._writer.submit(self._write_and_check, fsrc.fileno(), fd, buf, n, size)
                    size += n
                    i += 1
                if pending is not None:  # before the source closes: the kernel copy reads from it
                    pending.result()
                    pending = None
        finally:
            if pending is not None:  # a read failed while a write was in flight
                try:
                    pending.result()
                except OSError:
                    pass
            os.close(fd)
        return size, digest.hexdigest()

    def _write_and_check(self, src_fd: int, fd: int, buf: bytearray, n: int, offset: int) -> None:
        """Write ``buf[:n]`` at ``offset``, read it back and compare (raises _Mismatch)."""
        self._write_chunk(src_fd, fd, memoryview(buf)[:n], offset)
        back = self._check_buf
        got = 0
        while got < n:
            k = os.preadv(fd, [memoryview(back)[got:n]], offset + got)
            if k == 0:
                break
            got += k
        # bytearray == bytearray is a memcmp; memoryview == memoryview compares item by item
        same = got == n and (back == buf if n == len(buf) else back[:n] == buf[:n])
        if not same:
            raise _Mismatch(offset)

    def _write_chunk(self, src_fd: int, fd: int, data: memoryview, offset: int) -> None:
        """Write the chunk at ``offset``: by the kernel from the source when it can, else from ``data``."""
        if self._kernel_copy:
            try:
                done = 0
                while done < len(data):
                    n = os.copy_file_range(src_fd, fd, len(data) - done, offset + done, offset + done)
                    if n == 0:  # the source shrank since it was read: write what was hashed
                        break
                    done += n
                if done == len(data):
                    return
                os.lseek(fd, offset, os.SEEK_SET)
            except OSError as err:
                if err.errno not in _NO_KERNEL_COPY:
                    raise
                self._kernel_copy = False  # e.g. across filesystems (Drive's FUSE mount): user-space writes
                os.lseek(fd, offset, os.SEEK_SET)
        os.lseek(fd, offset, os.SEEK_SET)
        _write_all(fd, data)

    def _publish(
        self,
        tmp: Path,
        dest: Path,
        size: int,
        digest: str,
        label: str,
        on_published: Callable[[CopiedFile], None] | None,
    ) -> CopiedFile:
        try:
            if self.durable:  # here, not while hashing: the next file is hashed while this one syncs
                _fsync_file(tmp)
            os.replace(tmp, dest)
        except BaseException as err:
            _discard(tmp)
            if isinstance(err, OSError) and not isinstance(err, BackupError):
                raise BackupError(f"cannot write {label} to {dest}: {err.strerror or err}") from err
            raise
        st = dest.stat()
        copied = CopiedFile(size=size, sha256=digest, dest_mtime_ns=st.st_mtime_ns, dest_ctime_ns=st.st_ctime_ns)
        if on_published is not None:
            on_published(copied)
        return copied


__all__ = ["CHUNK", "Copier", "CopiedFile", "fsync_dir", "remove_stale_tmp", "is_tmp_name"]
