"""TeachService: per-session photos, limits, training, classifying through the taught head,
downloads, and cleanup; on a tiny randomly initialised model (fast), and on the kitchenware
weights with a classify running meanwhile (slow)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FakeClock, shared_loaded, store_serving
from demo.services import UserError
from demo.services.teach import FULL, TeachLimits, TeachService
from demo.store import ModelStore
from demo.ui import teach_text
from xception_core.settings import Settings

SIZE = 71


@pytest.fixture(scope="module")
def tiny_model():
    return shared_loaded(SIZE, 3, seed=1)


@pytest.fixture()
def settings(tmp_path):
    (tmp_path / "uploads").mkdir()
    return Settings(upload_dir=tmp_path / "uploads", cache_dir=tmp_path / "cache")


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """One store serving the tiny model for the module (a store translates its model once)."""
    folder = tmp_path_factory.mktemp("teach-store")
    (folder / "uploads").mkdir()
    return store_serving(tiny_model, Settings(upload_dir=folder / "uploads", cache_dir=folder / "cache"))


@pytest.fixture()
def store(served, settings):
    """The module's store, with this test's own folders (the services read them from the store)."""
    served.settings = settings
    return served


def service(store, settings, clock=time.monotonic, **limits) -> TeachService:
    return TeachService(store, settings.upload_dir / "teach", TeachLimits(**limits), clock=clock)


def photos(color, n, seed=0):
    """n photos of one colour with a shape drawn on them at random: same class, different pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = np.empty((60, 80, 3), np.uint8)
        a[:] = color
        y, x = rng.integers(0, 40), rng.integers(0, 60)
        a[y : y + 20, x : x + 20] = 255 - np.array(color)
        out.append(Image.fromarray(np.clip(a + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)))
    return out


def test_add_train_classify_export_end(store, settings):
    teach = service(store, settings)
    steps = []
    report = teach.add_photos("s1", "  red   things ", photos((220, 30, 30), 4), lambda d, t: steps.append((d, t)))
    assert report.added == 4 and report.cached == 0 and not report.refused
    assert steps[-1] == (4, 4) and len(steps) >= 2  # progress while extracting, in batches
    assert teach.add_photos("s1", "blue", photos((30, 30, 220), 4, seed=1)).added == 4
    assert teach.add_photos("s1", "blue", photos((30, 30, 220), 1, seed=2)).added == 1
    assert [(n, len(p)) for n, p in teach.classes("s1")] == [("red things", 4), ("blue", 5)]
    assert teach.classes("s2") == []  # another visitor sees nothing of it

    with pytest.raises(UserError, match="Train first"):
        teach.classify("s1", photos((220, 30, 30), 1, seed=9)[0])
    trained = teach.train("s1")
    assert trained.class_names == ("red things", "blue") and len(trained.photos) == 9
    assert list(trained.blocks) == ["block2", "block4", "block8", "block12", "block13", "block14"]
    best = max(trained.blocks[b].cv.accuracy for b in trained.blocks)
    assert trained.blocks[trained.best_block].cv.accuracy == best  # what the tab shows first
    assert trained.blocks["block14"].dims == 2048 and trained.blocks["block2"].dims == 128
    cv = trained.blocks["block14"].cv
    assert cv.scheme == "leave-one-out" and cv.confusion.sum() == 9
    assert trained.blocks["block2"].map.points.shape == (9, 2)

    result = teach.classify("s1", photos((225, 35, 25), 1, seed=7)[0])
    assert [name for name, _ in result.top] == ["red things", "blue"]
    assert result.top[0][1] > 0.5 and result.cam.size == result.image.size

    head = teach.export_head("s1")
    assert head.is_file() and head.is_relative_to(settings.upload_dir / "teach") and "s1" not in str(head)
    from xception_core.io.heads import load_head

    assert load_head(head).class_names == ("red things", "blue")
    teach.add_photos("s1", "blue", photos((30, 30, 220), 1, seed=3))
    with pytest.raises(UserError, match="Train first"):  # photos changed: the old head is gone
        teach.classify("s1", photos((220, 30, 30), 1)[0])
    teach.end("s1")
    assert not head.exists() and not head.parent.exists()
    assert teach.classes("s1") == [] and teach.sessions() == 0, "reading keeps no session"


def test_a_photo_is_in_a_class_once(store, settings):
    """Same content (the preprocessed pixels' hash) = same photo: added once, whatever file it
    comes in; a copy is reported, not counted, and takes no room in a nearly full class."""
    teach = service(store, settings, max_photos_per_class=4)
    red = photos((220, 30, 30), 3)
    first = teach.add_photos("s", "red", [red[0], red[1], red[0].copy()])  # a copy within one add
    assert (first.added, first.class_size, first.duplicates) == (2, 2, ("photo 3: already in this class",))
    again = teach.add_photos("s", "red", [red[1]])  # re-added later
    assert again.added == 0 and again.duplicates == ("photo 1: already in this class",) and again.class_size == 2
    other = teach.add_photos("s", "blue", [red[0], *photos((30, 30, 220), 2, seed=1)])  # one photo, two labels: no
    assert other.added == 2 and other.duplicates == ("photo 1: already in “red”",)
    assert [(n, len(p)) for n, p in teach.classes("s")] == [("red", 2), ("blue", 2)]
    assert len({p.key for _, ps in teach.classes("s") for p in ps}) == 4
    nearly_full = teach.add_photos("s", "red", [red[0], red[2], *photos((220, 30, 30), 2, seed=8)])
    assert nearly_full.added == 2 and nearly_full.class_size == 4  # the copy took no place of the new ones
    assert len(nearly_full.refused) == 1 and "is full" in nearly_full.refused[0]
    teach.remove_class("s", "blue")
    back = teach.add_photos("s", "blue", photos((30, 30, 220), 2, seed=1))
    assert back.added == 2 and back.cached == 2  # features reused: counted as photos, once each


def test_nothing_acts_on_a_half_built_starter_set(store, settings):
    """Between the starter set's classes the session is half-built: a Train (or any change, or a
    use of an old head) sent then, as a client may send it directly, is refused with a message."""
    teach = service(store, settings)
    teach.add_photos("s", "x", photos((200, 0, 0), 2))
    teach.add_photos("s", "y", photos((0, 0, 200), 2))
    teach.train("s")
    build = teach._add
    refusals = []

    def between_classes(*args, **kwargs):
        report = build(*args, **kwargs)
        assert teach.loading("s")
        for attempt in (lambda: teach.train("s"), lambda: teach.add_photos("s", "z", photos((0, 200, 0), 2)),
                        lambda: teach.remove_class("s", "cup"), lambda: teach.clear("s"),
                        lambda: teach.classify("s", photos((200, 0, 0), 1)[0]), lambda: teach.export_head("s"),
                        lambda: teach.add_starter_set("s")):
            with pytest.raises(UserError, match="still loading") as refused:
                attempt()
            refusals.append(str(refused.value))
        return report

    teach._add = between_classes
    report = teach.add_starter_set("s")
    teach._add = build
    assert report.added == 5 and len(refusals) == 7 * 2  # two classes without the kitchenware cache
    assert not teach.loading("s")
    assert {n: len(p) for n, p in teach.classes("s")} == {"not kitchenware": 4, "cup": 1}
    teach.add_photos("s", "cup", photos((90, 60, 30), 1))  # built: changes are taken again
    assert len(teach.train("s").photos) == 6


def test_limits_and_messages(store, settings):
    teach = service(store, settings, max_classes=2, max_photos_per_class=3)
    report = teach.add_photos("s", "a", photos((200, 0, 0), 5))
    assert report.added == 3 and len(report.refused) == 2 and "full" in report.refused[0]
    teach.add_photos("s", "b", photos((0, 0, 200), 1))
    with pytest.raises(UserError, match="at least 2 photos.*“b”"):
        teach.train("s")
    with pytest.raises(UserError, match="At most 2 classes"):
        teach.add_photos("s", "c", photos((0, 200, 0), 2))
    with pytest.raises(UserError, match="already has 3 photos"):
        teach.add_photos("s", "a", photos((200, 0, 0), 1))
    with pytest.raises(UserError, match="Name the class"):
        teach.add_photos("s", "   ", photos((0, 200, 0), 1))
    with pytest.raises(UserError, match="at most 40 characters"):
        teach.add_photos("s", "x" * 41, photos((0, 200, 0), 1))
    with pytest.raises(UserError, match="No photos"):
        teach.add_photos("s", "b", [])
    with pytest.raises(UserError, match="no session"):
        teach.add_photos("../etc", "b", photos((0, 200, 0), 1))
    teach.remove_class("s", "a")
    with pytest.raises(UserError, match="at least 2 classes"):
        teach.train("s")
    for i in range(4):  # add and remove again and again: the feature cache stays bounded
        teach.add_photos("s", "c", photos((0, 200, 0), 3, seed=10 + i))
        teach.remove_class("s", "c")
    assert len(teach._session("s").features) <= 2 * 3


def test_bad_files_are_refused_and_no_file_is_deleted(store, settings, tmp_path):
    teach = service(store, settings)
    upload = settings.upload_dir / "abc" / "red.png"
    upload.parent.mkdir()
    photos((200, 0, 0), 1)[0].save(upload)
    broken = settings.upload_dir / "abc" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    outside = tmp_path / "secret.png"
    photos((200, 0, 0), 1)[0].save(outside)
    report = teach.add_photos("s", "red", [{"path": str(upload), "orig_name": "red.png"},
                                          {"path": str(broken), "orig_name": "broken.jpg"},
                                          {"path": str(outside)}])
    assert report.added == 1 and len(report.refused) == 2
    assert report.refused[0].startswith("broken.jpg: ") and "not an upload" in report.refused[1]
    # An upload may be another session's too (Gradio names uploads by content): none is deleted.
    assert upload.exists() and broken.exists() and outside.exists()
    assert str(tmp_path) not in " ".join(report.refused)  # no server paths in messages


def _trained(teach: TeachService, sid: str) -> None:
    teach.add_photos(sid, "x", photos((200, 0, 0), 2))
    teach.add_photos(sid, "y", photos((0, 0, 200), 2))
    teach.train(sid)


def test_trained_sessions_are_never_pushed_out_by_newcomers_who_are_refused_in_words(store, settings):
    """Item 8: with every place taken by a trained session a newcomer is refused in one sentence
    and the trained ones keep their classifier and downloads; once one of them is no longer
    trained (its photos changed), it is the one that makes room."""
    teach = service(store, settings, max_sessions=2, idle_s=3600)
    for sid in ("a", "b"):
        _trained(teach, sid)
    head_a = teach.export_head("a")
    for _ in range(3):  # strangers pressing "starter set" or adding photos
        with pytest.raises(UserError) as refused:
            teach.add_photos("c", "x", photos((200, 0, 0), 1))
        assert str(refused.value) == FULL
    assert teach.sessions() == 2 and head_a.exists() and teach.trained("a") and teach.trained("b")
    teach.add_photos("b", "x", photos((210, 0, 0), 1, seed=4))  # b untrained now
    teach.classes("a")
    assert teach.add_photos("c", "x", photos((200, 0, 0), 1)).added == 1
    assert teach.sessions() == 2 and teach.trained("a") and head_a.exists()
    assert teach.classes("b") == [], "the untrained session made room"


def test_sessions_are_bounded_by_memory(store, settings):
    """A new session is admitted while the sessions' memory and one full session fit `max_bytes`:
    with room for one, a second visitor pushes out the first only while it is not trained."""
    probe = service(store, settings)
    teach = service(store, settings, max_bytes=probe.full_session_bytes() + 1)
    teach.add_photos("first", "x", photos((200, 0, 0), 2))
    assert teach.memory() > 0
    teach.add_photos("second", "x", photos((200, 0, 0), 2))
    assert teach.classes("first") == [] and teach.sessions() == 1
    teach.add_photos("second", "y", photos((0, 0, 200), 2))
    teach.train("second")
    with pytest.raises(UserError, match="Teach is full"):
        teach.add_photos("third", "x", photos((200, 0, 0), 1))
    assert teach.trained("second")


def test_sessions_expire(store, settings):
    clock = FakeClock()
    short = service(store, settings, clock, idle_s=60)
    _trained(short, "old")
    head = short.export_head("old")
    clock.now += 60
    short.classes("new")  # "old" idle for exactly idle_s: kept
    assert short.sessions() == 1 and head.exists()
    clock.now += 30
    short.classes("new")  # "old" idle for longer: dropped with its download folder
    assert short.sessions() == 0 and not head.exists() and not head.parent.exists()
    assert short.classes("old") == []


def test_starter_set_without_the_kitchenware_cache(store, settings):
    teach = service(store, settings)
    report = teach.add_starter_set("s")
    names = dict((n, len(p)) for n, p in teach.classes("s"))
    assert names == {"not kitchenware": 4, "cup": 1} and report.added == 5
    assert "only the examples" in report.refused[0]


@pytest.mark.slow
def test_starter_set_trains_and_a_concurrent_classify_still_answers(settings):
    """Kitchenware weights: the starter set's labelled photos (cross-validated), and a Classify
    request answered while a visitor's photos are being extracted."""
    from demo.services.classify import ClassifyService
    from xception_core.io.assets import example_images

    real = Settings.from_env()
    settings = Settings(upload_dir=settings.upload_dir, cache_dir=real.cache_dir, keras_home=real.keras_home)
    store = ModelStore(settings, ["kitchenware"]).start()
    store.get(timeout=600)
    teach = service(store, settings)
    report = teach.add_starter_set("s")
    assert report.added == 14 and not report.refused
    trained = teach.train("s")
    assert set(trained.class_names) == {"cup", "plate", "cutlery", "not kitchenware"}
    # With the weights' own preprocessing (nearest, issue 25) the final block's features sit at chance
    # on these 14 photos (leave-one-out 5/14); the block the service picks beats it.
    assert trained.blocks[trained.best_block].cv.accuracy > trained.chance

    classify = ClassifyService(store)
    coffee = next(e.path for e in example_images() if e.path.name == "coffee.jpg")
    alone = classify.classify(Image.open(coffee)).top_labels[0]
    many = [img.rotate(angle, expand=True) for img in photos((90, 140, 60), 10, seed=4) for angle in (0, 90, 180)]
    started, finished = threading.Event(), threading.Event()
    progress = lambda done, total: started.set() if 0 < done < total else None  # noqa: E731
    worker = threading.Thread(target=lambda: (teach.add_photos("t", "green", many[:30], progress), finished.set()))
    worker.start()
    assert started.wait(60)  # the first batch is extracted, 7 more to go
    answered = classify.classify(Image.open(coffee)).top_labels[0]
    during = not finished.is_set()
    worker.join(120)
    assert answered == alone
    assert during, "the classify waited for the whole extraction"


def test_prepare_works_again_after_the_janitor_trimmed_the_files_and_removed_the_folders(store, settings):
    """The file budget trims old downloads and the janitor removes the emptied folders, the teach
    root included: Prepare makes what it needs again, and a trimmed download says to prepare it."""
    import shutil

    from demo.limits import EmptyFolders
    from demo.services.teach import DOWNLOAD_GONE

    teach = service(store, settings)
    teach.add_photos("s1", "red", photos((220, 30, 30), 3))
    teach.add_photos("s1", "blue", photos((30, 30, 220), 3, seed=1))
    teach.train("s1")
    with pytest.raises(UserError, match="Prepare downloads"):  # never prepared
        teach.check_download("s1", "head")
    head = teach.export_head("s1")
    teach.check_download("s1", "head")  # there: no complaint
    head.unlink()  # what FileBudget does to an old file; then the janitor's sweep of empty folders
    EmptyFolders(head.parent.parent, min_age_s=0).remove({head.parent})
    assert not head.parent.exists()
    with pytest.raises(UserError) as gone:
        teach.check_download("s1", "head")
    assert str(gone.value) == DOWNLOAD_GONE
    with pytest.raises(UserError, match="no such download"):
        teach.check_download("s1", "x" * 10_000)
    shutil.rmtree(settings.upload_dir / "teach")  # the teach root too
    again = teach.export_head("s1")
    assert again == head and again.is_file()
    teach.check_download("s1", "head")


@pytest.mark.slow  # writes and reads back a whole Xception (~90 MB)
def test_the_downloaded_model_answers_as_the_classifier_tried_in_the_tab(store, settings):
    """On a photo it was not trained on, the `.keras` a visitor downloads (loaded back as the README
    says) gives the classifier tried in the tab's probabilities: the same block's head (block 14's,
    which the try box names), on the same features."""
    from xception_core import build_xception
    from xception_core.io.heads import taught_labels
    from xception_core.inputs.preprocessing import preprocess
    from xception_core.runtime.extractor import FINAL_BLOCK

    teach = service(store, settings)
    teach.add_photos("s1", "red", photos((220, 30, 30), 4))
    teach.add_photos("s1", "blue", photos((30, 30, 220), 4, seed=1))
    teach.add_photos("s1", "green", photos((30, 200, 30), 4, seed=2))
    teach.train("s1")
    held_out = photos((200, 60, 40), 1, seed=11)[0]
    tried = dict(teach.classify("s1", held_out).top)
    path = teach.export_model("s1")
    model = build_xception(weights=str(path))
    names = taught_labels(path, 3)
    assert names == ("red", "blue", "green")
    downloaded = model.predict(preprocess(held_out, SIZE)[None], verbose=0)[0]
    assert set(tried) == set(names)
    np.testing.assert_allclose([tried[n] for n in names], downloaded, atol=2e-4)
    assert max(tried, key=tried.get) == names[int(np.argmax(downloaded))]
    assert "block 14's" in teach_text.try_note(teach.trained("s1")) and FINAL_BLOCK == "block14"


def test_the_labelled_uploads_are_the_session_files_with_their_class(store, settings):
    """What Explore's lesion study reads: each upload still on disk with the visitor's class; a
    photo sent as data (no file) and another session's photos are not among them."""
    teach = service(store, settings)
    files = []
    for i, image in enumerate(photos((220, 30, 30), 2)):
        image.save(settings.upload_dir / f"red{i}.png")
        files.append(settings.upload_dir / f"red{i}.png")
    teach.add_photos("s1", "red", [{"path": str(f)} for f in files] + photos((220, 30, 30), 1, seed=4))
    teach.add_photos("s2", "blue", photos((30, 30, 220), 2, seed=1))
    assert [n for n, p in teach.classes("s1")] == ["red"] and len(teach.classes("s1")[0][1]) == 3
    assert teach.labelled_uploads("s1") == [(f.resolve(), "red") for f in files]
    assert teach.labelled_uploads("s2") == [] and teach.labelled_uploads("nobody") == []
    files[0].unlink()  # the upload folder's age limit took it
    assert teach.labelled_uploads("s1") == [(files[1].resolve(), "red")]
