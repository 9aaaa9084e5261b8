"""`RemoteModelStore` without a cluster: a fake handle whose replicas die or raise, to check what
the app sees (retries on lost replicas only, the replica's own error without its traceback, a
clear error when no replica is left, a status line while replicas start), and that the remote
store, served model and activation cache have everything the `demo.store` protocols declare."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("ray", reason="needs requirements-scale.txt")

from ray.exceptions import ActorDiedError, RayTaskError  # noqa: E402

from demo.store import ActivationSource, ServedModel, SlotStatus, Store  # noqa: E402
from demo.store_remote import (  # noqa: E402
    STATUS_TTL_S,
    RemoteExplorer,
    RemoteModelStore,
    RemoteServedModel,
    RemoteStatus,
    ReplicasUnavailableError,
)
from tests.conftest import FakeClock  # noqa: E402
from tests.demo.test_store import protocol_members  # noqa: E402
from xception_core.settings import Settings  # noqa: E402

pytestmark = pytest.mark.scale


class _Response:
    def __init__(self, outcome):
        self.outcome = outcome

    def result(self, timeout_s=None):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class _Method:
    def __init__(self, outcomes: list):
        self.outcomes, self.calls = outcomes, []

    def remote(self, *args):
        self.calls.append(args)
        return _Response(self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0])


class FakeHandle:
    """Each method answers its outcomes in turn (the last one for ever after)."""

    def __init__(self, **methods: list):
        for name, outcomes in methods.items():
            setattr(self, name, _Method(list(outcomes)))


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr("demo.store_remote.RETRY_PAUSE_S", 0.0)


def test_a_lost_replica_is_retried_and_the_answer_comes_back():
    answer = (np.zeros((5, 5, 2048), np.float32), np.array([0.9, 0.1], np.float32))
    handle = FakeHandle(predict=[ActorDiedError(), ActorDiedError(), answer])
    store = RemoteModelStore(handle, Settings(weights="kitchenware"))
    assert store.call("predict", "kitchenware", np.zeros((3,))) is answer
    assert store.retries == 2 and len(handle.predict.calls) == 3


def test_the_replicas_own_error_is_not_retried_and_has_no_traceback():
    cause = ValueError("expected one (150, 150, 3) image, got (2, 2)")
    wrapped = RayTaskError("predict", 'Traceback (most recent call last):\n  File "/srv/x.py"', cause)
    handle = FakeHandle(predict=[wrapped])
    store = RemoteModelStore(handle, Settings())
    with pytest.raises(ValueError) as excinfo:
        store.call("predict", "kitchenware", np.zeros((2, 2)))
    assert str(excinfo.value) == str(cause) and "Traceback" not in str(excinfo.value)
    assert store.retries == 0 and len(handle.predict.calls) == 1


def test_no_replica_left_is_a_clear_error():
    handle = FakeHandle(gradcam=[ActorDiedError()])
    store = RemoteModelStore(handle, Settings())
    with pytest.raises(ReplicasUnavailableError, match="no model replica answered 'gradcam'"):
        store.call("gradcam", "kitchenware", np.zeros((5, 5, 2048)), 1)
    assert len(handle.gradcam.calls) == 5


def test_a_timeout_is_not_retried_and_says_so():
    from ray.exceptions import GetTimeoutError

    handle = FakeHandle(predict=[GetTimeoutError("timed out")])
    store = RemoteModelStore(handle, Settings())
    with pytest.raises(TimeoutError, match="did not answer within 120 s"):
        store.call("predict", "kitchenware", np.zeros((3,)))
    assert len(handle.predict.calls) == 1 and store.retries == 0


def test_status_while_replicas_start_then_ready():
    ready = RemoteStatus("kitchenware", ["kitchenware"], [SlotStatus("kitchenware", "Kitchenware", "ready", 3.0)],
                         {"kitchenware": "Kitchenware"})
    handle = FakeHandle(status=[ActorDiedError(), ready])
    clock = FakeClock()
    store = RemoteModelStore(handle, Settings(weights="kitchenware"), clock=clock)
    assert not store.is_ready() and [s.state for s in store.statuses()] == ["loading"]
    assert len(handle.status.calls) == 1  # a status question is never retried: /healthz stays quick
    clock.now += STATUS_TTL_S / 2
    assert not store.is_ready() and len(handle.status.calls) == 1  # one answer serves every poll meanwhile
    clock.now += STATUS_TTL_S  # the next question goes to the replicas again
    assert store.is_ready() and store.available() == ["kitchenware"] and store.title("kitchenware") == "Kitchenware"
    assert store.settled() and len(handle.status.calls) == 2


def test_a_weights_file_is_named_without_its_folder_while_replicas_start():
    store = RemoteModelStore(FakeHandle(status=[ActorDiedError()]), Settings(weights="/srv/secret/mine.keras"))
    assert [s.title for s in store.statuses()] == ["mine.keras"]


INFO = SimpleNamespace(title="Kitchenware", variant="paper")  # what the replicas' ModelInfo is read for here


def test_the_remote_implementations_have_everything_the_protocols_declare():
    labels = tuple(f"class {i}" for i in range(6))
    handle = FakeHandle(status=[RemoteStatus("kitchenware", ["kitchenware"], [], {})], served=[(labels, INFO, 150)])
    store = RemoteModelStore(handle, Settings(weights="kitchenware"))
    served = store.get("kitchenware")
    assert isinstance(served, RemoteServedModel) and served.backend is None and served.precision is None
    assert served.title == "Kitchenware" and served.input_size == 150 and store.get("kitchenware") is served
    for protocol, implementation in ((Store, store), (ServedModel, served),
                                     (ActivationSource, store.activation_explorer())):
        for name in protocol_members(protocol):
            assert hasattr(implementation, name), f"{type(implementation).__name__} lacks {protocol.__name__}.{name}"


def test_the_activation_cache_computes_each_record_once_in_a_replica():
    from xception_core.runtime.activations import ActivationExplorer

    x = np.zeros((150, 150, 3), np.float32)
    key = ActivationExplorer.key_for(x, "kitchenware", "paper")
    record = SimpleNamespace(key=key, nbytes=10)
    handle = FakeHandle(activations=[record])
    explorer = RemoteExplorer(RemoteModelStore(handle, Settings(weights="kitchenware")))
    loaded = SimpleNamespace(info=INFO)  # only its wiring is read: the replica has the weights
    assert explorer.compute(loaded, x, weights_key="kitchenware") == (record, False)
    assert explorer.compute(loaded, x, weights_key="kitchenware") == (record, True)
    assert handle.activations.calls[0][:2] == ("kitchenware", "paper")
    assert len(handle.activations.calls) == 1 and explorer.forward_calls == 1 and len(explorer) == 1
    assert explorer.lookup(key) is record and explorer.nbytes == 10
