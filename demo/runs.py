"""One folder of its own for each app process, and the sweep of what dead processes left.

Several page processes on one machine (the scale-out set-up, or two copies started by hand) used to
share Gradio's upload folder and the app's fixed folders under it (example thumbnails, Teach's
downloads). Gradio names the files it caches by content hash, so two processes cached the same
example under the same path, and the first to exit deleted it for the other (Gradio deletes every
file it cached when it shuts down); `EmptyFolders` swept the other's folders too.

Now each process claims `<upload root>/xception-run-<pid>-<token>/` (`claim`) and everything it
writes goes into its `files/` folder: Gradio's cache (GRADIO_TEMP_DIR is pointed at it, the only
way Gradio is told), the examples, Teach's downloads. The folder's `.lock` sits beside `files/`,
never inside it: Gradio accepts a path from a client only inside its upload folder, and a path it
accepts joins the files its cleaners delete, so a lock inside it could be named by any event and
deleted. The process holds an exclusive `flock` on that `.lock` for as long as it lives; the kernel drops it when the process ends, even by `kill -9`. At
start, `sweep_dead` removes the run folders whose lock nobody holds: only folders of this naming
(nothing else under the root is touched), and only once their process is gone (a reused pid does
not keep a dead folder, and a live process's folder is never taken).

Folders the processes share on purpose (the export cache, kept across restarts) hold only files
every process would write alike; there `sweep_stale_temp_files` removes the half-written files of
a process killed mid-write: only `write_atomically`'s temporary names, and only once untouched
for an hour (a write in progress touches its file every moment; an export takes seconds).
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from xception_core.files import is_temp_file

logger = logging.getLogger(__name__)

PREFIX = "xception-run-"
RUN_FOLDER = re.compile(rf"^{PREFIX}(?P<pid>\d+)-(?P<token>[0-9a-f]{{8}})$")
LOCK_NAME = ".lock"
FILES_NAME = "files"  # the part of a run folder that Gradio and the services write to
# A run folder with no lock file yet is being made (mkdir, then the lock): only one older than
# this is a leftover (a process killed between the two steps).
UNLOCKED_GRACE_S = 60.0

_claimed: dict[tuple[int, Path], "RunFolder"] = {}
_claim_lock = threading.Lock()


@dataclass(frozen=True)
class SweepResult:
    """What `sweep_dead` (folders) or `sweep_stale_temp_files` (files) removed."""

    folders: int = 0
    bytes_freed: int = 0

    def summary(self) -> str | None:
        if not self.folders:
            return None
        return f"{self.folders} leftovers of ended processes ({self.bytes_freed / 1e6:.1f} MB) removed"


@dataclass(frozen=True)
class RunFolder:
    """This process's folder under `root`, locked for as long as the process lives.

    Attributes:
        root: The shared upload root (Settings.upload_dir as configured).
        path: `root/xception-run-<pid>-<token>`.
        lock_fd: The open `.lock` file holding the process's exclusive flock (never closed).
    """

    root: Path
    path: Path
    lock_fd: int

    @property
    def files(self) -> Path:
        """`path/files`: the upload folder of this process (GRADIO_TEMP_DIR, `Settings.upload_dir`);
        the lock is outside it, out of every client's reach."""
        return self.path / FILES_NAME


def is_run_folder(path: Path) -> bool:
    """Whether `path`'s name is one this module gives its folders."""
    return RUN_FOLDER.match(Path(path).name) is not None


def claim(root: Path) -> RunFolder:
    """This process's run folder under `root`, made and locked on first call (later calls give
    the same one, also when passed the run folder or its `files/`); first sweeps what dead
    processes left under `root`. A `root` that is itself a run folder or a run folder's `files/`
    (inherited from a parent app's GRADIO_TEMP_DIR) stands for the root above it."""
    root = Path(root)
    if root.name == FILES_NAME and is_run_folder(root.parent):  # a run folder's upload folder
        root = root.parent
    if is_run_folder(root):  # a run folder given as the root (GRADIO_TEMP_DIR inherited from a parent app)
        root = root.parent
    key = (os.getpid(), root.resolve())
    with _claim_lock:
        if key in _claimed:
            return _claimed[key]
        root.mkdir(parents=True, exist_ok=True)
        swept = sweep_dead(root)
        if summary := swept.summary():
            logger.info("start: %s", summary)
        path = root / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir(mode=0o700)
        fd = os.open(path / LOCK_NAME, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else can hold it
        os.write(fd, f"{os.getpid()}\n".encode())
        (path / FILES_NAME).mkdir(mode=0o700)
        _claimed[key] = RunFolder(root, path, fd)
        atexit.register(_remove_at_exit, path, os.getpid())  # a killed process's: the next start's sweep
        return _claimed[key]


def _remove_at_exit(path: Path, owner: int) -> None:
    """Removes the run folder at a normal exit of the process that made it (not of a forked child)."""
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def _owner_gone(folder: Path, now: float) -> bool:
    """Whether the process that made `folder` has ended (its lock is free, or it never got one)."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            return now - folder.stat().st_mtime > UNLOCKED_GRACE_S
        except OSError:
            return False
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: its process lives (this one's own included)
    finally:
        os.close(fd)  # drops the lock we may have taken
    return True


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (links not followed; files gone meanwhile count 0)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def sweep_dead(root: Path, now: float | None = None) -> SweepResult:
    """Removes every run folder directly under `root` whose process has ended; nothing else."""
    now = time.time() if now is None else now
    removed = freed = 0
    try:
        candidates = [p for p in Path(root).iterdir() if is_run_folder(p) and p.is_dir() and not p.is_symlink()]
    except OSError:
        return SweepResult()
    for folder in candidates:
        if not _owner_gone(folder, now):
            continue
        size = folder_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed, freed = removed + 1, freed + size
    return SweepResult(removed, freed)


STALE_TEMP_S = 3600.0


def sweep_stale_temp_files(folder: Path, min_age_s: float = STALE_TEMP_S, now: float | None = None) -> SweepResult:
    """Removes `write_atomically` temporary files directly in `folder` untouched for `min_age_s`."""
    now = time.time() if now is None else now
    removed = freed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return SweepResult()
    for entry in entries:
        try:
            if not is_temp_file(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
            if now - stat.st_mtime < min_age_s:
                continue
            os.remove(entry.path)
            removed, freed = removed + 1, freed + stat.st_size
        except OSError:
            continue
    return SweepResult(removed, freed)
