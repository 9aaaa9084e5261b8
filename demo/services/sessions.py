"""One registry for whatever a service keeps per visitor session: bounded in number (the least
recently used goes first) and in idle time, on a clock that tests can replace."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SessionRegistry(Generic[T]):
    """Values by key (a session id, a result key), least recently used first.

    Every access first drops the entries idle for longer than `idle_s`, and an insertion beyond
    `max_entries` drops the least recently used ones; `on_drop` is then called with each dropped
    value, outside the registry's lock (it may take the value's own lock or delete files).

    Args:
        max_entries: Most entries held at once.
        idle_s: An entry not used for this long is dropped.
        on_drop: Called with every value the registry drops (not with those `pop` hands back).
        clock: Seconds, monotonic (`time.monotonic`; a fake one in tests).
    """

    def __init__(self, max_entries: int, idle_s: float, *, on_drop: Callable[[T], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if max_entries < 1:
            raise ValueError(f"max_entries must be ≥ 1, got {max_entries}")
        self.max_entries, self.idle_s = max_entries, idle_s
        self._on_drop = on_drop
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()  # key → (last used, value)
        self._lock = threading.Lock()

    def get_or_create(self, key: str, create: Callable[[], T]) -> T:
        """The value under `key` (marked used), or `create()`'s, kept under it."""
        with self._lock:
            dropped = self._expire()
            entry = self._entries.get(key)
            value = entry[1] if entry is not None else create()
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            dropped += self._trim()
        self._drop(dropped)
        return value

    def put(self, key: str, value: T) -> None:
        """Keeps `value` under `key` (replacing any value there, which is not dropped)."""
        with self._lock:
            dropped = self._expire()
            self._entries[key] = (self._clock(), value)
            self._entries.move_to_end(key)
            dropped += self._trim()
        self._drop(dropped)

    def find(self, key: str) -> T | None:
        """The value under `key` (marked used), or None: never kept, dropped, or idle too long."""
        with self._lock:
            dropped = self._expire()
            entry = self._entries.get(key)
            if entry is not None:
                self._entries[key] = (self._clock(), entry[1])
                self._entries.move_to_end(key)
        self._drop(dropped)
        return entry[1] if entry is not None else None

    def pop(self, key: str) -> T | None:
        """Forgets `key`; its value (None if there was none) is the caller's to clean up."""
        with self._lock:
            entry = self._entries.pop(key, None)
        return entry[1] if entry is not None else None

    def values(self) -> list[tuple[str, T]]:
        """(key, value) of every entry, least recently used first (none marked used)."""
        with self._lock:
            return [(key, value) for key, (_, value) in self._entries.items()]

    def __len__(self) -> int:
        """Entries held, those idle too long included until the next access drops them."""
        with self._lock:
            return len(self._entries)

    def _expire(self) -> list[T]:
        """Drops the entries idle too long; they are the oldest, at the front."""
        now = self._clock()
        dropped = []
        while self._entries:
            key, (used, value) = next(iter(self._entries.items()))
            if now - used <= self.idle_s:
                break
            del self._entries[key]
            dropped.append(value)
        return dropped

    def _trim(self) -> list[T]:
        dropped = []
        while len(self._entries) > self.max_entries:
            dropped.append(self._entries.popitem(last=False)[1][1])
        return dropped

    def _drop(self, values: list[T]) -> None:
        if self._on_drop is not None:
            for value in values:
                self._on_drop(value)
