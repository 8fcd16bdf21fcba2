"""Atomic, verified file writes: the one helper every writer of the project uses (standard library only).

A file is written to a hidden temporary name beside its target (``.<stem>.partial-<pid>-<random><suffix>``,
same suffix so writers that pick a format by extension work), flushed to disk, checked (its size, or a
caller's read-back), and only then renamed over the target. Some writers report success on a full disk
(Open3D's and spark-dsg's C++ writers return True with a truncated file), so the check, not the writer's
word, decides. ``AtomicBatch`` does the same for several files at once and renames none of them unless every
one was written and checked: a failed export leaves the previous export whole, never a mix of two runs.
Temporary files of a process that no longer runs (a ``kill -9`` during a write) are removed by the next
write into the same folder.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Callable, Iterable

from mapping import MappingError

PARTIAL = ".partial-"


class ExportError(MappingError, OSError):
    """A file that could not be written; the message names the file and the cause, in one line."""


def describe(exc: BaseException) -> str:
    """The cause of a failed write in a few words: ``No space left on device (errno 28)``."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} (errno {exc.errno})"
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def write_chunks(fd: int, chunks: Iterable[bytes]) -> int:
    """Write every chunk to the open file ``fd`` (a short write is retried); returns the bytes written."""
    total = 0
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        while len(view):
            n = os.write(fd, view)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[n:]
            total += n
    return total


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Remove temporary files left in ``folder`` by writers that died (their process no longer runs)."""
    removed = []
    try:
        entries = list(Path(folder).glob(f".*{PARTIAL}*"))
    except OSError:
        return removed
    for p in entries:
        try:
            pid = int(p.name.split(PARTIAL, 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


class AtomicBatch:
    """Several files written to temporary names and renamed into place together by ``commit``.

    ``with batch.path(target) as tmp:`` (write ``tmp`` yourself, then it is checked) or ``batch.write_bytes``.
    If any write fails, every temporary file is removed and ``ExportError`` names the file and the cause;
    targets are untouched until ``commit``."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temporary, target)
        self._cleaned: set[Path] = set()

    def _temporary(self, target: Path) -> Path:
        folder = target.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create the folder {folder}: {describe(exc)}") from None
        if folder not in self._cleaned:
            remove_stale_partials(folder)
            self._cleaned.add(folder)
        return folder / f".{target.stem}{PARTIAL}{os.getpid()}-{secrets.token_hex(4)}{target.suffix}"

    @contextlib.contextmanager
    def path(self, target: str | Path, check: Callable[[Path], None] | None = None, size: int | None = None):
        """Yield a temporary path for ``target``; afterwards the file must exist, have ``size`` bytes when
        given, and pass ``check(tmp)`` (which raises on a bad file)."""
        target = Path(target)
        tmp = self._temporary(target)
        try:
            yield tmp
            if not tmp.is_file():
                raise OSError(errno.EIO, "the writer produced no file")
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())  # a full disk can surface only here (delayed allocation)
            actual = tmp.stat().st_size
            if size is not None and actual != size:
                raise OSError(errno.EIO, f"the file has {actual} bytes, {size} were written (disk full?)")
            if check is not None:
                check(tmp)
            os.chmod(tmp, 0o644)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self.abort()
            if isinstance(exc, ExportError) or not isinstance(exc, Exception):
                raise
            raise ExportError(f"cannot write {target}: {describe(exc)}") from None
        self._pending.append((tmp, target))

    def write_bytes(self, target: str | Path, *chunks: bytes) -> Path:
        """Write ``chunks`` to a temporary file for ``target`` (checked by its size)."""
        size = sum(memoryview(c).nbytes for c in chunks)
        with self.path(target, size=size) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                write_chunks(fd, chunks)
            finally:
                os.close(fd)
        return Path(target)

    def write_text(self, target: str | Path, text: str) -> Path:
        return self.write_bytes(target, text.encode())

    def commit(self) -> list[Path]:
        """Rename every temporary file onto its target (renames take no space); returns the targets."""
        done = []
        try:
            for tmp, target in self._pending:
                os.replace(tmp, target)
                done.append(target)
        except OSError as exc:
            failed = target
            self.abort()
            raise ExportError(f"cannot write {failed}: {describe(exc)}") from None
        self._pending = []
        return done

    def abort(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending = []

    def __enter__(self) -> "AtomicBatch":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


@contextlib.contextmanager
def atomic_path(path: str | Path, check: Callable[[Path], None] | None = None, size: int | None = None):
    """One file: yield a temporary path beside ``path``; when the body and the checks pass it replaces
    ``path``, otherwise it is removed, ``path`` keeps its previous content and ``ExportError`` is raised."""
    with AtomicBatch() as batch, batch.path(path, check, size) as tmp:
        yield tmp


def atomic_write_bytes(path: str | Path, *chunks: bytes) -> Path:
    with AtomicBatch() as batch:
        batch.write_bytes(path, *chunks)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())
