"""Loading that never hangs and messages that never leak (issue 9, items 7, 9 and 10).

Loader failures of any kind end as "unavailable: <reason>" at once; what clients see carries no
server path and no raw Python text.
"""

from __future__ import annotations

import logging
import shutil
import zipfile

import gradio as gr
import pytest

from demo.errors import echo, public_text, scrub_paths
from demo.services import UserError
from demo.services.classify import ClassifyService
from demo.store import ModelStore
from demo.ui import text
from demo.ui.events import INTERNAL_ERROR, errors_as_api_errors, errors_as_messages
from xception_core.settings import Settings
from xception_core.weights.source import WeightsUnavailableError

SECRET = "/srv/secret-home/.cache/xception-explorer/kitchenware/model.keras"
FAILURES = [
    zipfile.BadZipFile("File is not a zip file"),
    RuntimeError(f"Unable to synchronously open file (truncated file: eof = 1000, name = '{SECRET}')"),
    TypeError("Could not locate class 'MyLayer'. Make sure custom classes are decorated"),
    KeyError("block14_sepconv2"),
]


@pytest.mark.parametrize("failure", FAILURES, ids=lambda e: type(e).__name__)
def test_any_loader_failure_ends_as_unavailable_with_a_reason_and_releases_waiters(monkeypatch, failure, tmp_path):
    def load(key, settings):
        raise failure

    monkeypatch.setattr("demo.store.cache.load_model", load)
    # An empty cache: no translation to serve from, so the loader is what runs (and fails).
    store = ModelStore(Settings(cache_dir=tmp_path), ["kitchenware"]).start()
    # Waiters are released by the failure, not by their timeout: a waiter still waiting after 30 s
    # gets TimeoutError ("still loading"), which fails the test here.
    with pytest.raises(WeightsUnavailableError, match="unavailable|could be loaded"):
        store.get(timeout=30)
    with pytest.raises(UserError) as excinfo:
        ClassifyService(store, wait_s=30).model()
    assert "still loading" not in str(excinfo.value)
    (status,) = store.statuses()
    assert status.state == "failed" and store.settled() is False and not store.is_ready()
    line = text.status_line(store.statuses(), store.is_ready())
    assert "unavailable: failed to load" in line and type(failure).__name__ in line, line
    for shown_text in (line, str(excinfo.value)):
        assert "/srv" not in shown_text and "secret-home" not in shown_text, shown_text


def test_the_store_records_the_cause_the_core_gave(monkeypatch, tmp_path):
    """The status carries the weights error's cause, so the page's words come from it, not from the
    message; the message is still scrubbed for the API."""
    from xception_core.weights.fetch import WeightsFailure, WeightsUnavailableError

    def load(key, settings):
        raise WeightsUnavailableError(f"{SECRET} has sha256 abc, expected def", WeightsFailure.DAMAGED)

    monkeypatch.setattr("demo.store.cache.load_model", load)
    store = ModelStore(Settings(cache_dir=tmp_path), ["kitchenware"]).start()  # nothing cached: the loader runs
    with pytest.raises(Exception, match="unavailable"):
        store.get("kitchenware", timeout=30)
    (status,) = store.statuses()
    assert status.failure is not None and status.failure.cause is WeightsFailure.DAMAGED and status.failure.kind == ""
    assert "secret-home" not in status.error
    assert "unavailable: the downloaded file failed its checksum" in text.status_line(store.statuses(), False)


def test_a_loader_thread_that_dies_still_releases_every_waiter(monkeypatch):
    monkeypatch.setattr(ModelStore, "_load", lambda self, key: (_ for _ in ()).throw(SystemExit("boom")))
    store = ModelStore(Settings(), ["a", "b"]).start()
    with pytest.raises(WeightsUnavailableError):  # released by the dead loader: TimeoutError fails here
        store.get("b", timeout=30)
    assert {s.state for s in store.statuses()} == {"failed"}


def test_healthz_says_unavailable_with_the_reason_and_no_path(monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from demo.server import create_app

    def load(key, settings):
        raise RuntimeError(f"Unable to open file (file signature not found) {SECRET}")

    monkeypatch.setattr("demo.store.cache.load_model", load)
    settings = Settings(cache_dir=tmp_path / "cache", upload_dir=tmp_path / "uploads")
    store = ModelStore(settings, ["kitchenware"])
    app = create_app(settings, store)
    with TestClient(app) as client:
        with pytest.raises(WeightsUnavailableError):  # the load has failed (the store's own event)
            store.get(timeout=60)
        health = client.get("/healthz").json()
    assert health["ready"] is False and "unavailable: failed to load (RuntimeError" in health["status"]
    assert "/srv" not in str(health)


def test_a_read_only_cache_folder_does_not_stop_the_app(monkeypatch, tmp_path):
    """Exports move to a temporary folder; the graph view stays on. The cache is made read-only
    with chmod where that binds (not as root); else its export folder sits under a file, which
    no user can create a folder in."""
    from fastapi.testclient import TestClient

    from demo.server import create_app

    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    if _can_write(cache):  # root ignores permissions
        cache.chmod(0o755)
        (cache / "exports").write_text("a file where the export folder should be")
    try:
        monkeypatch.setattr("demo.store.cache.load_model", lambda key, settings: (_ for _ in ()).throw(OSError("offline")))
        settings = Settings(cache_dir=cache, upload_dir=tmp_path / "uploads")
        app = create_app(settings, ModelStore(settings, ["kitchenware"]))
        exports = app.state.exports
        assert exports is not None and not exports.folder.is_relative_to(cache) and exports.folder.is_dir()
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
            page = client.get("/config").json()
        assert "netron-view" in str(page) and text.EXPORTS_OFF not in str(page)
        shutil.rmtree(exports.folder, ignore_errors=True)
    finally:
        cache.chmod(0o755)


def _can_write(folder) -> bool:
    try:
        (folder / ".w").write_text("x")
        (folder / ".w").unlink()
        return True
    except OSError:
        return False


def test_with_no_writable_folder_at_all_the_page_says_downloads_are_off(monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from demo.server import create_app

    monkeypatch.setattr("demo.netron.exports.writable_folder", lambda preferred: None)
    monkeypatch.setattr("demo.store.cache.load_model", lambda key, settings: (_ for _ in ()).throw(OSError("offline")))
    settings = Settings(cache_dir=tmp_path / "cache", upload_dir=tmp_path / "uploads")
    app = create_app(settings, ModelStore(settings, ["kitchenware"]))
    with TestClient(app) as client:
        page = str(client.get("/config").json())
        assert client.get("/models/anything.keras").status_code == 404
    assert text.EXPORTS_OFF in page and "netron-view" not in page


def test_paths_are_scrubbed_and_echoes_cut():
    message = ("could not fetch a.h5 from https://storage.googleapis.com/x/a.h5 and it is not in the Keras cache "
               "(/root/.keras/models): [Errno 2] '/home/u/w.h5' ~/private/x.keras at 3/4 of the way")
    scrubbed = scrub_paths(message)
    assert "/root" not in scrubbed and "/home/u" not in scrubbed and "~/private" not in scrubbed
    assert "https://storage.googleapis.com/x/a.h5" in scrubbed and "'w.h5'" in scrubbed and "3/4" in scrubbed
    assert len(public_text("x" * 10_000)) <= 600
    assert len(echo("y" * 10_000)) <= 44 and echo(10**9) == "'1000000000'"


def test_handlers_give_clear_messages_one_log_line_for_user_errors_and_no_raw_python(caplog):
    @errors_as_messages
    def user_mistake():
        raise UserError(f"Cannot open image file '{SECRET}': not an image")

    @errors_as_api_errors
    def bug(value):
        return value.strip()  # AttributeError on an int: raw Python text must not reach the page

    with caplog.at_level(logging.INFO, logger="demo.events"):
        with pytest.raises(gr.Error) as user_error:  # outside a page's queued event: raised
            user_mistake()
    assert "model.keras" in user_error.value.message and "/srv" not in user_error.value.message
    assert user_error.value.print_exception is False  # no traceback printed by Gradio
    assert len(caplog.records) == 1 and not caplog.records[0].exc_info
    with pytest.raises(gr.Error) as internal:
        bug(5)
    assert internal.value.message == INTERNAL_ERROR.format(kind="AttributeError")
    assert "strip" not in internal.value.message and "'int' object" not in internal.value.message


def test_page_events_say_why_in_a_toast_and_never_mark_their_outputs(monkeypatch, caplog):
    """In a page's event, a refusal is a toast (no gr.Error: Gradio would put an "Error" badge on
    every output, inputs included); outputs stay, or are cleared where they would be stale."""
    from types import SimpleNamespace

    from gradio.context import LocalContext

    toasts = []
    queue = SimpleNamespace(log_message=lambda **kw: toasts.append(kw))
    LocalContext.blocks.set(SimpleNamespace(_queue=queue))
    LocalContext.event_id.set("event-1")
    try:
        @errors_as_messages
        def refused(name):
            raise UserError(f"Name the class first, not <b>{name}</b>")

        @errors_as_messages(clear=lambda name: {"top5": None})
        def stale(name):
            raise UserError("not an image")

        @errors_as_messages
        def bug():
            return {}["missing"]

        skipped = refused("x")
        assert type(skipped).__name__ == "update" or skipped == gr.skip()
        assert stale("y") == {"top5": None}
        with caplog.at_level(logging.ERROR, logger="demo.events"):
            bug()
    finally:
        LocalContext.blocks.set(None)
        LocalContext.event_id.set(None)
    assert [t["level"] for t in toasts] == ["warning"] * 3
    assert toasts[0]["title"] == "Not done" and "not &lt;b&gt;x" in toasts[0]["log"]  # text, never markup
    assert "<b>" not in toasts[0]["log"]
    assert toasts[2]["title"] == "Server error" and toasts[2]["log"] == INTERNAL_ERROR.format(kind="KeyError")
    assert caplog.records and caplog.records[-1].exc_info  # the bug's traceback is in the log


def test_a_weights_file_is_named_without_its_folder():
    store = ModelStore(Settings(weights="/srv/secret-home/models/mine.keras"))
    assert store.title("/srv/secret-home/models/mine.keras") == "mine.keras"
    assert "/srv" not in text.status_line(store.statuses(), False)


def test_unknown_weights_names_are_refused_with_a_short_echo(monkeypatch, tmp_path):
    store = ModelStore(Settings(), ["kitchenware"])
    service = ClassifyService(store, wait_s=1)
    with pytest.raises(UserError, match="unknown weights") as excinfo:
        service.model("z" * 100_000)
    assert len(str(excinfo.value)) < 200
    with pytest.raises(UserError, match="string"):
        service.model(["kitchenware"])
