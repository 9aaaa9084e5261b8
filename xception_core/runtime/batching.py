"""Micro-batching: concurrent single-image forwards grouped into one batched call."""

from __future__ import annotations

import queue
import threading
import time
import weakref

import numpy as np

from xception_core.settings import DEFAULT_BATCH_WAIT_S, DEFAULT_MAX_BATCH

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Groups concurrent single-image forwards into one batched call.

    Each request thread calls `run(x)` and blocks; a worker thread takes the first waiting input,
    collects any others that arrive within `max_wait_s` (up to `max_batch`), runs `fn` once on
    the stack and hands each caller its row. Inputs are validated by the callers, so one bad
    image never fails its neighbours.
    """

    def __init__(self, fn, *, max_batch: int = DEFAULT_MAX_BATCH, max_wait_s: float = DEFAULT_BATCH_WAIT_S):
        if max_batch < 1:
            raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self._queue: "queue.Queue[tuple]" = queue.Queue()
        # The worker holds the batcher only weakly, between batches: a batcher nobody holds any
        # more (a store that is gone) is collected, with `fn` and the model behind it, and its
        # finalizer wakes the worker to end.
        worker = threading.Thread(target=_work, args=(weakref.ref(self), self._queue), name="micro-batcher",
                                  daemon=True)
        weakref.finalize(self, self._queue.put, _STOP)
        worker.start()

    def run(self, x):
        """Runs `fn` on `x[None]` as part of a batch; returns that row of each of `fn`'s outputs."""
        done = threading.Event()
        box: dict = {}
        self._queue.put((x, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _batch(self, first: tuple) -> None:
        """Collects what arrives within `max_wait_s` after `first` (up to `max_batch`) and runs it."""
        items = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(items) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                items.append(self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        try:
            outputs = self.fn(np.stack([x for x, _, _ in items]))
            for i, (_, box, _) in enumerate(items):
                box["result"] = tuple(o[i] for o in outputs)
        except Exception as exc:  # handed to every caller of this batch; the worker lives on
            for _, box, _ in items:
                box["error"] = exc
        for _, _, done in items:
            done.set()


_STOP = object()  # put in a batcher's queue when the batcher is collected: its worker ends


def _work(batcher: "weakref.ref[MicroBatcher]", inputs: "queue.Queue") -> None:
    """A batcher's worker: waits for a first input, then runs a batch through the batcher if it
    still exists."""
    while (first := inputs.get()) is not _STOP:
        if (alive := batcher()) is None:
            return
        alive._batch(first)
        del alive  # hold the batcher only while it runs a batch
