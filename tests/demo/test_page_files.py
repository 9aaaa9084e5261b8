"""The page's own files and the run folder's lock against time and against visitors (issue 30,
items 1-3): examples that outlive every cleaner with the clock two hours ahead, a lock no event can
name, and a Teach add that deletes nothing it is given. The real `create_app` on a tiny random
model through TestClient; no live server."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from gradio import processing_utils, route_utils
from gradio.context import LocalContext
from gradio.exceptions import InvalidPathError
from PIL import Image

from tests.conftest import shared_loaded, store_serving
from demo.runs import LOCK_NAME, sweep_dead
from demo.server import Budgets, create_app
from demo.services.examples import ExampleService
from demo.services.teach import TeachService
from demo.ui.classify_tab import example_items
from xception_core.settings import Settings

AHEAD_S = 2 * 3600.0


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The app on a tiny model in a fresh upload root; yields (client, app, examples' paths)."""
    tmp = tmp_path_factory.mktemp("page-files")
    patch = pytest.MonkeyPatch()
    patch.setenv("GRADIO_TEMP_DIR", str(tmp / "uploads"))  # create_app points it at its own folder
    store = store_serving(shared_loaded(71, 3, seed=1), Settings(upload_dir=tmp / "uploads", cache_dir=tmp / "cache"))
    app = create_app(store.settings, store)
    try:
        with TestClient(app) as client:
            photos = ExampleService(store).examples(store.get())  # the files the page's gallery shows
            assert photos, "the bundled examples"
            yield client, app, [p.path for p in photos]
    finally:
        patch.undo()


def _gallery_urls(app, paths: list[Path]) -> list[str]:
    """The URLs the page's example gallery gives the browser for `paths`: the component's
    postprocess, then Gradio's move to its cache, as when an event fills the gallery."""
    blocks = app.state.blocks
    gallery = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "classify-examples")
    value = gallery.postprocess([(str(p), c) for p, c in example_items(
        [type("P", (), {"path": p, "caption": "x"}) for p in paths])])
    data = processing_utils.move_files_to_cache(value.model_dump(), gallery, postprocess=True)
    return [item["image"]["url"] for item in data]


def _upload(client, name: str, color: tuple[int, int, int]) -> str:
    """A visitor's upload through Gradio's route; returns the server path it answers."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, "PNG")
    response = client.post("/gradio_api/upload", files={"files": (name, buf.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    return response.json()[0]


class _Later(datetime.datetime):
    """`datetime` two hours ahead, as Gradio's age-based cleaner reads it."""

    @classmethod
    def now(cls, tz=None):
        return datetime.datetime.now(tz) + datetime.timedelta(seconds=AHEAD_S)


def _every_cleaner_two_hours_later(client, app, monkeypatch) -> None:
    """Gradio's delete_cache, the app's housekeeping (file budget, empty folders, ended processes'
    folders) and the sweep of dead run folders, each with the clock moved two hours ahead."""
    blocks = app.state.blocks
    real = time.time
    monkeypatch.setattr(route_utils, "datetime", _Later)
    route_utils.delete_files_created_by_app(blocks, Budgets().files_age_s)
    with monkeypatch.context() as later:
        later.setattr(time, "time", lambda: real() + AHEAD_S)
        client.portal.call(app.state.housekeeping.sweep)
        upload_dir = Path(app.state.store.settings.upload_dir)
        sweep_dead(upload_dir.parent.parent)


def test_examples_outlive_every_cleaner_and_the_file_budget(page, monkeypatch):
    client, app, examples = page
    urls = _gallery_urls(app, examples)
    assert all(client.get(url).status_code == 200 for url in urls)
    # A visitor names each example as an event's input, the way a click sends it back: Gradio
    # passes a page file through where it lies and adds it to no file set a cleaner reads.
    image = next(b for b in app.state.blocks.blocks.values() if getattr(b, "elem_id", None) == "classify-image")
    token = LocalContext.blocks.set(app.state.blocks)  # as inside an event
    try:
        for path in examples:
            processing_utils.move_files_to_cache({"path": str(path), "meta": {"_type": "gradio.FileData"}}, image,
                                                 check_in_upload_folder=True)
    finally:
        LocalContext.blocks.reset(token)
    tracked = {name for file_set in app.state.blocks.temp_file_sets for name in file_set}
    assert not tracked & {str(p) for p in examples}
    visitor = _upload(client, "visitor.png", (10, 200, 30))
    # Every cleaner runs, two hours later (past Gradio's age limit and ours).
    _every_cleaner_two_hours_later(client, app, monkeypatch)
    assert not Path(visitor).exists(), "the cleaners ran: a visitor's old upload is gone"
    assert all(Path(p).is_file() for p in examples)
    assert [client.get(url).status_code for url in urls] == [200] * len(urls)


def test_no_event_reaches_the_lock(page):
    client, app, _ = page
    upload_dir = Path(app.state.store.settings.upload_dir)
    lock = upload_dir.parent / LOCK_NAME
    assert lock.is_file() and not lock.is_relative_to(upload_dir)
    image = next(b for b in app.state.blocks.blocks.values() if getattr(b, "elem_id", None) == "classify-image")
    token = LocalContext.blocks.set(app.state.blocks)  # as inside an event: Gradio checks the path
    try:
        with pytest.raises(InvalidPathError):  # Gradio takes only paths in its upload folder
            processing_utils.move_files_to_cache({"path": str(lock), "meta": {"_type": "gradio.FileData"}}, image,
                                                 check_in_upload_folder=True)
    finally:
        LocalContext.blocks.reset(token)
    assert client.get(f"/gradio_api/file={lock}").status_code == 403
    assert client.get(f"/gradio_api/file={upload_dir}/../{LOCK_NAME}").status_code == 403
    assert lock.is_file()


def test_teach_add_deletes_nothing_it_is_given(page):
    """An example's path, the lock's path and another session's upload (Gradio names uploads by
    content: identical photos from two sessions share one path) all survive Teach's add."""
    client, app, examples = page
    store = app.state.store
    upload_dir = Path(store.settings.upload_dir)
    lock = upload_dir.parent / LOCK_NAME
    theirs = _upload(client, "photo.png", (200, 10, 10))
    mine = _upload(client, "photo.png", (200, 10, 10))  # the same photo, another session
    assert mine == theirs, "identical uploads share one path"
    teach = TeachService(store, upload_dir / "teach")
    report = teach.add_photos("visitor-b", "red", [{"path": str(examples[0]), "orig_name": "example.jpg"},
                                                  {"path": str(lock), "orig_name": "lock"},
                                                  {"path": mine, "orig_name": "mine.png"}])
    assert report.added == 2 and len(report.refused) == 1 and report.refused[0].startswith("lock: ")
    assert str(upload_dir.parent) not in " ".join(report.refused), "no server path in the answer"
    assert Path(examples[0]).is_file() and lock.is_file() and Path(theirs).is_file()
    gone = teach.add_photos("visitor-b", "red", [{"path": str(upload_dir / "f00d" / "gone.png"), "orig_name": "gone.png"},
                                                {"path": str(upload_dir), "orig_name": "folder"}])
    words = " ".join(gone.refused)
    assert gone.added == 0 and "no longer on the server" in words
    assert str(upload_dir.parent) not in words and "Errno" not in words, words
    # The other session adds its own upload afterwards: it is still there to read.
    again = teach.add_photos("visitor-a", "red", [{"path": theirs, "orig_name": "theirs.png"}])
    assert again.added == 1 and not again.refused


@pytest.mark.parametrize("min_age_s", [3600.0, 0.0], ids=["all-young-refused", "oldest-evicted"])
def test_the_disk_budget_holds_at_upload_time(tmp_path, monkeypatch, min_age_s):
    """Uploads past the file budget: with every file too young to delete the next upload is
    refused in words (507); otherwise the oldest visitors' files make room. Either way the files
    on disk never pass the budget, before any housekeeping runs."""
    import os

    from demo.store import ModelStore

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    settings = Settings(upload_dir=tmp_path / "uploads", cache_dir=tmp_path / "cache")
    budget = 300_000
    app = create_app(settings, ModelStore(settings, ["no-such-weights"]),
                     Budgets(files_budget_bytes=budget, file_min_age_s=min_age_s))
    upload_dir = Path(app.state.store.settings.upload_dir)
    statuses = []
    with TestClient(app) as client:
        for i in range(8):
            response = client.post("/gradio_api/upload",
                                   files={"files": (f"p{i}.png", os.urandom(100_000), "image/png")})
            statuses.append(response.status_code)
            if response.status_code == 507:
                assert "space for uploads is full" in response.text and str(upload_dir) not in response.text
            on_disk = sum(f.stat().st_size for f in upload_dir.rglob("*.png"))
            assert on_disk <= budget, f"{on_disk:,} bytes on disk after upload {i}"
    if min_age_s:
        assert statuses[:2] == [200, 200] and statuses[3:] == [507] * 5
    else:
        assert statuses == [200] * 8


def test_uploads_at_once_each_reserve_their_room_and_never_pass_the_budget(tmp_path, monkeypatch):
    """Item 7: 24 uploads sent at once (the issue's 100 in 6 s, at a small scale), every file too
    young to delete: each upload reserves its room before a byte is read, so together they stop at
    the budget (those past it get 507); nothing waits for housekeeping."""
    import os
    import threading

    from demo.store import ModelStore

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    settings = Settings(upload_dir=tmp_path / "uploads", cache_dir=tmp_path / "cache")
    budget = 1_000_000
    app = create_app(settings, ModelStore(settings, ["no-such-weights"]),
                     Budgets(files_budget_bytes=budget, file_min_age_s=3600.0))
    upload_dir = Path(app.state.store.settings.upload_dir)
    statuses: list[int] = []
    with TestClient(app) as client:
        go = threading.Barrier(24)

        def send(i: int) -> None:
            go.wait()
            statuses.append(client.post("/gradio_api/upload", files={
                "files": (f"p{i}.png", os.urandom(100_000), "image/png")}).status_code)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        on_disk = sum(f.stat().st_size for f in upload_dir.rglob("*") if f.is_file())
    assert on_disk <= budget, f"{on_disk:,} bytes on disk"
    assert 200 in statuses and 507 in statuses and set(statuses) == {200, 507}
    assert app.state.file_budget.reserved == 0, "every reservation ended"


def test_teach_downloads_reserve_their_room_and_are_refused_in_words_when_there_is_none(tmp_path):
    """Teach's exports count in the disk budget: written only into room reserved first (the
    visitors' oldest files make it, never the page's own), refused in one sentence, with nothing
    written, when every file is too young to go."""
    import os

    from tests.conftest import random_loaded
    from demo.limits import EmptyFolders, FileBudget
    from demo.services import UserError
    from demo.services.teach import DISK_FULL, EXPORT_ROOM_BYTES

    class Blocks:  # what FileBudget reads of a page
        blocks: dict = {}
        temp_file_sets: list = []

    upload_dir = tmp_path / "uploads"
    (upload_dir / "old").mkdir(parents=True)
    (upload_dir / "examples").mkdir()
    old = upload_dir / "old" / "photo.png"
    old.write_bytes(os.urandom(2 * 2**20))
    page_file = upload_dir / "examples" / "example.jpg"
    page_file.write_bytes(os.urandom(2 * 2**20))
    young = FileBudget(Blocks(), budget_bytes=5 * 2**19, min_age_s=3600, protected=[upload_dir / "examples"],
                       folders=EmptyFolders(upload_dir, 60))
    with young.room(EXPORT_ROOM_BYTES["head"]) as made:
        assert not made and old.exists(), "the old upload is too young to go"
    settings = Settings(upload_dir=upload_dir, cache_dir=tmp_path / "cache")
    store = store_serving(random_loaded(71, 2, seed=3), settings)
    teach = TeachService(store, upload_dir / "teach", disk=young.room)
    for name, colours in (("x", [(200, 0, 0), (180, 30, 0)]), ("y", [(0, 0, 200), (0, 30, 180)])):
        teach.add_photos("s", name, [Image.new("RGB", (60, 60), c) for c in colours])
    teach.train("s")
    with pytest.raises(UserError) as refused:
        teach.export_head("s")
    assert str(refused.value) == DISK_FULL
    assert not list((upload_dir / "teach").rglob("*.npz")), "nothing written"
    room = FileBudget(Blocks(), budget_bytes=5 * 2**19, min_age_s=0, protected=[upload_dir / "examples"],
                      folders=EmptyFolders(upload_dir, 60))
    teach.disk = room.room
    head = teach.export_head("s")
    assert head.is_file() and not old.exists() and page_file.exists(), "a visitor's file made room, not the page's"
    assert room.reserved == 0


def test_refused_file_requests_name_no_path(page):
    """Item 11: Gradio's 403 for a file it does not serve quoted the path asked for ("File not
    allowed: /tmp/.../.lock"); the answer is one sentence that names none, with Gradio's shape."""
    from demo.errors import FILE_NOT_SERVED

    client, app, _ = page
    upload_dir = Path(app.state.store.settings.upload_dir)
    for asked in (str(upload_dir.parent / LOCK_NAME), "/etc/passwd", f"{upload_dir}/../{LOCK_NAME}"):
        response = client.get(f"/gradio_api/file={asked}")
        assert response.status_code in (403, 404)
        assert str(upload_dir.parent.name) not in response.text and "/etc" not in response.text, response.text
        if response.status_code == 403:
            assert response.json() == {"detail": FILE_NOT_SERVED}
