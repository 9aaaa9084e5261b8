"""Two app processes on one machine (the scale-out set-up): each writes only in a folder of its
own, a process that stops takes none of the other's files with it, and what a killed process
left is swept once it is gone (issue 21 items 3 and 5). A tiny random model in each process."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench import appserver
from bench.appserver import free_port, stop
from demo.runs import FILES_NAME, LOCK_NAME, PREFIX, claim, is_run_folder, sweep_dead

ROOT = Path(__file__).resolve().parents[2]

# One app process: a tiny random Xception served by the real create_app, on uvicorn.
CHILD = """
import sys
from pathlib import Path
import uvicorn
from tests.conftest import random_loaded, store_serving
from demo.server import create_app
from xception_core.settings import Settings

port, root = int(sys.argv[1]), Path(sys.argv[2])
store = store_serving(random_loaded(71, 3, seed=1), Settings(upload_dir=root, cache_dir=root.parent / "cache"))
app = create_app(store.settings, store)
app.state.owns_folder = True  # as demo.server.main marks the process's one app
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


def start(root: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    env.pop("GRADIO_TEMP_DIR", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(port), str(root)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def example_urls(url: str) -> list[str]:
    """The example photos' URLs as the page gets them: the Classify tab's example refresh, run
    through Gradio's queue as the page runs it."""
    with urllib.request.urlopen(f"{url}/config", timeout=10) as r:
        config = json.load(r)
    gallery = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "classify-examples")
    dep = next(d for d in config["dependencies"] if gallery in d["outputs"] and len(d["inputs"]) == 2)
    session = os.urandom(6).hex()
    body = json.dumps({"data": [None, None], "fn_index": dep["id"], "session_hash": session}).encode()
    request = urllib.request.Request(f"{url}/gradio_api/queue/join", body, {"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()
    with urllib.request.urlopen(f"{url}/gradio_api/queue/data?session_hash={session}", timeout=60) as stream:
        for line in stream:
            if line.startswith(b"data:") and b"process_completed" in line:
                message = json.loads(line[5:])
                assert message["success"], message
                items = message["output"]["data"][0]
                return [item["image"]["url"] for item in items]
    raise AssertionError("no answer")


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def run_folders(root: Path) -> dict[int, Path]:
    return {int(p.name[len(PREFIX):].split("-")[0]): p for p in root.iterdir() if is_run_folder(p)}


def test_two_processes_keep_their_own_files_and_a_killed_ones_are_swept(tmp_path):
    root = tmp_path / "gradio"
    (a, url_a), (b, url_b) = start(root, tmp_path / "a.log"), start(root, tmp_path / "b.log")
    try:
        appserver.wait_ready(url_a, a, 240, log=tmp_path / "a.log")  # failing with the end of its log
        appserver.wait_ready(url_b, b, 240, log=tmp_path / "b.log")
        urls_a, urls_b = example_urls(url_a), example_urls(url_b)
        assert urls_a and len(urls_a) == len(urls_b)
        assert all(status(u) == 200 for u in urls_a + urls_b)
        folders = run_folders(root)
        assert set(folders) == {a.pid, b.pid}  # one folder each, and nothing else of theirs beside
        assert {p.name for p in root.iterdir()} == {p.name for p in folders.values()}

        stop(a)  # a clean exit (SIGTERM): Gradio deletes every file it cached, and A its folder, nothing else
        assert set(run_folders(root)) == {b.pid}
        assert [status(u) for u in urls_b] == [200] * len(urls_b), "the other process's examples must still serve"
        assert status(url_b + "/healthz") == 200

        b.send_signal(signal.SIGKILL)  # killed: nothing of its own runs, its files stay ...
        b.wait()
        left = run_folders(root)[b.pid]
        assert any(left.rglob("*.jpg"))
        result = sweep_dead(root)  # ... until a start (or a live process's housekeeping) sweeps them
        assert result.folders == 1 and result.bytes_freed > 0 and not left.exists() and not any(root.iterdir())
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                stop(proc)


def test_the_sweep_takes_only_run_folders_whose_process_is_gone(tmp_path):
    root = tmp_path / "gradio"
    root.mkdir()
    mine = claim(root)
    assert claim(root) == mine and claim(mine.path) == mine  # once per process, also from its own folder
    assert claim(mine.files) == mine and mine.files.parent == mine.path and mine.files.is_dir()
    assert not (mine.files / LOCK_NAME).exists(), "the lock is out of the upload folder, out of clients' reach"
    others = [root / "gradio-hash-0123", root / "xception-run-notapid", root / "teach"]  # not of our naming
    for other in others:
        other.mkdir()
        (other / "f.txt").write_text("x")
    dead = root / f"{PREFIX}999999-0badc0de"  # a killed process's folder: lock file, nobody holds it
    dead.mkdir()
    (dead / LOCK_NAME).write_text("999999\n")
    (dead / ".x.keras.0123456789ab.tmp.keras").write_bytes(b"\0" * 1000)
    half = root / f"{PREFIX}999998-0badc0df"  # made, never locked: a leftover only once it is old
    half.mkdir()
    alive = root / f"{PREFIX}4242-00c0ffee"  # another live process: its lock is held
    alive.mkdir()
    (alive / LOCK_NAME).write_text("")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'r+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(alive / LOCK_NAME)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        result = sweep_dead(root)
        assert result.folders == 1 and result.bytes_freed >= 1000
        assert not dead.exists() and half.exists() and alive.exists() and mine.path.exists()
        assert all((o / "f.txt").exists() for o in others)
        assert sweep_dead(root, now=time.time() + 3600).folders == 1 and not half.exists()
    finally:
        holder.kill()
        holder.wait()
    assert sweep_dead(root).folders == 1 and not alive.exists() and mine.path.exists()  # its holder ended
    with pytest.raises(BlockingIOError):  # this process holds its own folder's lock
        with open(mine.path / LOCK_NAME, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_half_written_exports_of_a_killed_process_are_swept_once_stale(tmp_path):
    """The export cache is shared and kept: only write_atomically's temporary names untouched for an
    hour go (a live process's write touches its file all the time); nothing else."""
    from demo.runs import STALE_TEMP_S, sweep_stale_temp_files
    from xception_core.files import temp_name

    old_tmp = temp_name(tmp_path / "xception-kitchenware-paper.keras-0123-4567.keras")
    new_tmp = temp_name(tmp_path / "xception-kitchenware-article.graph-89ab.json")
    export = tmp_path / "xception-kitchenware-paper.graph-0123456789abcdef.json"
    other = tmp_path / ".hidden.tmp"
    for path in (old_tmp, new_tmp, export, other):
        path.write_bytes(b"\0" * 100)
    stale = time.time() - STALE_TEMP_S - 10
    for path in (old_tmp, export, other):
        os.utime(path, (stale, stale))
    result = sweep_stale_temp_files(tmp_path)
    assert result.folders == 1 and result.bytes_freed == 100
    assert not old_tmp.exists() and new_tmp.exists() and export.exists() and other.exists()


def test_an_upload_root_that_cannot_be_written_falls_back_to_a_temporary_one(tmp_path, caplog, monkeypatch):
    from demo.server import use_own_folder
    from demo.store import ModelStore
    from xception_core.settings import Settings

    monkeypatch.setenv("GRADIO_TEMP_DIR", os.environ.get("GRADIO_TEMP_DIR", ""))  # restored afterwards
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")  # mkdir under it fails (NotADirectoryError, an OSError)
    store = ModelStore(Settings(upload_dir=blocked / "gradio"), ["no-such-weights"])
    folder = use_own_folder(store)
    assert folder.name == FILES_NAME and is_run_folder(folder.parent) and folder.is_dir()
    assert folder.parent.parent.name == "xception-uploads"
    assert store.settings.upload_dir == folder and os.environ["GRADIO_TEMP_DIR"] == str(folder)
    assert "is not writable" in caplog.text
