"""What services keep per session or per result: one registry, bounded in number and idle time on
a fake clock; the one way every service gets its model; and the presets' declared photo uses."""

from __future__ import annotations

import threading

import pytest

from demo.services import UserError
from demo.services.sessions import SessionRegistry
from demo.store import ModelStore
from tests.conftest import FakeClock
from xception_core.model import WeightsUnavailableError
from xception_core.settings import Settings


def test_the_least_recently_used_entry_goes_beyond_the_bound():
    dropped: list[str] = []
    registry: SessionRegistry[str] = SessionRegistry(2, 60, on_drop=dropped.append, clock=FakeClock())
    assert registry.get_or_create("a", lambda: "A") == "A"
    registry.put("b", "B")
    assert registry.find("a") == "A"  # a is now the most recently used
    assert registry.get_or_create("c", lambda: "C") == "C"
    assert dropped == ["B"] and len(registry) == 2
    assert registry.find("b") is None and registry.get_or_create("a", lambda: "new A") == "A"


def test_entries_idle_longer_than_the_ttl_are_dropped_on_the_next_access():
    clock, dropped = FakeClock(), []
    registry: SessionRegistry[str] = SessionRegistry(10, 30, on_drop=dropped.append, clock=clock)
    registry.put("old", "OLD")
    clock.now += 20
    registry.put("young", "YOUNG")
    clock.now += 10  # old idle for exactly the TTL: kept
    assert registry.find("old") == "OLD" and dropped == []
    clock.now += 30.5  # both idle past the TTL; find marks nothing it does not return
    assert registry.find("young") is None and registry.find("old") is None
    assert sorted(dropped) == ["OLD", "YOUNG"] and len(registry) == 0


def test_pop_hands_the_value_back_without_dropping_it():
    dropped: list[str] = []
    registry: SessionRegistry[str] = SessionRegistry(4, 30, on_drop=dropped.append, clock=FakeClock())
    registry.put("a", "A")
    assert registry.pop("a") == "A" and registry.pop("a") is None and dropped == []


def test_on_drop_runs_outside_the_registrys_lock():
    """A drop may take seconds (a session's lock, files to delete): other threads keep using the
    registry meanwhile."""
    clock = FakeClock()
    in_drop, finish = threading.Event(), threading.Event()

    def slow_drop(value: str) -> None:
        in_drop.set()
        finish.wait(10)

    registry: SessionRegistry[str] = SessionRegistry(1, 60, on_drop=slow_drop, clock=clock)
    registry.put("a", "A")
    worker = threading.Thread(target=registry.put, args=("b", "B"))  # drops A
    worker.start()
    assert in_drop.wait(10)
    answered = threading.Event()
    reader = threading.Thread(target=lambda: (registry.find("b"), answered.set()))
    reader.start()
    assert answered.wait(10), "the registry was locked while a value was being dropped"
    finish.set()
    worker.join(10)
    reader.join(10)


def test_a_kept_classification_expires_after_the_result_ttl(monkeypatch):
    from demo.services.classify import RESULT_TTL_S, ClassifyService

    clock = FakeClock()
    service = ClassifyService(ModelStore(Settings(), ["a"]), clock=clock)
    kept = object()
    key = service.remember(kept)  # type: ignore[arg-type] - any value: recall hands it back
    clock.now += RESULT_TTL_S - 1
    assert service.recall(key) is kept
    clock.now += RESULT_TTL_S + 1
    with pytest.raises(UserError, match="expired"):
        service.recall(key)
    with pytest.raises(UserError, match="expired"):
        service.recall(["not", "a", "key"])


@pytest.fixture
def failing_store(monkeypatch):
    def fail(key, settings):
        raise WeightsUnavailableError(f"{key} is offline: /srv/secret-home/.cache/{key}.keras is missing")

    monkeypatch.setattr("demo.store.cache.load_model", fail)
    return ModelStore(Settings(), ["a"]).start()


def test_every_service_gets_its_model_one_way_with_the_same_checks(failing_store, tmp_path):
    """Teach once had its own copy of Classify's model getter, without its message scrubbing."""
    from demo.services.classify import ClassifyService
    from demo.services.explore import ExploreService
    from demo.services.teach import TeachService

    messages = set()
    for get in (ClassifyService(failing_store, wait_s=30).model, ExploreService(failing_store, explorer=object()).model,
                TeachService(failing_store, tmp_path / "teach", wait_s=30).model):
        with pytest.raises(UserError) as excinfo:
            get()
        messages.add(str(excinfo.value))
    (message,) = messages
    # In the words of the recorded cause (the error's own text is for the log), as the REST API says it.
    assert message.startswith("No weights could be loaded on this server (a: failed to load (the server log says why))")
    assert "/srv" not in message and "secret-home" not in message


def test_an_unknown_key_and_a_key_of_the_wrong_type_are_refused_before_waiting(failing_store):
    from demo.services.models import served_model

    with pytest.raises(UserError, match="unknown weights 'b'"):
        served_model(failing_store, "b", wait_s=0)
    with pytest.raises(UserError, match="named by a string"):
        served_model(failing_store, 3, wait_s=0)


def test_the_presets_declare_what_their_photos_are_for(tmp_path, monkeypatch):
    """Calibration, the starter set and the held-out photos come from the preset's declaration."""
    from PIL import Image

    from demo.store import cache as store_module
    from demo.services.teach import starter
    from xception_core.io.assets import example_images
    from xception_core.weights.fetch import Sample
    from xception_core.weights.presets import KITCHENWARE, STARTER_PRESET

    uses = KITCHENWARE.samples
    assert STARTER_PRESET == "kitchenware" and uses is not None
    shots = []
    for i, label in enumerate(["cup", None, "fork", "knife", None]):
        path = tmp_path / f"{i:04d}.jpg"
        Image.new("RGB", (20, 20)).save(path)
        shots.append(Sample(path, label))
    monkeypatch.setattr(store_module, "preset_samples", lambda name, cache_dir: shots)
    monkeypatch.setattr(starter, "cached_samples", lambda name, cache_dir: shots)
    unlabelled = [shots[1].path, shots[4].path]
    assert store_module.calibration_paths("kitchenware", Settings()) == unlabelled
    assert starter.held_out_photos(Settings()) == unlabelled
    chosen = starter.starter_set(Settings())
    assert {c: [name for name, _ in photos] for c, photos in chosen.classes.items()} == {
        "cup": ["cup 0000", "Espresso cup"],  # the bundled espresso joins the package's cups
        "cutlery": ["fork 0002", "knife 0003"],  # folded: one photo each
        "not kitchenware": [e.title for e in example_images() if e.path.name != "coffee.jpg"],
    }
    assert chosen.missing == () and chosen.size == 3 + 5
    # Weights whose preset ships no photos calibrate on the bundled examples.
    assert store_module.calibration_paths("imagenet", Settings()) == [e.path for e in example_images()]
