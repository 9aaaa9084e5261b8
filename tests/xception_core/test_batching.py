"""MicroBatcher: batching without mixing rows, and errors that reach their callers."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

from xception_core.runtime.batching import MicroBatcher


def test_batcher_groups_concurrent_calls_and_keeps_rows_apart():
    """16 callers at once, batches of at most 8: the worker fills a batch before its wait is up (a
    minute, never reached), so the batches are 8 and 8 however the threads are scheduled."""
    calls = []

    def fn(batch):
        calls.append(len(batch))
        return batch * 2, batch.sum(axis=(1, 2))

    batcher = MicroBatcher(fn, max_batch=8, max_wait_s=60)
    inputs = [np.full((3, 3), i, np.float32) for i in range(16)]
    results: dict[int, tuple] = {}

    def call(i):
        results[i] = batcher.run(inputs[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a full batch waited for the deadline"
    assert calls == [8, 8]
    for i in range(16):
        doubled, total = results[i]
        np.testing.assert_array_equal(doubled, inputs[i] * 2)
        assert total == 9 * i


def test_a_lone_call_runs_alone_once_the_wait_is_up():
    calls = []

    def fn(batch):
        calls.append(len(batch))
        return (batch + 1,)

    batcher = MicroBatcher(fn, max_batch=8, max_wait_s=0.01)
    assert batcher.run(np.array([1.0]))[0] == 2.0
    assert calls == [1]


def test_batcher_errors_reach_the_callers_and_the_worker_survives():
    def fn(batch):
        if (batch < 0).any():
            raise RuntimeError("negative input")
        return (batch,)

    batcher = MicroBatcher(fn, max_batch=1)
    with pytest.raises(RuntimeError, match="negative input"):
        batcher.run(np.array([-1.0]))
    assert batcher.run(np.array([2.0]))[0] == 2.0


def test_a_batcher_nobody_holds_goes_with_its_worker_and_its_function():
    """A store that is gone takes its model with it: the worker thread holds the batcher only
    while it runs a batch, and ends once the batcher is collected."""

    class Model:
        def forward(self, batch):
            return (batch + 1,)

    model = Model()
    before = set(threading.enumerate())
    batcher = MicroBatcher(model.forward, max_batch=2, max_wait_s=0.001)
    (worker,) = {t for t in threading.enumerate() if t.name == "micro-batcher"} - before
    assert batcher.run(np.zeros(2, np.float32))[0].tolist() == [1.0, 1.0]
    gone = weakref.ref(model)
    del model, batcher
    gc.collect()
    assert gone() is None, "the batcher's worker still holds the model"
    worker.join(30)
    assert not worker.is_alive(), "the worker of a collected batcher lives on"
