"""Writing files so that no reader ever sees half of one, and one lock per file being written.

`write_atomically(path, write)` is the project's one way to write a file that others may read
while it is written (exports, heads, converted weights, display copies): `write(tmp)` fills a
new, uniquely named temporary file in the same folder, which is flushed to disk and renamed onto
`path` (`os.replace`, atomic on one file system); on any failure the temporary file is removed.
Temporary names follow one pattern, `TEMP_FILE`, so a cleaner can tell this app's leftovers (a
process killed mid-write) from everything else (`is_temp_file`).

No third-party imports: any layer may use this.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["TEMP_FILE", "PathLocks", "is_temp_file", "temp_name", "write_atomically", "write_bytes_atomically"]

_TOKEN_CHARS = 12
# .<target name>.<12 hex>.tmp<target suffix>: hidden, never a target's own name, and it ends in
# the target's suffix because some writers insist on one (keras.Model.save wants '.keras').
TEMP_FILE = re.compile(rf"^\.(?P<target>.+)\.[0-9a-f]{{{_TOKEN_CHARS}}}\.tmp(?:\.[A-Za-z0-9]+)?$")


def temp_name(path: Path) -> Path:
    """A fresh temporary name for `path`, in its folder, matching `TEMP_FILE`."""
    return path.with_name(f".{path.name}.{secrets.token_hex(_TOKEN_CHARS // 2)}.tmp{path.suffix}")


def is_temp_file(name: str | os.PathLike) -> bool:
    """Whether a file name is one of `write_atomically`'s temporary names."""
    return TEMP_FILE.match(Path(name).name) is not None


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Writes `path` through a temporary file, so readers see the old file or the new one, never a part.

    Args:
        path: The file to write (its folder must exist).
        write: Called once with the temporary path (an empty file this call created, mode per
            the umask); it writes the content there by name.

    Returns:
        `path` as a `Path`.

    Raises:
        Whatever `write` raises, or `OSError`; the temporary file is gone either way.
    """
    path = Path(path)
    while True:  # O_EXCL: a name nobody else holds, and never a link planted in its place
        tmp = temp_name(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    try:
        write(tmp)
        _fsync(tmp)  # the data reaches the disk before the name does: a crash leaves old or new
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """`write_atomically` for bytes already in memory."""
    return write_atomically(path, lambda tmp: tmp.write_bytes(data))


class PathLocks:
    """One `threading.Lock` per path while some thread holds or waits for it; none kept after.

    Two threads writing the same file take turns; threads writing different files never wait for
    each other; the registry holds only the paths in use (it does not grow with every file ever
    written).
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def __len__(self) -> int:
        """Paths with a holder or a waiter now."""
        with self._guard:
            return len(self._locks)

    @contextlib.contextmanager
    def hold(self, path: str | os.PathLike) -> Iterator[None]:
        """Holds the lock of `path` (by its absolute, normalised name) for the `with` block."""
        key = os.path.abspath(os.fspath(path))
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            lock = lock or threading.Lock()
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)
